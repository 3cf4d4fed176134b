"""Cache budgets and the training-copy policy (protocols/cache_plan.py): estimates before any decode, one-line
refusals (exit 2, nothing built), `auto` choosing cached / per_window / stream, identical predictions whichever
is chosen, and `genshift cache info|verify|build`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.array_store import describe_stores, store_dir
from protocols.cache_plan import CacheBudgetError, plan_caches, refuse_over_budget
from protocols.cli import main
from protocols.config import resolve_config
from protocols.run_setup import create_run_detector, prepare_benchmark

SMOKE = ["--preset", "smoke", "--no-progress", "--no-leaderboard", "--set", "benchmark.generators_per_window=12",
         "--set", "threads=1"]


def _fresh_cache(tmp_path: Path, cache_dir: Path) -> Path:
    """A cache directory that shares the session's datasets but has no store and no cached data check."""
    from benchmark.sources import load_source

    load_source("synthetic:smoke", cache_dir, progress=False)
    c = tmp_path / "cache"
    c.mkdir()
    (c / "datasets").symlink_to(Path(cache_dir, "datasets").resolve())
    return c


def _cfg(cache: Path, **cache_settings) -> dict:
    return resolve_config("smoke", "smallcnn_tune", overrides=[{
        "cache_dir": str(cache), "benchmark": {"generators_per_window": 12, "type": "continual"},
        "cache": cache_settings, "data": {"check": False}}])  # the smoke data is fine: no decode needed


def test_a_budget_smaller_than_the_stores_is_refused_before_any_decode(tmp_path, cache_dir, capsys):
    cache = _fresh_cache(tmp_path, cache_dir)
    rc = main(["run", *SMOKE, "--detector", "smallcnn_tune", "--cache-dir", str(cache), "--runs-dir",
               str(tmp_path / "runs"), "--set", "cache.max_bytes=1MB", "--set", "cache.train_inputs=cached"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("genshift: error: the caches of this run need ")
    assert describe_stores(cache) == [] and not (cache / "checks").exists()  # no store, no data check: no decode
    assert not (tmp_path / "runs").exists()
    cfg = _cfg(cache)
    cfg["benchmark"]["type"] = "cumulative"
    det, _ = create_run_detector(cfg)
    plan = plan_caches(cfg, prepare_benchmark(cfg, False), det, cache)
    ev, tr = plan.stores["eval_inputs"].bytes, plan.stores["train_inputs"].bytes
    assert ev == 200 * 3 * 56 * 56 + 128 * plan.stores["eval_inputs"].spec.n_chunks  # rows and a header a chunk
    from protocols.cache_plan import human_bytes

    assert f"eval inputs {human_bytes(ev)} + training copies {human_bytes(tr)}" in err
    assert "cache.max_bytes is 1 MB" in err and "nothing was built" in err
    assert "--set cache.train_inputs=stream" in err and "--set cache.eval_inputs=false" in err


def _free_disk_masked(message: str | None) -> str | None:
    """A refusal without its free-disk figure (other processes write to the same disk between two calls)."""
    return None if message is None else re.sub(r"free disk [0-9.]+ [kMGT]?B", "free disk ...", message)


def test_a_declared_detector_is_refused_before_torch_is_imported_on_its_first_run(tmp_path, cache_dir):
    """A named detector declares its metadata in the registry: its first run in an empty cache directory is
    refused from that declaration before torch is imported, nothing built and nothing remembered."""
    cache = _fresh_cache(tmp_path, cache_dir)
    argv = ["run", *SMOKE, "--detector", "smallcnn_probe", "--cache-dir", str(cache), "--runs-dir",
            str(tmp_path / "runs"), "--set", "cache.max_bytes=1MB", "--set", "cache.train_inputs=cached"]
    script = ("import sys; from protocols.cli import main; rc = main(sys.argv[1:]); "
              "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    first = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)
    assert first.returncode == 2, first.stderr
    assert "torch imported: False" in first.stdout
    assert first.stderr.startswith("genshift: error: the caches of this run need ") and \
        first.stderr.strip().count("\n") == 0
    assert "training-copy features" in first.stderr  # the probe's feature stores are estimated too
    assert describe_stores(cache) == [] and not (cache / "checks").exists() and not (tmp_path / "runs").exists()
    assert not (cache / "detectors").exists()  # declared: nothing to remember


def test_no_image_is_decoded_before_a_first_run_is_refused(tmp_path, monkeypatch, capsys):
    """A 224-px probe on a release-format dataset, first run in an empty cache directory: refused (exit 2, one
    line naming the estimate) while every pixel decoder (Pillow's, OpenCV's) counts zero calls."""
    import cv2
    from helpers import write_release_dataset
    from PIL import ImageFile

    root = tmp_path / "release"
    write_release_dataset(root)
    decoded = []
    real_load, real_imdecode = ImageFile.ImageFile.load, cv2.imdecode
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append("pil") or real_load(im))
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: decoded.append("cv2") or real_imdecode(*a, **k))
    rc = main(["run", "--dataset", f"aigenbench:{root}", "--detector", "resnet18_probe", "--pretrained", "none",
               "--no-progress", "--no-leaderboard", "--cache-dir", str(tmp_path / "empty"), "--runs-dir",
               str(tmp_path / "runs"), "--set", "cache.max_bytes=1MB", "--set", "cache.train_inputs=cached"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert re.match(r"genshift: error: the caches of this run need eval inputs [0-9.]+ [kMG]B \+ training copies "
                    r"[0-9.]+ [kMG]B \+ eval features .* = [0-9.]+ [kMG]B, but cache.max_bytes is 1 MB", err), err
    assert decoded == []
    assert describe_stores(tmp_path / "empty") == [] and not (tmp_path / "runs").exists()
    import io

    from helpers import make_image, png_bytes
    from PIL import Image

    data = png_bytes(make_image(0, 0))
    Image.open(io.BytesIO(data)).convert("RGB")
    cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert {"pil", "cv2"} <= set(decoded)  # the hooks do count a decode


@pytest.mark.parametrize("detector", ["smallcnn_tune", "smallcnn_probe", "torchvision:resnet18_probe"])
def test_the_early_budget_check_refuses_exactly_what_the_full_plan_refuses(detector, tmp_path, cache_dir):
    """For every policy and budget around the stores' sizes: the check made from the detector's description
    before it is built (declared by a named detector; remembered for a family pattern's model) refuses iff the
    full plan refuses, with the same line."""
    from protocols.detector_memo import describe_detector, recall_meta, remember_meta

    cache = _fresh_cache(tmp_path, cache_dir)
    cfg = _cfg(cache) | {"detector": detector, "pretrained": "none"}
    declared = ":" not in detector
    assert (describe_detector(cfg, cache) is not None) == declared  # a pattern's model is learnt when built
    det, _ = create_run_detector(cfg)
    remember_meta(cfg, cache, det)
    assert (recall_meta(cfg, cache) is None) == declared  # a declared detector is never remembered
    described = describe_detector(cfg, cache)
    assert (described.meta.input_size, described.meta.feature_dim, described.is_probe) == \
        (det.meta.input_size, det.meta.feature_dim, det.is_probe)
    if not declared:
        assert recall_meta(cfg | {"pretrained": "default"}, cache) is None  # another source: not this description
    bench = prepare_benchmark(cfg, False)
    full = plan_caches(cfg, bench, det, cache)
    sizes = sorted({s.bytes for s in full.stores.values()} | {full.total})
    budgets = [None, 0] + [b + d for b in sizes for d in (-1, 0)] + [full.total + sum(sizes)]
    refused = 0
    for policy in ("auto", "cached", "per_window", "stream"):
        for budget in budgets:
            c = _cfg(cache, max_bytes=budget, train_inputs=policy) | {"detector": detector, "pretrained": "none"}
            outcomes = []
            for check, who in ((plan_caches, det), (refuse_over_budget, described)):
                try:
                    check(c, bench, who, cache)
                    outcomes.append(None)
                except CacheBudgetError as e:
                    outcomes.append(_free_disk_masked(str(e)))
            assert outcomes[0] == outcomes[1], (policy, budget)
            refused += outcomes[0] is not None
    assert refused >= 6


def test_a_remembered_description_is_refused_when_damaged_or_of_other_code(tmp_path, monkeypatch):
    from detectors import register_detector
    from detectors import registry as reg
    from protocols import detector_memo

    monkeypatch.setattr(reg, "_exact", dict(reg._exact))
    monkeypatch.setattr(reg, "_declared", dict(reg._declared))

    cache = tmp_path / "c"
    cfg = _cfg(cache) | {"detector": "torchvision:resnet18_probe", "pretrained": "none"}  # undeclared: remembered
    det, _ = create_run_detector(cfg)
    detector_memo.remember_meta(cfg, cache, det)
    (memo,) = (cache / detector_memo.MEMO_DIR).glob("*.json")
    doc = json.loads(memo.read_text())
    doc["meta"]["input_size"] = "224"
    memo.write_text(json.dumps(doc))
    assert detector_memo.recall_meta(cfg, cache) is None  # wrong type: not used
    memo.write_bytes(b"\x80\x04not json")
    assert detector_memo.recall_meta(cfg, cache) is None
    detector_memo.remember_meta(cfg, cache, det)
    assert detector_memo.recall_meta(cfg, cache).meta.input_size == det.meta.input_size
    doc = json.loads(memo.read_text())
    doc["key"]["code"] = "0" * 64  # written by another genshift or library version
    memo.write_text(json.dumps(doc))
    assert detector_memo.recall_meta(cfg, cache) is None
    register_detector("memo_test_tune", lambda name, pretrained="default", **kw: det)
    assert detector_memo.recall_meta(cfg | {"detector": "memo_test_tune"}, cache) is None  # code not fingerprinted
    detector_memo.remember_meta(cfg | {"detector": "memo_test_tune"}, cache, det)
    assert len(list((cache / detector_memo.MEMO_DIR).glob("*.json"))) == 1


def test_auto_keeps_copies_while_they_fit_then_one_window_then_streams(tmp_path, cache_dir):
    cache = _fresh_cache(tmp_path, cache_dir)
    cfg = _cfg(cache)
    det, _ = create_run_detector(cfg)
    bench = prepare_benchmark(cfg, False)
    full = plan_caches(cfg, bench, det, cache)
    ev = full.stores["eval_inputs"].bytes
    union = full.stores["train_inputs"].bytes
    windows = [s.estimate_bytes() for s in full.stores["train_inputs"].window_specs or []]
    assert full.policy("train_inputs") == "cached" and "auto: the copies' store" in full.stores["train_inputs"].reason
    per_window = plan_caches(_cfg(cache, max_bytes=ev + union - 1), bench, det, cache)
    assert per_window.policy("train_inputs") == "per_window"
    largest = max(s.estimate_bytes() for s in per_window.stores["train_inputs"].window_specs)
    assert not windows and per_window.stores["train_inputs"].bytes == largest < union
    stream = plan_caches(_cfg(cache, max_bytes=ev + largest - 1), bench, det, cache)
    assert stream.policy("train_inputs") == "stream" and stream.total == ev
    assert "streamed by 0 DataLoader worker(s)" in stream.stores["train_inputs"].reason
    with pytest.raises(CacheBudgetError, match=r"need eval inputs .* but cache\.max_bytes is"):
        plan_caches(_cfg(cache, max_bytes=ev - 1), bench, det, cache)
    with pytest.raises(CacheBudgetError, match="training copies"):
        plan_caches(_cfg(cache, max_bytes=ev + largest - 1, train_inputs="per_window"), bench, det, cache)
    assert plan_caches(_cfg(cache, max_bytes=ev - 1, eval_inputs=False, train_inputs="stream"), bench, det,
                       cache).total == 0


def _logits(run: Path) -> list[np.ndarray]:
    info = json.loads((run / "run.json").read_text())
    return [np.load(run / f"window_{k}" / "predictions.npz")["fused_logits"] for k in range(len(info["windows"]))]


@pytest.mark.slow  # ~3 min on 2 cores: four smoke runs
def test_predictions_are_identical_whichever_policy(tmp_path, cache_dir):
    """Training copies cached, one window at a time, streamed, and every cache off: the same logits bit for bit
    (copies depend on (seed, id, copy) only); each run records its policy and why; per-window stores are deleted."""
    cache = _fresh_cache(tmp_path, cache_dir)
    runs = {}
    for name, sets in {"cached": ["cache.train_inputs=cached"], "per_window": ["cache.train_inputs=per_window"],
                       "stream": ["cache.train_inputs=stream", "train.num_workers=2"],
                       "off": ["cache.train_inputs=stream", "cache.eval_inputs=false"]}.items():
        argv = ["run", *SMOKE, "--detector", "smallcnn_tune", "--benchmark-type", "continual", "--cache-dir",
                str(cache), "--runs-dir", str(tmp_path / "runs"), "--experiment", name]
        assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
        runs[name] = tmp_path / "runs" / name
    ref = _logits(runs["cached"])
    assert len(ref) == 2
    for name, run in runs.items():
        assert all(np.array_equal(a, b) for a, b in zip(ref, _logits(run), strict=True)), name
        plan = json.loads((run / "run.json").read_text())["caches"]["plan"]
        assert plan["stores"]["train_inputs"]["policy"] == ("stream" if name == "off" else name)
        assert plan["stores"]["train_inputs"]["reason"].startswith("cache.train_inputs is")
    assert [s["kind"] for s in describe_stores(cache)] == ["eval", "train_inputs"]  # window stores gone
    assert store_dir(cache, "train_inputs", {}).parent.is_dir()


def test_cache_cli_verify_finds_damage_and_repair_lets_the_next_build_fix_it(tmp_path, cache_dir, capsys):
    cache = _fresh_cache(tmp_path, cache_dir)
    build = ["cache", "build", "--preset", "smoke", "--detector", "smallcnn_tune", "--cache-dir", str(cache),
             "--no-progress", "--set", "cache.chunk_mb=0.5", "--set", "data.check=false"]
    assert main(build) == 0
    out = capsys.readouterr().out
    assert "eval inputs: store" in out and "complete" in out
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.count(" ok (") == 2
    eval_dir = next((cache / "eval").iterdir())
    chunk = sorted((eval_dir / "chunks").glob("*.npy"))[1]
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0x10
    chunk.write_bytes(bytes(raw))
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 1
    assert "DAMAGED: chunk 1:" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache-dir", str(cache), "--repair"]) == 0
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert "(incomplete: 3/4 chunks" in capsys.readouterr().out
    assert main(build) == 0 and main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.count(" ok (") == 2


def test_reference_and_five_crop_eval_stores_are_planned_counted_and_listed(tmp_path, cache_dir):
    """The native five_crop store is a chunked `eval` store of one row per crop; the reference pipeline's own store
    (`eval_reference/`) counts at its upper bound until built, then at its size on disk, and `genshift cache`
    lists, verifies and clears it; aigenbench-baseline copies are always streamed."""
    from benchmark.reference_eval_cache import build_or_load_reference_inputs
    from protocols.cache_cli import cmd_clear, cmd_info, cmd_verify

    cache = _fresh_cache(tmp_path, cache_dir)
    cfg = _cfg(cache)
    det, _ = create_run_detector(cfg)
    bench = prepare_benchmark(cfg, False)
    n = len(bench.plan.sample_ids)
    single = plan_caches(cfg, bench, det, cache).stores["eval_inputs"]
    cfg["eval"]["input"] = "five_crop"
    five = plan_caches(cfg, bench, det, cache).stores["eval_inputs"]
    assert five.spec.kind == "eval" and five.bytes - 128 * five.spec.n_chunks == 5 * n * 3 * 56 * 56
    assert single.spec.digest != five.spec.digest
    cfg["eval"] |= {"pipeline": "reference", "input": "center_crop"}
    cfg["train"]["augmentation"] = "aigenbench-baseline"
    plan = plan_caches(cfg, bench, det, cache)
    ref = plan.stores["eval_inputs"]
    assert ref.spec.kind == "eval_reference" and ref.present == 0
    assert ref.bytes >= n * 3 * 56 * 56 * 4 and plan.stores["train_inputs"].policy == "stream"
    with pytest.raises(CacheBudgetError):
        plan_caches(cfg | {"cache": cfg["cache"] | {"max_bytes": ref.bytes - 1}}, bench, det, cache)
    deg = cfg["degradation"]
    _, key = build_or_load_reference_inputs(bench.manifest, bench.plan.sample_ids, deg["profile"], deg["base_seed"],
                                            56, "center_crop", cache, workers=1, progress=False)
    built = plan_caches(cfg, bench, det, cache).stores["eval_inputs"]
    on_disk = sum(f.stat().st_size for f in (Path(key["path"]) / "chunks").glob("*.npy"))
    assert built.present == built.bytes == on_disk <= ref.bytes
    args = type("A", (), {"cache_dir": str(cache), "kind": ["eval_reference"], "json": None, "repair": False})()
    stores = describe_stores(cache)
    assert [(s["kind"], s["complete"]) for s in stores] == [("eval_reference", True)]
    assert cmd_info(args) == 0 and cmd_verify(args) == 0
    next((Path(key["path"]) / "chunks").glob("*.npy")).write_bytes(b"planted")
    assert cmd_verify(args) == 1
    assert cmd_clear(args) == 0 and describe_stores(cache) == []
