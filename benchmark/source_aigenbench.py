"""The `aigenbench:PATH` source: the AI-GenBench release (a `datasets.save_to_disk` DatasetDict).

Splits `train` and `validation` (the eval split); columns `image`, `label` (0/1), `generator` ('' =
real), `file_id`, `origin_dataset`, ... (DESIGN §3.2). `id` is the row index in its split before
filtering; rows whose generator is not in the timeline are dropped, as the reference does. Images stay
in the Arrow files: `Sample.path` is a row reference (benchmark/imagestore.py); sha256 is taken over
the stored image bytes. The built manifest is cached under the cache dir, keyed by the dataset's
fingerprints and file sizes and by the timeline, so a second load reads one JSON file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path

from PIL import Image

from benchmark.imagestore import open_dataset_dict, row_ref
from benchmark.manifest import Manifest, Sample
from benchmark.source_files import file_stamp
from benchmark.source_records import (
    Problem,
    ScanResult,
    cache_key,
    cache_path,
    load_scan,
    restrict_timeline,
    save_scan,
)

SPLIT_MAP = {"train": "train", "validation": "eval"}  # HF split -> genshift split
REQUIRED_COLUMNS = ("image", "label", "generator")
_BATCH = 256


def dataset_fingerprint(root: Path) -> dict:
    """What identifies a saved DatasetDict cheaply: per split the stored fingerprint and data file sizes."""
    out: dict = {}
    try:
        splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
    except (OSError, ValueError, KeyError) as e:
        raise FileNotFoundError(
            f"{root}: cannot read dataset_dict.json ({e}); aigenbench:PATH must be the folder written by "
            "datasets.save_to_disk (it holds dataset_dict.json, train/, validation/)"
        ) from e
    for split in splits:
        state_path = root / split / "state.json"
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{state_path}: cannot read the split's state ({e})") from e
        files = [f["filename"] for f in state.get("_data_files", [])]
        out[split] = {
            "fingerprint": state.get("_fingerprint"),
            "files": {f: file_stamp(root / split / f) for f in files},
        }
    return out


def scan_aigenbench(
    root: Path, timeline: dict[str, dt.date], timeline_name: str, cache_dir: Path, progress: bool = True,
    fresh: bool = False,
) -> ScanResult:
    """Build (or read from the cache) the manifest of a release-format dataset (`fresh`: always build it)."""
    root = Path(root).expanduser().resolve()
    key = cache_key("aigenbench", {
        "root_fingerprint": dataset_fingerprint(root),
        "timeline": {g: d.isoformat() for g, d in sorted(timeline.items())},
    })
    target = cache_path(cache_dir, "aigenbench", key)
    cached = None if fresh else load_scan(target, root)
    if cached is not None:
        return cached
    scan = _build(root, timeline, timeline_name, progress)
    save_scan(target, scan)
    return scan


def _build(root: Path, timeline: dict[str, dt.date], timeline_name: str, progress: bool) -> ScanResult:
    from benchmark.progress import counted_progress

    dd = open_dataset_dict(root)
    missing_splits = sorted(set(SPLIT_MAP) - set(dd))
    if missing_splits:
        raise ValueError(f"{root}: the release must have splits train and validation; missing {missing_splits} "
                         f"(has {sorted(dd)})")
    samples: list[Sample] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for hf_split, split in SPLIT_MAP.items():
        ds = dd[hf_split]
        absent = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if absent:
            raise ValueError(f"{root}/{hf_split}: missing column(s) {absent}; has {ds.column_names}")
        meta_cols = [c for c in ("label", "generator", "width", "height", "origin_dataset") if c in ds.column_names]
        meta = ds.select_columns(meta_cols).with_format("arrow")[:].to_pydict()
        n = len(ds)
        dropped: dict[str, int] = {}
        keep = []
        for row in range(n):
            gen, label = meta["generator"][row], meta["label"][row]
            gen = "" if gen is None else str(gen)
            if gen and gen not in timeline:
                dropped[gen] = dropped.get(gen, 0) + 1
                continue
            where = f"{root}/{hf_split} row {row}"
            if label not in (0, 1):
                problems.append(Problem("bad_label", "error", f"{where}: label {label!r} is not 0 or 1",
                                        split, row, row_ref(hf_split, row)))
                continue
            if (label == 1) != bool(gen):
                problems.append(Problem(
                    "bad_label", "error",
                    f"{where}: label {label} with generator {gen!r} (reals have generator '', fakes a name)",
                    split, row, row_ref(hf_split, row)))
                continue
            keep.append(row)
        if dropped:
            notes.append(f"{hf_split}: dropped {sum(dropped.values())} rows of generators not in timeline "
                         f"{timeline_name}: {dict(sorted(dropped.items()))}")
        keep_set = set(keep)
        images = ds.select_columns(["image"]).with_format("arrow")
        with counted_progress(progress) as bar:
            task = bar.add_task(f"hashing {hf_split} images", total=n)
            for start in range(0, n, _BATCH):
                cells = images[start : start + _BATCH].column("image").to_pylist()
                for offset, cell in enumerate(cells):
                    row = start + offset
                    if row not in keep_set:
                        continue
                    s, problem = _sample(root, hf_split, split, row, cell, meta)
                    if problem is not None:
                        problems.append(problem)
                    if s is not None:
                        samples.append(s)
                bar.advance(task, len(cells))
    tl, tl_notes = restrict_timeline(timeline, samples, f"aigenbench:{root}")
    manifest = Manifest(
        name=f"aigenbench:{root.name}",
        root=root,
        samples=samples,
        timeline=tl,
        extra={"source": "aigenbench", "timeline": timeline_name, "notes": notes + tl_notes},
    )
    return ScanResult(manifest, problems, notes + tl_notes)


def _sample(root: Path, hf_split: str, split: str, row: int, cell: dict | None, meta: dict):
    """One row's Sample (sha256 of the stored bytes), or a problem when no bytes are stored."""
    ref = row_ref(hf_split, row)
    data = None
    if cell is not None and cell.get("bytes") is not None:
        data = cell["bytes"]
    elif cell is not None and cell.get("path") and Path(cell["path"]).is_file():
        data = Path(cell["path"]).read_bytes()
    if data is None:
        msg = f"{root}/{hf_split} row {row}: no image bytes stored" + (
            f" and path {cell.get('path')!r} does not exist" if cell and cell.get("path") else "")
        return None, Problem("missing_file", "error", msg, split, row, ref)
    width = meta["width"][row] if "width" in meta else None
    height = meta["height"][row] if "height" in meta else None
    if not width or not height:
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Exception:  # noqa: BLE001 - unreadable images are reported by `data check`
            width, height = 0, 0
    gen = meta["generator"][row] or ""
    origins = meta.get("origin_dataset")
    return Sample(
        id=row,
        split=split,
        label=int(meta["label"][row]),
        generator=gen,
        path=ref,
        width=int(width),
        height=int(height),
        origin=(origins[row] or "") if origins else "",
        sha256=hashlib.sha256(data).hexdigest(),
    ), None
