"""Cache budgets and the training-copy policy (protocols/cache_plan.py): estimates before any decode, one-line
refusals (exit 2, nothing built), `auto` choosing cached / per_window / stream, identical predictions whichever
is chosen, and `genshift cache info|verify|build`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.array_store import describe_stores, store_dir
from protocols.cache_plan import CacheBudgetError, plan_caches
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
