"""The `folder:ROOT` and `csv:FILE` sources: the users' own images plus a timeline YAML (DESIGN §3.2).

folder:ROOT  ROOT/<split>/<class>/**/<image>, split `train` or `eval` (`validation` is accepted for
             eval), class `real` or a generator name; optional masks at ROOT/masks/<split>/<class>/
             <same relative path, .png>. `id` = index of the image in its split, sorted by path.
csv:FILE     header `path,label,generator,split[,mask]`; paths relative to the dataset root (the CSV's
             folder, or `?root=DIR`) or absolute inside it; label 0 (generator '' or 'real') or 1
             (generator name); `id` = index of the row among the CSV's rows of the same split, in file order.
Every bad row (undated generator, missing file or mask, label outside {0, 1}, unknown split, a file outside
the dataset root) is collected as a problem naming the row; `load_source` refuses the dataset if there is any.

Symbolic links, one policy for both sources: links to files and to directories are followed wherever they
are, as long as what they point to lies inside the dataset root; a file or directory that resolves outside it
is an `outside_root` error naming the link and its target, and is never read (nor silently skipped).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmark.formats import FORMATS_VERSION, probe_file
from benchmark.manifest import Manifest, Sample, sha256_file
from benchmark.source_records import (
    Problem,
    ScanResult,
    cache_key,
    cache_path,
    load_scan,
    read_csv_rows,
    restrict_timeline,
    save_scan,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
SPLIT_ALIASES = {"train": "train", "eval": "eval", "validation": "eval"}
REAL_NAMES = ("", "real")
CSV_COLUMNS = ("path", "label", "generator", "split")


@dataclass(frozen=True)
class _Row:
    """A candidate record before validation; `where` names it in messages."""

    where: str
    split: str
    id: int
    label_text: str
    generator: str
    path: str  # as it will be stored (relative to root, or absolute)
    mask: str | None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, or (0, 0) when unreadable (reported by `data check`)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - decoding problems are the check's job, not the scan's
        return 0, 0


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def outside_root(root: Path, rel: str) -> Path | None:
    """Where `rel` really leads (symbolic links and `..` followed) when that is outside `root`, else None."""
    real = Path(os.path.realpath(_resolve(root, rel)))
    return None if real.is_relative_to(root) else real


def _validate(rows: Iterable[_Row], root: Path, timeline: dict[str, dt.date] | None, timeline_src: str):
    samples: list[Sample] = []
    problems: list[Problem] = []
    for r in rows:
        def bad(kind: str, msg: str, r: _Row = r) -> None:
            problems.append(Problem(kind, "error", f"{r.where}: {msg}", r.split, r.id, r.path))

        if r.label_text not in ("0", "1"):
            bad("bad_label", f"label {r.label_text!r} is not 0 or 1")
            continue
        label = int(r.label_text)
        gen = "" if r.generator.lower() in REAL_NAMES and label == 0 else r.generator
        if label == 0 and gen:
            bad("bad_label", f"label 0 (real) with generator {r.generator!r}; reals have generator '' or 'real'")
            continue
        if label == 1 and gen.lower() in REAL_NAMES:
            bad("bad_label", f"label 1 (fake) needs a generator name, got {r.generator!r}")
            continue
        if label == 1 and timeline is not None and gen not in timeline:
            bad("missing_date", f"generator {gen!r} has no release date in {timeline_src}; add "
                                f"'{gen}: YYYY-MM-DD' to it")
            continue
        file = _resolve(root, r.path)
        escaped = [(what, rel, real) for what, rel in (("image", r.path), ("mask", r.mask)) if rel is not None
                   for real in [outside_root(root, rel)] if real is not None]
        if escaped:
            what, rel, real = escaped[0]
            bad("outside_root", f"{what} {rel} leads to {real}, outside the dataset root {root}; genshift reads "
                                "only files inside it (move the file in, or choose a root that holds it)")
            continue
        if not file.is_file():
            broken = " (a broken symbolic link)" if file.is_symlink() else ""
            bad("missing_file", f"image {file} does not exist{broken}")
            continue
        if r.mask is not None and not _resolve(root, r.mask).is_file():
            bad("missing_file", f"mask {_resolve(root, r.mask)} does not exist")
            continue
        width, height = _image_size(file)
        fmt, quality = probe_file(file)
        samples.append(Sample(id=r.id, split=r.split, label=label, generator=gen, path=r.path, width=width,
                              height=height, mask=r.mask, sha256=sha256_file(file), format=fmt,
                              jpeg_quality=quality))
    return samples, problems


def file_stamp(p: Path) -> list | None:
    """What changes when a file's bytes may have changed: where it leads, size, mtime, ctime and inode.

    ctime and the inode cannot be set back by hand (mtime can, `touch -r`), so a file swapped for another with
    the same size and mtime still gets hashed again."""
    if not p.is_file():
        return None
    st = p.stat()
    return [os.path.realpath(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _scan(kind: str, root: Path, name: str, rows: list[_Row], row_problems: list[Problem], notes: list[str],
          timeline: dict[str, dt.date] | None, timeline_src: str, cache_dir: Path, extra_key: dict,
          fresh: bool = False) -> ScanResult:
    stats = {}
    for r in rows:
        for rel in (r.path, r.mask):
            if rel is not None:
                stats[rel] = file_stamp(_resolve(root, rel))
    key = cache_key(kind, {
        "root": str(root), "rows": [(r.split, r.id, r.label_text, r.generator, r.path, r.mask) for r in rows],
        "stats": stats,
        "timeline": "labels-only" if timeline is None else {g: d.isoformat() for g, d in sorted(timeline.items())},
        "row_problems": [p.line() for p in row_problems], **extra_key,
    })
    target = cache_path(cache_dir, kind, key)
    cached = None if fresh else load_scan(target, root)
    if cached is not None:
        return cached
    samples, problems = _validate(rows, root, timeline, timeline_src)
    tl, tl_notes = restrict_timeline(timeline, samples, name) if timeline is not None else ({}, [])
    manifest = Manifest(name=name, root=root, samples=samples, timeline=tl,
                        extra={"source": kind, "timeline": timeline_src, "notes": notes + tl_notes,
                               "formats_version": FORMATS_VERSION})
    scan = ScanResult(manifest, row_problems + problems, notes + tl_notes)
    save_scan(target, scan)
    return scan


def _walk(sdir: Path, root: Path, problems: list[Problem], notes: list[str]) -> list[Path]:
    """Every non-hidden file under `sdir`, entering linked directories that stay inside `root` (each real
    directory once); a linked directory that leads outside is an `outside_root` problem, not a silent gap.
    A linked file is listed as found: `_validate` refuses it if it leads outside."""
    out: list[Path] = []
    visited: set[str] = set()
    stack = [sdir]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in visited:
            notes.append(f"folder:{root}: {d.relative_to(root)}/ leads to a directory already read ({real}); "
                         "its files are listed once")
            continue
        visited.add(real)
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            if e.is_dir(follow_symlinks=True):
                escaped = outside_root(root, str(p))
                if escaped is not None:
                    problems.append(Problem(
                        "outside_root", "error", f"folder:{root} {p.relative_to(root).as_posix()}/ leads to "
                        f"{escaped}, outside the dataset root; genshift reads only files inside it (move the "
                        "folder in, or choose a root that holds it)", path=p.relative_to(root).as_posix()))
                    continue
                stack.append(p)
            elif e.is_file(follow_symlinks=True) or e.is_symlink():
                out.append(p)
    return out


def scan_folder(root: Path, timeline: dict[str, dt.date] | None, timeline_src: str, cache_dir: Path,
                fresh: bool = False) -> ScanResult:
    """Records of ROOT/<split>/<class>/**/<image>.

    ``timeline`` None (labels only: `genshift predict`, test datasets): generators need no date and the folder
    needs only one of train/ and eval/."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"folder:{root}: no such directory")
    split_dirs: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name in SPLIT_ALIASES:
            split = SPLIT_ALIASES[child.name]
            if split in split_dirs:
                raise ValueError(f"folder:{root}: both {split_dirs[split].name}/ and {child.name}/ hold the "
                                 f"{split} split; keep one")
            split_dirs[split] = child
    if ("train" not in split_dirs or "eval" not in split_dirs) if timeline is not None else not split_dirs:
        raise FileNotFoundError(
            f"folder:{root}: expected sub-folders train/ and eval/ (or validation/), each with real/ and one "
            f"folder per generator; found {sorted(p.name for p in root.iterdir() if p.is_dir())}"
        )
    rows: list[_Row] = []
    notes: list[str] = []
    walk_problems: list[Problem] = []
    for split in [s for s in ("train", "eval") if s in split_dirs]:
        sdir = split_dirs[split]
        if outside_root(root, str(sdir)) is not None:
            raise ValueError(f"folder:{root}: {sdir.name}/ leads to {os.path.realpath(sdir)}, outside the dataset "
                             "root; genshift reads only files inside it")
        files = sorted(_walk(sdir, root, walk_problems, notes), key=lambda p: p.relative_to(sdir).as_posix())
        ignored = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if ignored:
            notes.append(f"folder:{root}: ignored {len(ignored)} non-image file(s) under {sdir.name}/, "
                         f"e.g. {ignored[0].relative_to(root)}")
        loose = [p for p in files if p.parent == sdir and p.suffix.lower() in IMAGE_EXTENSIONS]
        if loose:
            raise ValueError(f"folder:{root}: images directly under {sdir.name}/ (e.g. {loose[0].name}); put "
                             "them in real/ or a folder named after their generator")
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        for i, p in enumerate(images):
            rel = p.relative_to(root)
            cls = p.relative_to(sdir).parts[0]
            mask_rel = Path("masks") / split / p.relative_to(sdir).with_suffix(".png")
            rows.append(_Row(
                where=f"folder:{root} {rel.as_posix()}",
                split=split, id=i,
                label_text="0" if cls == "real" else "1",
                generator="" if cls == "real" else cls,
                path=rel.as_posix(),
                mask=mask_rel.as_posix() if (root / mask_rel).is_file() else None,
            ))
    return _scan("folder", root, f"folder:{root.name}", rows, walk_problems, notes, timeline, timeline_src,
                 cache_dir, {}, fresh)


def scan_csv(file: Path, timeline: dict[str, dt.date] | None, timeline_src: str, cache_dir: Path,
             root: str | Path | None = None, fresh: bool = False) -> ScanResult:
    """Records of a CSV `path,label,generator,split[,mask]` (paths relative to `root`, default the CSV's folder)."""
    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"csv:{file}: no such file")
    root = Path(root).expanduser().resolve() if root is not None else file.parent
    if not root.is_dir():
        raise FileNotFoundError(f"csv:{file}: dataset root {root} is not a directory")
    text, records, problems = read_csv_rows(file, f"csv:{file}", CSV_COLUMNS, "[,mask]")
    rows: list[_Row] = []
    next_id = {"train": 0, "eval": 0}
    for where, rec in records:
        split = SPLIT_ALIASES.get(rec["split"].lower())
        if split is None:
            problems.append(Problem("bad_split", "error", f"{where}: split {rec['split']!r} is not train, eval "
                                    "or validation", path=rec["path"]))
            continue
        if not rec["path"]:
            problems.append(Problem("missing_file", "error", f"{where}: empty path", split, next_id[split]))
            next_id[split] += 1
            continue
        rows.append(_Row(where=where, split=split, id=next_id[split], label_text=rec["label"],
                         generator=rec["generator"], path=rec["path"], mask=rec.get("mask") or None))
        next_id[split] += 1
    return _scan("csv", root, f"csv:{file.name}", rows, problems, [], timeline, timeline_src, cache_dir,
                 {"csv_sha256": hashlib.sha256(text.encode()).hexdigest()}, fresh)
