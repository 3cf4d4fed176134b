"""The `folder:ROOT` and `csv:FILE` sources: the users' own images plus a timeline YAML (DESIGN §3.2).

folder:ROOT  ROOT/<split>/<class>/**/<image>, split `train` or `eval` (`validation` is accepted for
             eval), class `real` or a generator name; optional masks at ROOT/masks/<split>/<class>/
             <same relative path, .png>. `id` = index of the image in its split, sorted by path.
csv:FILE     header `path,label,generator,split[,mask]`; paths relative to the CSV's folder or absolute;
             label 0 (generator '' or 'real') or 1 (generator name); `id` = index of the row among the
             CSV's rows of the same split, in file order.
Every bad row (undated generator, missing file or mask, label outside {0, 1}, unknown split) is
collected as a problem naming the row; `load_source` refuses the dataset if there is any.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmark.manifest import Manifest, Sample, sha256_file
from benchmark.source_records import (
    Problem,
    ScanResult,
    cache_key,
    cache_path,
    load_scan,
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


def _validate(rows: Iterable[_Row], root: Path, timeline: dict[str, dt.date], timeline_src: str):
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
        if label == 1 and gen not in timeline:
            bad("missing_date", f"generator {gen!r} has no release date in {timeline_src}; add "
                                f"'{gen}: YYYY-MM-DD' to it")
            continue
        file = _resolve(root, r.path)
        if not file.is_file():
            bad("missing_file", f"image {file} does not exist")
            continue
        if r.mask is not None and not _resolve(root, r.mask).is_file():
            bad("missing_file", f"mask {_resolve(root, r.mask)} does not exist")
            continue
        width, height = _image_size(file)
        samples.append(Sample(id=r.id, split=r.split, label=label, generator=gen, path=r.path, width=width,
                              height=height, mask=r.mask, sha256=sha256_file(file)))
    return samples, problems


def _scan(kind: str, root: Path, name: str, rows: list[_Row], row_problems: list[Problem], notes: list[str],
          timeline: dict[str, dt.date], timeline_src: str, cache_dir: Path, extra_key: dict) -> ScanResult:
    stats = {}
    for r in rows:
        for rel in (r.path, r.mask):
            if rel is not None:
                p = _resolve(root, rel)
                st = p.stat() if p.is_file() else None
                stats[rel] = (st.st_size, st.st_mtime_ns) if st else None
    key = cache_key(kind, {
        "root": str(root), "rows": [(r.split, r.id, r.label_text, r.generator, r.path, r.mask) for r in rows],
        "stats": stats, "timeline": {g: d.isoformat() for g, d in sorted(timeline.items())}, **extra_key,
    })
    target = cache_path(cache_dir, kind, key)
    cached = load_scan(target, root)
    if cached is not None:
        return cached
    samples, problems = _validate(rows, root, timeline, timeline_src)
    tl, tl_notes = restrict_timeline(timeline, samples, name)
    manifest = Manifest(name=name, root=root, samples=samples, timeline=tl,
                        extra={"source": kind, "timeline": timeline_src, "notes": notes + tl_notes})
    scan = ScanResult(manifest, row_problems + problems, notes + tl_notes)
    save_scan(target, scan)
    return scan


def scan_folder(root: Path, timeline: dict[str, dt.date], timeline_src: str, cache_dir: Path) -> ScanResult:
    """Records of ROOT/<split>/<class>/**/<image>."""
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
    if "train" not in split_dirs or "eval" not in split_dirs:
        raise FileNotFoundError(
            f"folder:{root}: expected sub-folders train/ and eval/ (or validation/), each with real/ and one "
            f"folder per generator; found {sorted(p.name for p in root.iterdir() if p.is_dir())}"
        )
    rows: list[_Row] = []
    notes: list[str] = []
    for split in ("train", "eval"):
        sdir = split_dirs[split]
        files = sorted(
            (p for p in sdir.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                    p.relative_to(sdir).parts)),
            key=lambda p: p.relative_to(sdir).as_posix(),
        )
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
    return _scan("folder", root, f"folder:{root.name}", rows, [], notes, timeline, timeline_src, cache_dir, {})


def scan_csv(file: Path, timeline: dict[str, dt.date], timeline_src: str, cache_dir: Path) -> ScanResult:
    """Records of a CSV `path,label,generator,split[,mask]` (paths relative to the CSV's folder)."""
    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"csv:{file}: no such file")
    root = file.parent
    text = file.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"csv:{file}: header must have columns {', '.join(CSV_COLUMNS)}[,mask]; missing {missing} "
                         f"(header: {header})")
    rows: list[_Row] = []
    problems: list[Problem] = []
    next_id = {"train": 0, "eval": 0}
    for n, raw in enumerate(reader, start=1):
        rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{file.name} row {n} (line {n + 1})"
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
                 {"csv_sha256": hashlib.sha256(text.encode()).hexdigest()})
