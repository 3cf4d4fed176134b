"""The reference-exact model input against goldens made by running AI-GenBench's own code.

`tests/data/model_input_golden.npz` holds, for every (image, eval position) below and each eval strategy
(resize, center_crop, five_crop with its centre-crop fallback), the crops AI-GenBench's evaluation pipeline hands
its model (mandatory_val_preprocessing -> make_val_crops -> ToImage/ToDtype/Normalize with CLIP statistics), and
the deterministic part of its baseline training augmentation at several (position, copy) pairs. It was written by
a script that imports the reference repository (MI-BioLab/AI-GenBench, training_and_evaluation/) and runs its
PyTorchDataset / EvaluationImageAugmenter / TrainImageAugmenter with the base seed 4321; the images come from
`golden_image` below. Per crop it stores the sha256 of the float32 bytes, the float64 sum and sum of squares and
the values at SAMPLES fixed indices (the whole tensors would take ~100 MB).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TEST_DATA

GOLDEN_PATH = TEST_DATA / "model_input_golden.npz"
# (height, width): small (padded by centre crop), a grey image, large ones cropped to 1080, and sides at the
# five-crop fallback's edge (<= 224 falls back to one centre crop, 225 does not).
GOLDEN_IMAGE_SIZES = [(48, 64), (257, 300), (720, 1280), (1200, 900), (1350, 1500), (1081, 1081), (200, 640),
                      (224, 500), (225, 300)]
# Positions 0..19 cover every branch of the chain for every image (base seed 4321): a float tensor left by a
# bilinear/bicubic random-resized crop (0, 2, 13), a LANCZOS crop that leaves a PIL image (18, 24; 35 with a
# later JPEG), grayscale (8, 29, 31), the last JPEG (7, 14); the large images are also cropped to 1080.
EVAL_POSITIONS = [*range(20), 23, 24, 28, 29, 32, 35]
# (image, position in the window's training subset, copy): the deterministic training augmentation.
TRAIN_CASES = [(0, 0, 0), (0, 5, 3), (1, 1, 1), (1, 40, 0), (2, 3, 2), (2, 17, 0), (3, 2, 1), (3, 250, 3),
               (4, 7, 0), (4, 1234, 2), (5, 11, 3), (5, 99, 1), (6, 4, 0), (6, 77, 2), (7, 9, 1), (7, 500, 3),
               (8, 6, 2), (8, 3001, 0), (1, 12, 0), (1, 12, 1), (1, 12, 2), (1, 12, 3), (6, 23, 1), (2, 64, 3)]
SAMPLES = 192
TOL = 1e-6


def golden_image(index: int) -> np.ndarray:
    """Deterministic synthetic uint8 RGB image from integer arithmetic only (identical everywhere)."""
    h, w = GOLDEN_IMAGE_SIZES[index]
    y = np.arange(h, dtype=np.uint64)[:, None, None]
    x = np.arange(w, dtype=np.uint64)[None, :, None]
    c = np.arange(3, dtype=np.uint64)[None, None, :]
    k = np.uint64(index + 11)
    texture = (((x * np.uint64(73856093)) ^ (y * np.uint64(19349663)) ^ (c * np.uint64(83492791))
                ^ (k * np.uint64(2654435761))) & np.uint64(0xFFFFFFFF)) >> np.uint64(24)
    gradient = (x * np.uint64(200)) // np.uint64(max(w - 1, 1)) + (y * np.uint64(55)) // np.uint64(max(h - 1, 1))
    block = np.uint64(8) * (index + 1)
    checker = (((x // block) + (y // block)) % np.uint64(2)) * np.uint64(40)
    value = gradient.astype(np.int64) + checker.astype(np.int64) + (texture.astype(np.int64) >> 2) - 32
    value = value + (c.astype(np.int64) * 30 if index != 1 else 0)  # image 1 is grey (equal channels)
    img = np.clip(value, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(img, (h, w, 3)))


def sample_indices(n: int) -> np.ndarray:
    """SAMPLES fixed flat indices into a tensor of n values (integer arithmetic, spread over the tensor)."""
    return (np.arange(SAMPLES, dtype=np.int64) * 2654435761 + 977) % int(n)


def _golden() -> dict:
    if not GOLDEN_PATH.is_file():
        pytest.fail(f"{GOLDEN_PATH} missing: regenerate it by running the reference's code (see this module's doc)")
    with np.load(GOLDEN_PATH, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def _sha(x: np.ndarray) -> str:
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return h.hexdigest()


def _versions_differ(meta: dict) -> dict:
    from benchmark.degradations import _library_versions

    installed = dict(_library_versions())
    return {k: (v, installed.get(k)) for k, v in meta["versions"].items() if k in installed and installed[k] != v}


def _compare(g: dict, row: int, x: np.ndarray) -> tuple[float, int]:
    """(largest |difference| at the sampled values, exact hash matches) of model input x against golden row."""
    n, off = int(g["eval_n_crops"][row]), int(g["eval_crop_offset"][row])
    where = (int(g["eval_image"][row]), int(g["eval_position"][row]), str(g["eval_strategy"][row]))
    assert x.dtype == np.float32 and x.shape == (n, 3, 224, 224), (where, x.dtype, x.shape)
    worst, exact = 0.0, 0
    for j in range(n):
        flat = x[j].reshape(-1)
        worst = max(worst, float(np.abs(flat[sample_indices(flat.size)] - g["crop_samples"][off + j]).max()))
        s64 = flat.astype(np.float64)
        assert abs(s64.sum() - g["crop_sum"][off + j]) <= TOL * flat.size, where
        assert abs((s64 ** 2).sum() - g["crop_sumsq"][off + j]) <= 10 * TOL * flat.size, where
        exact += _sha(x[j]) == str(g["crop_sha256"][off + j])
    return worst, exact


def test_golden_images_are_the_generators():
    g = _golden()
    for i, digest in enumerate(g["meta"]["image_sha256"]):
        img = golden_image(i)
        h = hashlib.sha256(repr(tuple(img.shape)).encode())
        h.update(img.tobytes())
        assert h.hexdigest() == digest, f"golden_image({i}) changed; the goldens no longer match their inputs"


def test_golden_covers_every_branch():
    """At least 100 model inputs per strategy, over float-tensor, representable-tensor and PIL chain outputs,
    grayscale, large images cropped to 1080, and both five-crop outcomes (5 crops, centre-crop fallback)."""
    g = _golden()
    for strategy in ("resize", "center_crop", "five_crop"):
        sel = g["eval_strategy"] == strategy
        assert sel.sum() >= 100
        kinds = set(zip(g["eval_chain_type"][sel].tolist(), g["eval_representable"][sel].tolist(), strict=True))
        assert kinds == {("tensor", True), ("tensor", False), ("Image", True)}, kinds
    five = g["eval_strategy"] == "five_crop"
    assert set(g["eval_n_crops"][five].tolist()) == {1, 5}
    large = [i for i, (h, w) in enumerate(GOLDEN_IMAGE_SIZES) if max(h, w) > 1080]
    assert set(g["eval_image"].tolist()) >= set(large) and {8, 29} & set(g["eval_position"].tolist())


def _all_model_inputs(g: dict):
    """genshift's reference model input for every golden row (the chain runs once per image and position)."""
    from benchmark.degradations import degrade_reference
    from benchmark.model_input import normalize, reference_crops, to_float

    chains: dict = {}
    for row in range(len(g["eval_image"])):
        i, pos, strategy = int(g["eval_image"][row]), int(g["eval_position"][row]), str(g["eval_strategy"][row])
        if (i, pos) not in chains:
            chains[(i, pos)] = degrade_reference(golden_image(i), pos)[0]
        crops = [normalize(to_float(c, 224), "clip") for c in reference_crops(chains[(i, pos)], 224, strategy)]
        yield row, torch.stack(crops).numpy()


def test_reference_model_input_equals_reference_goldens():
    """Every golden model input, to 1e-6 at the sampled values (and sums); bit-exact when the libraries match."""
    g = _golden()
    worst, exact = 0.0, 0
    for row, x in _all_model_inputs(g):
        w, e = _compare(g, row, x)
        worst, exact = max(worst, w), exact + e
    assert worst <= TOL, f"largest difference to the reference's model input: {worst}"
    n = len(g["crop_sha256"])
    if exact != n and not _versions_differ(g["meta"]):
        pytest.fail(f"{n - exact}/{n} crops are within {TOL} but not bit-identical to the reference's, with the "
                    f"golden's library versions {g['meta']['versions']}")


def _cli_cases(g: dict) -> list[int]:
    """One golden row per (strategy, chain output kind, crop count), plus a large image per strategy."""
    seen, rows = set(), []
    for row in range(len(g["eval_image"])):
        kind = (str(g["eval_strategy"][row]), str(g["eval_chain_type"][row]), bool(g["eval_representable"][row]),
                int(g["eval_n_crops"][row]), max(GOLDEN_IMAGE_SIZES[int(g["eval_image"][row])]) > 1080)
        if kind not in seen:
            seen.add(kind)
            rows.append(row)
    return rows


def test_cli_degrade_model_input_equals_reference_goldens(tmp_path):
    """`genshift data degrade IMAGE --position P --profile aigenbench-v1 --model-input M --normalize clip --out X.npy`
    writes exactly X.npy: the reference's model input (PNG input: lossless, decoded to the same pixels)."""
    from PIL import Image

    from benchmark.cli import main

    g = _golden()
    rows = _cli_cases(g)
    assert len(rows) >= 12
    for row in rows:
        i, pos, strategy = int(g["eval_image"][row]), int(g["eval_position"][row]), str(g["eval_strategy"][row])
        src = tmp_path / f"img{i}.png"
        if not src.is_file():
            Image.fromarray(golden_image(i)).save(src)
        out = tmp_path / f"x_{row}.npy"
        rc = main(["data", "degrade", str(src), "--position", str(pos), "--profile", "aigenbench-v1",
                   "--model-input", strategy, "--normalize", "clip", "--out", str(out)])
        assert rc == 0
        assert sorted(p.name for p in tmp_path.glob(f"x_{row}*")) == [out.name]  # exactly X.npy, nothing else
        worst, _ = _compare(g, row, np.load(out))
        assert worst <= TOL, (i, pos, strategy, worst)


def test_cli_model_input_normalisations_and_errors(tmp_path, capsys):
    from PIL import Image

    from benchmark.cli import main
    from benchmark.model_input import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    src = tmp_path / "img.png"
    Image.fromarray(golden_image(8)).save(src)
    outs = {}
    for norm in ("clip", "imagenet", "none"):
        outs[norm] = tmp_path / f"{norm}.npy"
        assert main(["data", "degrade", str(src), "--position", "3", "--model-input", "five_crop", "--normalize",
                     norm, "--out", str(outs[norm]), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["output_shape"] == [5, 3, 224, 224] and doc["normalize"] == norm
    raw = np.load(outs["none"]).astype(np.float64)
    assert raw.min() >= 0 and raw.max() <= 1
    for norm, (m, s) in (("clip", (CLIP_MEAN, CLIP_STD)), ("imagenet", (IMAGENET_MEAN, IMAGENET_STD))):
        want = (raw - np.array(m)[None, :, None, None]) / np.array(s)[None, :, None, None]
        assert np.abs(np.load(outs[norm]) - want).max() < 1e-5
    assert main(["data", "degrade", str(src), "--position", "3", "--normalize", "clip", "--out",
                 str(tmp_path / "y")]) == 2
    assert "--normalize applies to --model-input only" in capsys.readouterr().err


# -- a run's eval cache against the goldens ------------------------------------------------------------------------
# Eval split of the folder dataset below: golden images as fakes of two generators and as reals (10 positions, all
# below 20: the goldens hold every (image, position < 20) pair). Some are large (cropped to 1080), one is grey.
_EVAL_FAKES = {"GenA": [2, 4, 6], "GenB": [3, 5]}
_EVAL_REALS = [0, 1, 7, 8, 6]


def _golden_folder(root: Path) -> dict[str, int]:
    """ROOT/{train,eval}/{real,GenA,GenB}/*.png + timeline; returns {eval file path: golden image index}."""
    from benchmark.testdata import _write_png, make_image

    where: dict[str, int] = {}
    for cls, images in [*_EVAL_FAKES.items(), ("real", _EVAL_REALS)]:
        for j, i in enumerate(images):
            rel = f"eval/{cls}/{j:03d}.png"
            _write_png(root / rel, golden_image(i))
            where[rel] = i
    for cls, n in (("GenA", 2), ("GenB", 2), ("real", 4)):
        for j in range(n):
            _write_png(root / f"train/{cls}/{j:03d}.png", make_image(100 * len(cls) + j, int(cls != "real")))
    (root / "timeline.yaml").write_text("GenA: 2020-01-01\nGenB: 2021-01-01\n")
    return where


@pytest.fixture(scope="module")
def golden_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden-folder")
    return root, _golden_folder(root)


def _run_cfg(tmp: Path, root: Path, strategy: str, **over) -> dict:
    from protocols.config import resolve_config

    base = {"dataset": f"folder:{root}", "detector": "resnet18_probe", "pretrained": "none", "seed": 0,
            "runs_dir": str(tmp / "runs"), "cache_dir": str(tmp / "cache"), "experiment": f"ref-{strategy}",
            "loggers": [], "threads": 2, "data": {"check": False},
            "benchmark": {"generators_per_window": 1},
            "eval": {"pipeline": "reference", "input": strategy, "batch_size": 4},
            "train": {"augmentation_factor": 1, "batch_size": 4, "num_workers": 0, "augmentation": "none"}}
    for k, v in over.items():
        base[k] = base[k] | v if isinstance(v, dict) else v
    return resolve_config("smoke", overrides=[base])


@pytest.mark.parametrize("strategy", ["resize", "center_crop", "five_crop"])
def test_run_eval_cache_equals_reference_goldens(tmp_path, golden_folder, strategy):
    """A run with eval.pipeline=reference: the crops its eval cache hands the detector module, normalised by the
    module itself (CLIP statistics), equal AI-GenBench's model inputs for those images and positions."""
    from benchmark.reference_eval_cache import open_reference_store
    from benchmark.sources import load_source
    from detectors import create_detector
    from protocols.crop_data import ReferenceEvalStore
    from protocols.engine import run_experiment
    from protocols.module import DetectorModule
    from protocols.speed import resolve_train_cfg

    root, where = golden_folder
    cfg = _run_cfg(tmp_path, root, strategy)
    run = run_experiment(cfg, progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["eval_pipeline"] | {"mean": None, "std": None} == {
        "pipeline": "reference", "input": strategy, "normalize": "clip", "size": 224, "mean": None, "std": None}
    ekey = info["caches"]["eval_inputs"]
    assert ekey["cached"] and ekey["pipeline"] == "reference"
    store = open_reference_store(Path(ekey["path"]))
    assert store is not None
    manifest = load_source(cfg["dataset"], Path(cfg["cache_dir"]), progress=False)
    path_of = {s.id: s.path for s in manifest.split("eval")}
    with np.load(run / "window_0" / "predictions.npz") as z:
        ids = z["fused_identifiers"]
        crop_keys = {k for k in z.files if k.startswith("crop_")}
        assert str(z["eval_pipeline"]) == "reference" and str(z["eval_input"]) == strategy
    assert bool(crop_keys) == (strategy == "five_crop")
    det = create_detector("resnet18_probe", pretrained="none")
    module = DetectorModule(det, resolve_train_cfg(cfg, det), 1)
    g = _golden()
    golden_row = {(int(i), int(p), str(s)): r for r, (i, p, s) in
                  enumerate(zip(g["eval_image"], g["eval_position"], g["eval_strategy"], strict=True))}
    ds = ReferenceEvalStore(store)
    worst, exact, n = 0.0, 0, 0
    for pos, sid in enumerate(ids):
        x, p = ds[pos]
        assert p == pos
        image = where[Path(path_of[int(sid)]).relative_to(root).as_posix()] \
            if Path(path_of[int(sid)]).is_absolute() else where[path_of[int(sid)]]
        w, e = _compare(g, golden_row[(image, pos, strategy)], module.normalise(x).numpy())
        worst, exact, n = max(worst, w), exact + e, n + len(x)
    assert worst <= TOL, worst
    if not _versions_differ(g["meta"]):
        assert exact == n, f"{n - exact}/{n} cached crops are not bit-identical to the reference's"


def test_cache_hands_the_detector_the_same_tensors_as_the_images(tmp_path, golden_folder):
    """Cached crops (uint8 where k/255 restores them, float32 otherwise) decode bit for bit to the crops computed
    from the images, in batches as the scoring loop reads them — float-output positions included."""
    from types import SimpleNamespace

    from benchmark.eval_plan import make_eval_plan
    from benchmark.model_input import F32
    from benchmark.sources import load_source
    from benchmark.timeline import generator_id_to_name
    from protocols.crop_data import ReferenceEvalStore, ReferenceEvalStream, crop_collate
    from protocols.pipeline import InputPipeline
    from protocols.run_inputs import eval_pixels

    root, _ = golden_folder
    manifest = load_source(f"folder:{root}", tmp_path, progress=False)
    # Positions 0..31: the 10 eval images repeated, so that every branch lands on some position.
    plan = make_eval_plan(manifest.split("eval"), generator_id_to_name(manifest.timeline))
    bench = SimpleNamespace(manifest=manifest, plan=SimpleNamespace(sample_ids=np.resize(plan.sample_ids, 32)))
    cfg = {"degradation": {"profile": "aigenbench-v1", "base_seed": 4321}}
    for strategy in ("resize", "five_crop"):
        pipe = InputPipeline("reference", strategy, "clip", (0.0,) * 3, (1.0,) * 3, 224)
        cached, key = eval_pixels(cfg, bench, pipe, tmp_path / "cache", True, 2, False)
        stream, _ = eval_pixels(cfg, bench, pipe, tmp_path / "cache", False, 1, False)
        assert isinstance(cached, ReferenceEvalStore) and isinstance(stream, ReferenceEvalStream)
        kinds = cached.store.index[:, 1]
        assert key["float32_crops"] == int((kinds == F32).sum()) > 0  # float-output positions are in the test
        if strategy == "five_crop":  # crops of k/255 tensors are stored as uint8, the others as float32
            assert key["uint8_crops"] > 0
        for lo in range(0, 32, 8):  # batches of 8 positions, as EvalBatches deals them
            idx = list(range(lo, lo + 8))
            xc, pc = crop_collate(cached.__getitems__(idx))
            xs, ps = crop_collate([stream[i] for i in idx])
            assert torch.equal(pc, ps) and torch.equal(xc, xs), (strategy, lo)
        again, key2 = eval_pixels(cfg, bench, pipe, tmp_path / "cache", True, 1, False)  # the store is reused
        want = crop_collate(cached.__getitems__(list(range(32))))[0]
        assert key2["hit"] and torch.equal(crop_collate(again.__getitems__(list(range(32))))[0], want)
        # a damaged chunk is announced and rebuilt, never trusted: a short file whatever cache.verify, a flipped
        # byte when every chunk is hashed (`sample` hashes one chunk at random)
        raw = sorted((Path(key["path"]) / "chunks").glob("*.f32.npy"))[-1]
        raw.write_bytes(raw.read_bytes()[:-1])
        rebuilt, key3 = eval_pixels(cfg, bench, pipe, tmp_path / "cache", True, 1, False)
        assert not key3["hit"] and torch.equal(crop_collate(rebuilt.__getitems__(list(range(32))))[0], want)
        data = bytearray(raw.read_bytes())
        data[-100] ^= 0xFF
        raw.write_bytes(bytes(data))
        rebuilt, key4 = eval_pixels(cfg, bench, pipe, tmp_path / "cache", True, 1, False, {"verify": "full"})
        assert not key4["hit"] and torch.equal(crop_collate(rebuilt.__getitems__(list(range(32))))[0], want)


# -- the reference's deterministic training augmentation ------------------------------------------------------------
def test_aigenbench_baseline_deterministic_part_equals_reference_goldens():
    """Copy c of the row at position p (seed (4321 + c·2^27) mod 2^31 + p): bit-identical to the reference's, with
    every step (crop-if-large, RRC, colour jitter, grayscale, CoarseDropout, GaussNoise, blur, JPEG) fired in some
    case. Tolerance 0: the same library classes draw the same numbers; any difference is a bug or a library change."""
    from benchmark.reference_train_augment import STEP_NAMES, deterministic_copy

    g = _golden()
    fired: set[str] = set()
    mismatches = []
    for j, (i, pos, copy) in enumerate(zip(g["train_image"], g["train_position"], g["train_copy"], strict=True)):
        trace: list[str] = []
        x = deterministic_copy(golden_image(int(i)), int(pos), int(copy), trace=trace).numpy()
        fired.update(trace)
        assert list(x.shape) == g["meta"]["train_shapes"][j], (i, pos, copy, x.shape)
        flat = x.reshape(-1)
        worst = float(np.abs(flat[sample_indices(flat.size)] - g["train_samples"][j]).max())
        if _sha(x) != str(g["train_sha256"][j]) or worst > 0:
            mismatches.append((int(i), int(pos), int(copy), worst))
    assert fired == set(STEP_NAMES), f"steps never fired in the goldens: {set(STEP_NAMES) - fired}"
    if mismatches:
        pytest.fail(f"{len(mismatches)}/{len(g['train_image'])} deterministic copies differ from the reference's "
                    f"(image, position, copy, largest sampled difference): {mismatches[:10]}; library versions "
                    f"differing from the golden's: {_versions_differ(g['meta']) or 'none'}")
