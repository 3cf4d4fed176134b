"""The `landmarks:` and `videos:` sources: face-forgery videos as landmark sequences or as video files.

Layout (LRNet's released datasets, FaceForensics++ methods and compression levels):

    ROOT/<method>/<raw|c23|c40>/<train|val|test>/<video>.txt    (landmarks: one frame of 136 numbers per line)
    ROOT/<method>/<raw|c23|c40>/<train|val|test>/<video>.mp4    (videos: any of benchmark.video_frames'
                                                                 extensions)

`Origin` (or `real`) is the real class; every other method folder is a manipulation method (the "generator").
Compression folders may have any name (raw, c23 and c40 in FF++). Splits: `train`, `val` (a validation split,
read only by selection), `test` (the evaluation split; `eval` is accepted too).

CSV form (`landmarks:FILE.csv`, `videos:FILE.csv`): header `path,label,method,compression,split[,video]`, paths
relative to the CSV's folder or absolute, label 0 (method '' / Origin / real) or 1, split train/val/test (or
eval); `video` defaults to the file stem.

Records: `id` = index of the file in its split, sorted by method/compression/split/name (folder) or in row
order (CSV); `generator` = method ('' for reals); `compression`; `video` = file stem; `frames` = frame count
(landmarks: lines; videos: decoded frames). Without a timeline (genshift predict) every method is a label
only; with one, an undated method is an error naming it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from benchmark.manifest import Manifest, Sample, sha256_file
from benchmark.sequences import count_frames
from benchmark.source_records import (
    Problem,
    ScanResult,
    cache_key,
    cache_path,
    load_scan,
    read_csv_rows,
    save_scan,
)
from benchmark.video_frames import VIDEO_EXTENSIONS, VideoReadError
from benchmark.video_frames import count_frames as count_video_frames

REAL_METHODS = ("Origin", "origin", "real", "Real", "")
SPLIT_NAMES = {"train": "train", "val": "val", "test": "eval", "eval": "eval"}
CSV_COLUMNS = ("path", "label", "method", "compression", "split")
KINDS = {"landmarks": (".txt",), "videos": VIDEO_EXTENSIONS}


@dataclass(frozen=True)
class _Row:
    where: str
    split: str
    label_text: str
    method: str
    compression: str
    path: str
    video: str


def _sample_kind(kind: str) -> str:
    return "landmarks" if kind == "landmarks" else "video"


def _frames_of(kind: str, file: Path, data: bytes | None, backend: str) -> int:
    if kind == "landmarks":
        return count_frames(data if data is not None else file.read_bytes())
    try:
        return count_video_frames(file, backend)
    except VideoReadError:
        return 0  # `genshift data check` reports the unreadable video


def _records(kind: str, root: Path, rows: list[_Row], timeline: dict[str, dt.date] | None, timeline_src: str,
             backend: str) -> tuple[list[Sample], list[Problem]]:
    samples: list[Sample] = []
    problems: list[Problem] = []
    next_id: dict[str, int] = {}
    seen_keys: dict[tuple, str] = {}
    for r in rows:
        sid = next_id.get(r.split, 0)
        next_id[r.split] = sid + 1

        def bad(pkind: str, msg: str, r: _Row = r, sid: int = sid) -> None:
            problems.append(Problem(pkind, "error", f"{r.where}: {msg}", r.split, sid, r.path))

        if r.label_text not in ("0", "1"):
            bad("bad_label", f"label {r.label_text!r} is not 0 or 1")
            continue
        label = int(r.label_text)
        real = r.method in REAL_METHODS
        if label == 0 and not real:
            bad("bad_label", f"label 0 (real) with method {r.method!r}; reals have method Origin, real or ''")
            continue
        if label == 1 and real:
            bad("bad_label", f"label 1 (fake) needs a manipulation method, got {r.method!r}")
            continue
        gen = "" if real else r.method
        if gen and timeline is not None and gen not in timeline:
            bad("missing_date", f"method {gen!r} has no publication date in {timeline_src}; add "
                                f"'{gen}: YYYY-MM-DD' to it")
            continue
        file = Path(r.path) if Path(r.path).is_absolute() else root / r.path
        if not file.is_file():
            bad("missing_file", f"{file} does not exist")
            continue
        key = (r.split, gen, r.compression, r.video)
        if key in seen_keys:
            bad("duplicate_video", f"video {r.video!r} of {gen or 'real'} / {r.compression or '-'} is listed twice "
                                   f"in the {r.split} split (also {seen_keys[key]})")
            continue
        seen_keys[key] = r.path
        data = file.read_bytes() if kind == "landmarks" else None
        sha = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(file)
        samples.append(Sample(id=sid, split=r.split, label=label, generator=gen, path=r.path, width=0, height=0,
                              sha256=sha, kind=_sample_kind(kind), compression=r.compression, video=r.video,
                              frames=_frames_of(kind, file, data, backend)))
    return samples, problems


def _scan(kind: str, root: Path, name: str, rows: list[_Row], row_problems: list[Problem], notes: list[str],
          timeline: dict[str, dt.date] | None, timeline_src: str, cache_dir: Path, backend: str,
          extra_key: dict) -> ScanResult:
    stats = {}
    for r in rows:
        p = Path(r.path) if Path(r.path).is_absolute() else root / r.path
        st = p.stat() if p.is_file() else None
        stats[r.path] = (st.st_size, st.st_mtime_ns) if st else None
    key = cache_key(kind, {
        "root": str(root), "rows": [(r.split, r.label_text, r.method, r.compression, r.path, r.video) for r in rows],
        "stats": stats, "backend": backend,
        "timeline": None if timeline is None else {g: d.isoformat() for g, d in sorted(timeline.items())},
        **extra_key,
    })
    target = cache_path(cache_dir, kind, key)
    cached = load_scan(target, root)
    if cached is not None:
        return cached
    samples, problems = _records(kind, root, rows, timeline, timeline_src, backend)
    tl, tl_notes = ({}, []) if timeline is None else _restrict(timeline, samples, name)
    extra = {"source": kind, "timeline": timeline_src if timeline is not None else None, "notes": notes + tl_notes,
             "video_backend": backend if kind == "videos" else None}
    scan = ScanResult(Manifest(name=name, root=root, samples=samples, timeline=tl, extra=extra),
                      row_problems + problems, notes + tl_notes)
    save_scan(target, scan)
    return scan


def _restrict(timeline: dict[str, dt.date], samples: list[Sample], name: str):
    from benchmark.source_records import restrict_timeline

    return restrict_timeline(timeline, samples, name)


def scan_layout(kind: str, root: Path, timeline: dict[str, dt.date] | None, timeline_src: str, cache_dir: Path,
                backend: str = "pyav") -> ScanResult:
    """Records of ROOT/<method>/<compression>/<split>/<video>.<ext>."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{kind}:{root}: no such directory")
    exts = KINDS[kind]
    rows: list[_Row] = []
    notes: list[str] = []
    ignored = []
    methods = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for mdir in methods:
        for cdir in sorted(p for p in mdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for sdir in sorted(p for p in cdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                split = SPLIT_NAMES.get(sdir.name)
                if split is None:
                    notes.append(f"{kind}:{root}: ignored folder {sdir.relative_to(root)} (splits are train, val, "
                                 "test)")
                    continue
                for f in sorted(p for p in sdir.iterdir() if p.is_file() and not p.name.startswith(".")):
                    if f.suffix.lower() not in exts:
                        ignored.append(f)
                        continue
                    rel = f.relative_to(root).as_posix()
                    rows.append(_Row(where=f"{kind}:{root.name} {rel}", split=split,
                                     label_text="0" if mdir.name in REAL_METHODS else "1", method=mdir.name,
                                     compression=cdir.name, path=rel, video=f.stem))
    if ignored:
        notes.append(f"{kind}:{root}: ignored {len(ignored)} file(s) that are not {'/'.join(exts)}, e.g. "
                     f"{ignored[0].relative_to(root)}")
    if not rows:
        raise FileNotFoundError(
            f"{kind}:{root}: no {'/'.join(exts)} file in the layout <method>/<compression>/<train|val|test>/; found "
            f"top-level folders {[p.name for p in methods]}")
    order = {"train": 0, "val": 1, "eval": 2}
    rows.sort(key=lambda r: (order[r.split], r.path))
    return _scan(kind, root, f"{kind}:{root.name}", rows, [], notes, timeline, timeline_src, cache_dir, backend, {})


def scan_sequence_csv(kind: str, file: Path, timeline: dict[str, dt.date] | None, timeline_src: str,
                      cache_dir: Path, backend: str = "pyav") -> ScanResult:
    """Records of a CSV `path,label,method,compression,split[,video]`."""
    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"{kind}:{file}: no such file")
    root = file.parent
    text, records, problems = read_csv_rows(file, f"{kind}:{file}", CSV_COLUMNS, "[,video]")
    rows: list[_Row] = []
    for where, rec in records:
        split = SPLIT_NAMES.get(rec["split"].lower())
        if split is None:
            problems.append(Problem("bad_split", "error", f"{where}: split {rec['split']!r} is not train, val, test "
                                    "or eval", path=rec["path"]))
            continue
        if not rec["path"]:
            problems.append(Problem("missing_file", "error", f"{where}: empty path", split))
            continue
        rows.append(_Row(where=where, split=split, label_text=rec["label"], method=rec["method"],
                         compression=rec["compression"], path=rec["path"],
                         video=rec.get("video") or Path(rec["path"]).stem))
    return _scan(kind, root, f"{kind}:{file.name}", rows, problems, [], timeline, timeline_src, cache_dir, backend,
                 {"csv_sha256": hashlib.sha256(text.encode()).hexdigest()})
