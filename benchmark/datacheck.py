"""`genshift data check`: is a dataset fit for the benchmark? (DESIGN §3)

Checks schema and records (via the source scan: bad labels, undated generators, missing files, files outside
the dataset root), counts per split and generator, reals vs fakes balance, every image (decodable, not
truncated, not below the minimum side, bytes unchanged since the manifest was built, EXIF orientation), exact
duplicates across splits (train or val against eval: errors; val against train: a warning) and the same bytes
labelled both real and fake (sha256). Errors make a run refuse the
dataset unless the bad images are skipped (`apply_skips`); warnings are reported only.

The result is cached per manifest checksum (itself a digest of every image's sha256) and records
`content_sha256`, the digest of the bytes the check actually read; `fresh=True` (`genshift data check
--recheck`) ignores both the cached scan and the cached check, hashes every file again and replaces them.
Messages never quote a file's bytes.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from benchmark.imagestore import describe, read_checked
from benchmark.manifest import Manifest
from benchmark.source_records import Problem, restrict_timeline
from common.atomic import atomic_write_text

CHECK_VERSION = 3  # 2: label_conflict, content_sha256; 3: val split duplicates against eval and train
DEFAULT_MIN_SIDE = 64
EXIF_ORIENTATION = 0x0112
# Image-level error kinds: fixed by dropping the image (`apply_skips`). Others need the data fixed.
# The video track adds its sequence problems (empty, ragged, wrong width, NaN/inf, too short, no segment).
SKIPPABLE = ("unreadable", "truncated", "too_small", "changed", "duplicate", "label_conflict", "empty", "ragged",
             "bad_width", "non_finite", "too_short", "no_segment")


@dataclass
class CheckReport:
    """Result of a dataset check; `ok` is False when any error was found."""

    source: str
    manifest_checksum: str
    counts: dict  # split -> generator ('' = real) -> n
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    min_side: int = DEFAULT_MIN_SIDE
    content_sha256: str = ""  # digest of (split, id, sha256 of the bytes read) over every checked image

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def skippable(self) -> list[tuple[str, int]]:
        """(split, id) of the images whose errors `apply_skips` can remove, sorted."""
        return sorted({(p.split, p.id) for p in self.errors if p.kind in SKIPPABLE and p.id is not None})

    def to_dict(self) -> dict:
        return {
            "check_version": CHECK_VERSION,
            "source": self.source,
            "manifest_checksum": self.manifest_checksum,
            "ok": self.ok,
            "min_side": self.min_side,
            "counts": self.counts,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "problems": [asdict(p) for p in self.problems],
            "notes": self.notes,
            "skippable": [list(x) for x in self.skippable()],
            "content_sha256": self.content_sha256,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> CheckReport:
        return cls(doc["source"], doc["manifest_checksum"], doc["counts"],
                   [Problem(**p) for p in doc["problems"]], list(doc["notes"]), int(doc["min_side"]),
                   str(doc["content_sha256"]))


def _counts(manifest: Manifest) -> dict:
    out: dict = {}
    for split in ("train", "eval") + (("val",) if any(s.split == "val" for s in manifest.samples) else ()):
        c = Counter(s.generator for s in manifest.split(split))
        out[split] = {g: c[g] for g in sorted(c)}
    return out


def _check_image(job: tuple[str, str, str, int]) -> tuple[str, list[tuple[str, str, str]]]:
    """Read and decode one image: (sha256 of its bytes, [(kind, severity, message), ...])."""
    root, path, expected_sha, min_side = job
    where = describe(root, path)
    data, sha, found = read_checked(root, path, expected_sha)
    if data is None:
        return sha, found
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # decodes everything: a truncated file fails here
                orientation = im.getexif().get(EXIF_ORIENTATION)  # after load: PNG eXIf may follow IDAT
                width, height = ImageOps.exif_transpose(im).size
    except UnidentifiedImageError:  # its bytes are never quoted: the file may not be an image at all
        return sha, found + [("unreadable", "error", f"{where}: not an image in a format Pillow can decode "
                                                     f"({len(data)} bytes)")]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        kind = "truncated" if "image file is truncated" in str(e) else "unreadable"
        return sha, found + [(kind, "error", f"{where}: decoding failed: {e}")]
    if min(width, height) < min_side:
        found.append(("too_small", "error", f"{where}: {width}x{height}, shorter side below {min_side}"))
    if orientation not in (None, 1):
        found.append(("exif_rotated", "warning", f"{where}: EXIF orientation {orientation}; it is rotated on "
                                                 "decoding (as the reference does)"))
    return sha, found


def _check_sequence(job: tuple) -> tuple[str, list[tuple[str, str, str]]]:
    """Read one landmark file or video (benchmark.sequence_checks): (sha256, [(kind, severity, message), ...])."""
    from benchmark.sequence_checks import check_sequence_file

    return check_sequence_file(*job)


def _check_job(job: tuple) -> tuple[str, list[tuple[str, str, str]]]:
    return _check_sequence(job[1:]) if job[0] == "sequence" else _check_image(job[1:])


def _run(jobs: list, workers: int, progress: bool) -> list:
    from benchmark.progress import counted_progress

    workers = max(1, min(workers, os.cpu_count() or 1))
    out = []
    with counted_progress(progress) as bar:
        task = bar.add_task("checking images", total=len(jobs))
        if workers == 1 or len(jobs) < 64:
            for job in jobs:
                out.append(_check_job(job))
                bar.advance(task)
            return out
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_check_job, jobs, chunksize=32):
                out.append(res)
                bar.advance(task)
    return out


def _balance_problems(counts: dict, reals_reused: bool = False) -> list[Problem]:
    out = []
    for split in ("train", "eval"):
        reals = counts[split].get("", 0)
        fakes = sum(n for g, n in counts[split].items() if g)
        if not reals or not fakes:
            out.append(Problem("balance", "error", f"{split} split has {reals} reals and {fakes} fakes; "
                                                   "the benchmark needs both", split))
    train_reals = counts["train"].get("", 0)
    train_fakes = sum(n for g, n in counts["train"].items() if g)
    if train_reals and train_reals < train_fakes and not reals_reused:
        out.append(Problem("balance", "error", f"train split has {train_reals} reals for {train_fakes} fakes; "
                           "every window draws as many unused reals as it has fakes", "train"))
    ev_reals = counts["eval"].get("", 0)
    ev_fakes = sum(n for g, n in counts["eval"].items() if g)
    if ev_reals and ev_fakes and ev_reals != ev_fakes:
        fewer = "fakes (stratified by generator)" if ev_fakes > ev_reals else "reals"
        out.append(Problem("balance", "warning", f"eval split has {ev_reals} reals and {ev_fakes} fakes; "
                           f"{fewer} are subsampled to {min(ev_reals, ev_fakes)} as the reference does", "eval"))
    only = {s: sorted({g for g in counts[s] if g} - {g for g in counts[o] if g})
            for s, o in (("train", "eval"), ("eval", "train"))}
    for split, gens in only.items():
        if gens:
            out.append(Problem("generator_split", "warning",
                               f"generator(s) with images only in the {split} split: {gens}", split))
    return out


def check_source(
    manifest: Manifest,
    cache_dir: Path | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
    workers: int = 2,
    progress: bool = True,
    fresh: bool = False,
    segment_length: int = 30,
    profile: str = "fixed",
    reals_reused: bool = False,
) -> CheckReport:
    """Check every image of a (loaded) manifest; cached per (manifest checksum, min_side) under cache_dir
    (`fresh`: check again and replace the cached result).

    Sequence samples (the video track) are parsed instead; ``segment_length`` and ``profile`` (a
    benchmark.sequences profile) say when a video is too short or yields no segment. ``reals_reused``
    (benchmark.real_sampling repeat/weighted): fewer train reals than fakes is then no error.

    Engine hook: refuse the run when `not report.ok`, unless told to skip bad images, then use
    `apply_skips(manifest, report)` and record `report.skippable()` in run.json.
    """
    target = None
    if cache_dir is not None:
        seq = f"-seg{segment_length}-{profile}" if any(s.kind != "image" for s in manifest.samples) else ""
        seq += "-realsreused" if reals_reused else ""
        target = Path(cache_dir) / "checks" / f"{manifest.checksum[:24]}-v{CHECK_VERSION}-min{min_side}{seq}.json"
        if target.is_file() and not fresh:
            try:
                report = CheckReport.from_dict(json.loads(target.read_text()))
                if report.manifest_checksum == manifest.checksum:
                    return report
            except (OSError, ValueError, KeyError, TypeError):
                pass
            print(f"genshift: cached check {target} is unusable; checking again")
    samples = sorted(manifest.samples, key=lambda s: (s.split, s.id))
    jobs = [("sequence", s.kind, str(manifest.root), s.path, s.sha256, s.frames, int(segment_length), profile,
             manifest.extra.get("video_backend") or "pyav") if s.kind != "image"
            else ("image", str(manifest.root), s.path, s.sha256, int(min_side)) for s in samples]
    results = _run(jobs, workers, progress)
    problems: list[Problem] = []
    by_sha: dict[str, list] = defaultdict(list)
    content = hashlib.sha256()
    for s, (sha, found) in zip(samples, results, strict=True):
        for kind, severity, message in found:
            problems.append(Problem(kind, severity, message, s.split, s.id, s.path))
        if sha:
            by_sha[sha].append(s)
        content.update(f"{s.split}/{s.id}:{sha}\n".encode())
    for sha, group in by_sha.items():
        if len(group) < 2:
            continue
        if len({s.label for s in group}) > 1:  # one image cannot be both: every copy is an error
            for s in group:
                others = [f"{o.split} id {o.id} ({'fake ' + o.generator if o.label else 'real'})"
                          for o in group if o is not s]
                problems.append(Problem(
                    "label_conflict", "error",
                    f"{describe(manifest.root, s.path)}: labelled {'fake ' + s.generator if s.label else 'real'}, "
                    f"but the same bytes are labelled otherwise as {', '.join(others)} (sha256 {sha[:12]})",
                    s.split, s.id, s.path))
        evals = [s for s in group if s.split == "eval"]
        trains = [s for s in group if s.split == "train"]
        vals = [s for s in group if s.split == "val"]
        if evals and (trains or vals):  # leak: drop the train/val copies so the eval split stays as published
            for s in trains + vals:
                problems.append(Problem(
                    "duplicate", "error",
                    f"{describe(manifest.root, s.path)}: same bytes as eval id(s) {[e.id for e in evals]} "
                    f"(sha256 {sha[:12]}); a {s.split} image must not be in the eval split (validation images, "
                    "carved from train or a source's val split, included)", s.split, s.id, s.path))
        if vals and trains:  # selection would score an image the model trained on
            for s in vals:
                problems.append(Problem(
                    "duplicate_train_val", "warning",
                    f"{describe(manifest.root, s.path)}: same bytes as train id(s) {[t.id for t in trains]} "
                    f"(sha256 {sha[:12]}); model selection on the val split would score an image it trained on",
                    s.split, s.id, s.path))
        for split, members in (("train", trains), ("eval", evals), ("val", vals)):
            for s in members[1:]:
                problems.append(Problem(
                    "duplicate_within_split", "warning",
                    f"{describe(manifest.root, s.path)}: same bytes as {split} id {members[0].id}",
                    s.split, s.id, s.path))
    counts = _counts(manifest)
    problems += _balance_problems(counts, reals_reused)
    report = CheckReport(manifest.name, manifest.checksum, counts, problems, [], int(min_side), content.hexdigest())
    if target is not None:
        atomic_write_text(target, json.dumps(report.to_dict(), indent=1))
    return report


def check_spec(spec: str, cache_dir: Path, min_side: int = DEFAULT_MIN_SIDE, workers: int = 2,
               progress: bool = True, fresh: bool = False, segment_length: int = 30,
               profile: str = "lrnet-v1") -> CheckReport:
    """Full check of a dataset spec: record-level problems from the source scan plus `check_source`
    (`fresh`: no cached scan or check is trusted; both are made again and replace the cached ones; landmark
    sequences are checked against ``profile``'s segments)."""
    from benchmark.sources import scan_source

    scan = scan_source(spec, cache_dir, progress, fresh=fresh)
    report = check_source(scan.manifest, cache_dir, min_side, workers, progress, fresh=fresh,
                          segment_length=segment_length, profile=profile)
    report.source = spec
    report.problems = scan.problems + report.problems
    report.notes = scan.notes + report.notes
    return report


def apply_skips(manifest: Manifest, report: CheckReport) -> Manifest:
    """The manifest without the images listed as skippable errors; refuses errors that skipping cannot fix.

    The result has a new checksum (its records differ) and `extra['skipped']` = [[split, id], ...].
    """
    if report.manifest_checksum != manifest.checksum:
        raise ValueError(f"check report is for manifest {report.manifest_checksum[:12]}, not "
                         f"{manifest.checksum[:12]}; check this dataset again")
    fatal = [p for p in report.errors if p.kind not in SKIPPABLE or p.id is None]
    if fatal:
        listed = "\n  ".join(p.line() for p in fatal[:20])
        raise ValueError(f"{manifest.name}: {len(fatal)} error(s) cannot be fixed by skipping images:\n  {listed}")
    skip = set(report.skippable())
    kept = [s for s in manifest.samples if (s.split, s.id) not in skip]
    timeline, notes = restrict_timeline(dict(manifest.timeline), kept, manifest.name)
    extra = dict(manifest.extra, skipped=[list(x) for x in sorted(skip)])
    if notes:
        extra["notes"] = list(extra.get("notes", [])) + notes
    return Manifest(manifest.name, manifest.root, kept, timeline, extra)


def format_report(report: CheckReport, max_per_kind: int = 20) -> str:
    """The report as a table for a person."""
    lines = [f"dataset {report.source}   manifest {report.manifest_checksum[:16]}   content "
             f"{report.content_sha256[:16]}"]
    gens = sorted({g for split in report.counts.values() for g in split})
    width = max([len("generator"), *(len(g) for g in gens if g), len("(real)")])
    splits = [s for s in ("train", "val", "eval") if s in report.counts]
    lines.append(f"  {'generator':<{width}}  " + "  ".join(f"{s:>7}" for s in splits))
    for g in gens:
        lines.append(f"  {(g or '(real)'):<{width}}  " + "  ".join(f"{report.counts[s].get(g, 0):>7}"
                                                                   for s in splits))
    for split in splits:
        reals = report.counts[split].get("", 0)
        lines.append(f"  {split}: {reals} reals, {sum(report.counts[split].values()) - reals} fakes")
    for note in report.notes:
        lines.append(f"note: {note}")
    by_kind: dict[tuple[str, str], list[Problem]] = defaultdict(list)
    for p in report.problems:
        by_kind[(p.severity, p.kind)].append(p)
    for (severity, kind), items in sorted(by_kind.items()):
        lines.append(f"{severity.upper()} {kind}: {len(items)}")
        for p in items[:max_per_kind]:
            lines.append(f"  {p.line()}")
        if len(items) > max_per_kind:
            lines.append(f"  ... and {len(items) - max_per_kind} more (use --json for all)")
    verdict = "OK" if report.ok else f"FAILED: {len(report.errors)} error(s)"
    lines.append(f"{verdict}, {len(report.warnings)} warning(s)")
    if not report.ok and report.skippable():
        lines.append(f"{len(report.skippable())} image(s) can be skipped instead of fixed "
                     "(run with the skip-bad-images option; skipped ids are recorded in run.json)")
    return "\n".join(lines)
