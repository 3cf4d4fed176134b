"""Tiny datasets in the users' formats, for tests and end-to-end checks (no download needed).

`write_release_dataset` writes a DatasetDict exactly in the AI-GenBench release format (same columns
and feature types, splits train/validation, all 36 v1 generators) with a handful of small PNGs each;
`write_folder_dataset` / `write_csv_dataset` write the `folder:` and `csv:` layouts. Faults can be
planted on purpose (`faults=`) to test `genshift data check`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.timeline import load_timeline_yaml

V1_TIMELINE = Path(__file__).resolve().parent.parent / "configs" / "timelines" / "aigenbench-v1.yaml"
RELEASE_FAULTS = ("corrupt", "truncated", "tiny", "duplicate", "bad_label", "unknown_generator", "exif_rotated")


def release_features():
    """The release's `datasets.Features` (image cast to the standard `Image` feature, as released)."""
    import datasets
    from datasets import ClassLabel, Features, Value

    return Features({
        "image": datasets.Image(),
        "height": Value("uint32"),
        "width": Value("uint32"),
        "label": ClassLabel(num_classes=2, names=["real", "fake"]),
        "generator": Value("large_string"),
        "file_id": Value("large_string"),
        "description": Value("large_string"),
        "positive_prompt": Value("large_string"),
        "negative_prompt": Value("large_string"),
        "conditioning": Value("large_string"),
        "origin_dataset": Value("large_string"),
        "paired_real_images": datasets.features.LargeList(Value("large_string")),
    })


def make_image(seed: int, label: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A small deterministic RGB image (HWC uint8); fakes carry a faint 2-pixel checkerboard."""
    rng = np.random.default_rng(seed)
    h, w = size or (int(rng.integers(64, 97)), int(rng.integers(64, 97)))
    base = rng.integers(0, 256, size=(1, 1, 3)).astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    img = base + 40 * np.sin(xx[..., None] / (3 + seed % 7)) + rng.normal(0, 12, size=(h, w, 3))
    if label == 1:
        img += 10 * (((yy // 2 + xx // 2) % 2)[..., None] - 0.5)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def png_bytes(img: np.ndarray, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(img)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, format="PNG", exif=exif)
    else:
        im.save(buf, format="PNG")
    return buf.getvalue()


def _rows(generators: list[str], split: str, fakes_per_generator: int, seed: int) -> list[dict]:
    """Reals and fakes of one split: as many reals as fakes, fakes grouped per generator."""
    rows = []
    n_fakes = fakes_per_generator * len(generators)
    for i in range(n_fakes):
        rows.append(_row(seed * 100_003 + i, 0, "", f"{split}/real/{i:05d}.png", "COCO"))
    for g_idx, gen in enumerate(generators):
        for j in range(fakes_per_generator):
            sid = seed * 100_003 + 50_000 + g_idx * 101 + j
            rows.append(_row(sid, 1, gen, f"{split}/{gen}/{j:05d}.png", "GenImage"))
    return rows


def _row(seed: int, label: int, gen: str, file_id: str, origin: str) -> dict:
    img = make_image(seed, label)
    return {
        "image": {"bytes": png_bytes(img), "path": None},
        "height": img.shape[0],
        "width": img.shape[1],
        "label": label,
        "generator": gen,
        "file_id": file_id,
        "description": "",
        "positive_prompt": "a photo" if label else "",
        "negative_prompt": "",
        "conditioning": "",
        "origin_dataset": origin,
        "paired_real_images": [],
    }


def write_release_dataset(
    path: Path | str,
    train_fakes_per_generator: int = 2,
    eval_fakes_per_generator: int = 1,
    generators: Iterable[str] | None = None,
    faults: Iterable[str] = (),
    extra_eval_reals: int = 0,
    seed: int = 0,
) -> dict[str, list[tuple[str, int]]]:
    """Write a release-format DatasetDict at `path`; returns {fault: [(split, row), ...]} planted.

    Defaults: all 36 v1 generators, 2 train and 1 eval fake each, as many reals as fakes per split (the
    balanced case of the public release). `extra_eval_reals` adds reals to the eval split;
    `faults` plants one row of each named fault of RELEASE_FAULTS.
    """
    import datasets

    gens = sorted(generators) if generators is not None else sorted(load_timeline_yaml(V1_TIMELINE))
    unknown = set(faults) - set(RELEASE_FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; valid: {RELEASE_FAULTS}")
    splits = {
        "train": _rows(gens, "train", train_fakes_per_generator, seed * 2 + 1),
        "validation": _rows(gens, "validation", eval_fakes_per_generator, seed * 2 + 2),
    }
    for i in range(extra_eval_reals):
        splits["validation"].append(_row(seed * 7919 + 900_000 + i, 0, "", f"validation/real/x{i:05d}.png", "COCO"))
    planted: dict[str, list[tuple[str, int]]] = {}

    def add(fault: str, split: str, row: dict) -> None:
        splits[split].append(row)
        planted.setdefault(fault, []).append(("eval" if split == "validation" else "train",
                                              len(splits[split]) - 1))

    faults = list(faults)
    base = seed * 31337 + 700_000
    if "corrupt" in faults:
        r = _row(base + 1, 1, gens[0], "train/corrupt.png", "GenImage")
        r["image"] = {"bytes": b"this is not an image" * 8, "path": None}
        add("corrupt", "train", r)
    if "truncated" in faults:
        r = _row(base + 2, 1, gens[1 % len(gens)], "validation/truncated.png", "GenImage")
        r["image"] = {"bytes": r["image"]["bytes"][: len(r["image"]["bytes"]) // 2], "path": None}
        add("truncated", "validation", r)
    if "tiny" in faults:
        img = make_image(base + 3, 0, size=(16, 20))
        r = _row(base + 3, 0, "", "train/real/tiny.png", "COCO")
        r.update(image={"bytes": png_bytes(img), "path": None}, height=16, width=20)
        add("tiny", "train", r)
    if "duplicate" in faults:  # a train image that is also in the eval split
        r = dict(splits["validation"][0])
        r["file_id"] = "train/real/duplicate.png"
        add("duplicate", "train", r)
    if "bad_label" in faults:  # a real label on a generator's image
        r = _row(base + 5, 1, gens[2 % len(gens)], "train/bad_label.png", "GenImage")
        r["label"] = 0
        add("bad_label", "train", r)
    if "unknown_generator" in faults:  # not in the timeline: dropped on load, as the reference does
        add("unknown_generator", "train", _row(base + 6, 1, "Pix2Pix", "train/Pix2Pix/0.png", "GenImage"))
    if "exif_rotated" in faults:
        r = _row(base + 7, 0, "", "validation/real/rotated.png", "COCO")
        r["image"] = {"bytes": png_bytes(make_image(base + 7, 0), exif_orientation=6), "path": None}
        add("exif_rotated", "validation", r)
    feats = release_features()
    dd = datasets.DatasetDict({
        name: datasets.Dataset.from_list(rows, features=feats) for name, rows in splits.items()
    })
    quiet = not datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dd.save_to_disk(str(path))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    return planted


def write_folder_dataset(
    root: Path | str, generators: dict[str, str], train_fakes: int = 2, eval_fakes: int = 1, seed: int = 0
) -> Path:
    """ROOT/{train,eval}/{real,<gen>}/*.png plus ROOT/timeline.yaml (`generators`: name -> YYYY-MM-DD)."""
    root = Path(root)
    for split, n in (("train", train_fakes), ("eval", eval_fakes)):
        for g_idx, gen in enumerate(sorted(generators)):
            for j in range(n):
                offset = 100_000 if split == "eval" else 0  # no eval image repeats a train image (no leak)
                _write_png(root / split / gen / f"{j:03d}.png", make_image(seed + offset + 1000 * g_idx + j + 1, 1))
        for i in range(n * len(generators)):
            _write_png(root / split / "real" / f"{i:03d}.png", make_image(seed + 500_000 + i + (split == "eval") * 9999, 0))
    (root / "timeline.yaml").write_text("".join(f"{g}: {d}\n" for g, d in generators.items()))
    return root


def write_csv_dataset(
    root: Path | str, generators: dict[str, str], train_fakes: int = 2, eval_fakes: int = 1, seed: int = 0
) -> Path:
    """Images under ROOT/img/, ROOT/data.csv (`path,label,generator,split`) and ROOT/timeline.yaml."""
    root = Path(root)
    lines = ["path,label,generator,split"]
    for split, n in (("train", train_fakes), ("eval", eval_fakes)):
        for i in range(n * len(generators)):
            rel = f"img/{split}_real_{i:03d}.png"
            _write_png(root / rel, make_image(seed + 600_000 + i + (split == "eval") * 9999, 0))
            lines.append(f"{rel},0,,{split}")
        for g_idx, gen in enumerate(sorted(generators)):
            for j in range(n):
                rel = f"img/{split}_g{g_idx}_{j:03d}.png"
                _write_png(root / rel, make_image(seed + 2000 * g_idx + j + 3 + (split == "eval") * 77, 1))
                lines.append(f'"{rel}",1,"{gen}",{split}')
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    (root / "timeline.yaml").write_text("".join(f"{g}: {d}\n" for g, d in generators.items()))
    return root / "data.csv"


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(img))


def scale_split(rows: int, n_generators: int = 36, eval_fraction: float = 0.2) -> tuple[int, int]:
    """(train, eval) fakes per generator for about `rows` release rows: reals as many as fakes per split, the eval
    split `eval_fraction` of the rows (the release: 80 / 20)."""
    train = max(1, round(rows * (1 - eval_fraction) / (2 * n_generators)))
    return train, max(1, round(rows * eval_fraction / (2 * n_generators)))


def write_scale_dataset(path: Path | str, rows: int, image_size: tuple[int, int] = (64, 96), seed: int = 0,
                        work_dir: Path | str | None = None, generators: Iterable[str] | None = None) -> dict:
    """A release-format DatasetDict of about `rows` rows (all v1 generators, 80 / 20 train / validation, reals as
    many as fakes), images of sides uniform in `image_size` (px), written as it is generated: memory stays a
    batch deep whatever `rows` (for the scale bench: `genshift bench --scale`). Returns the counts written."""
    import shutil
    import tempfile

    import datasets

    gens = sorted(generators) if generators is not None else sorted(load_timeline_yaml(V1_TIMELINE))
    n_train, n_eval = scale_split(rows, len(gens))
    lo, hi = int(image_size[0]), int(image_size[1])

    def split_rows(split: str, per_gen: int, split_seed: int):
        rng = np.random.default_rng([seed, split_seed])
        base = (seed * 1_000_003 + split_seed * 500_009) * 4_000_037
        for i in range(per_gen * len(gens)):  # reals first, then each generator's fakes (as `_rows`)
            yield _scale_row(base + i, 0, "", f"{split}/real/{i:07d}.png", rng, lo, hi)
        for g_idx, gen in enumerate(gens):
            for j in range(per_gen):
                yield _scale_row(base + 2_000_000 + g_idx * 50_021 + j, 1, gen, f"{split}/{gen}/{j:07d}.png", rng,
                                 lo, hi)

    tmp = Path(tempfile.mkdtemp(prefix="genshift-scale-", dir=work_dir))
    feats = release_features()
    quiet = not datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dd = datasets.DatasetDict({
            name: datasets.Dataset.from_generator(split_rows, features=feats, cache_dir=str(tmp / name),
                                                  gen_kwargs={"split": name, "per_gen": n, "split_seed": k},
                                                  writer_batch_size=256)
            for k, (name, n) in enumerate((("train", n_train), ("validation", n_eval)))})
        dd.save_to_disk(str(path), max_shard_size="500MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not quiet:
            datasets.enable_progress_bars()
    return {"train": 2 * n_train * len(gens), "validation": 2 * n_eval * len(gens),
            "rows": 2 * (n_train + n_eval) * len(gens), "image_size": [lo, hi]}


def _scale_row(seed: int, label: int, gen: str, file_id: str, rng: np.random.Generator, lo: int, hi: int) -> dict:
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    img = make_image(seed, label, size=(h, w))
    return {"image": {"bytes": png_bytes(img), "path": None}, "height": h, "width": w, "label": label,
            "generator": gen, "file_id": file_id, "description": "", "positive_prompt": "a photo" if label else "",
            "negative_prompt": "", "conditioning": "", "origin_dataset": "GenImage" if label else "COCO",
            "paired_real_images": []}
