"""Caches: stores detect corruption and rebuild; cached pixels equal streamed ones; whole runs give
identical predictions with every cache on and off; `genshift cache info|clear`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.array_store import ChunkedArray, Field, describe_stores, make_spec, store_dir
from benchmark.eval_cache import build_or_load_eval_inputs, degraded_input, eval_jobs
from benchmark.sources import load_source
from benchmark.store_build import cached_store
from benchmark.train_cache import build_or_load_train_inputs
from protocols.cached_data import ArrayTrainCopies
from protocols.config import resolve_config
from protocols.data import TrainCopies
from protocols.engine import run_experiment


def _row(i):
    return np.full((6,), i, dtype=np.float32)


def test_store_hit_then_corruption_and_key_change_rebuild(tmp_path, capsys):
    calls = []

    def build(i):
        calls.append(i)
        return _row(i)

    def spec(key):
        return make_spec("features", key, 4, {"features": Field("float32", (6,))}, chunk_bytes=48)  # 2 rows a chunk

    key = {"what": "x", "v": 1}
    a, info = cached_store(tmp_path, spec(key), build, list(range(4)))
    assert not info["hit"] and len(calls) == 4 and isinstance(a["features"], ChunkedArray)
    b, info = cached_store(tmp_path, spec(key), build, list(range(4)))
    assert info["hit"] and len(calls) == 4 and np.array_equal(a["features"][:], b["features"][:])
    chunk = store_dir(tmp_path, "features", key) / "chunks" / "000001.features.npy"
    raw = bytearray(chunk.read_bytes())
    raw[-3] ^= 0xFF  # one flipped bit pattern in the payload, same size: found by hashing (full verification)
    chunk.write_bytes(bytes(raw))
    c, info = cached_store(tmp_path, spec(key), build, list(range(4)), verify="full")
    assert not info["hit"] and calls[4:] == [2, 3] and np.array_equal(c["features"][:], np.stack([_row(i) for i in range(4)]))
    assert "does not match its sha256" in capsys.readouterr().err
    chunk.write_bytes(chunk.read_bytes()[:-10])  # truncated: found by the size check of every start
    cached_store(tmp_path, spec(key), build, list(range(4)), verify="fast")
    assert calls[6:] == [2, 3] and "bytes, expected" in capsys.readouterr().err
    cached_store(tmp_path, spec({"what": "x", "v": 2}), build, list(range(4)))  # another key: another store
    assert len(calls) == 12 and len(describe_stores(tmp_path)) == 2
    d, info = cached_store(None, spec(key), build, list(range(4)))  # no cache dir: built in memory, nothing written
    assert info["path"] is None and isinstance(d["features"], np.ndarray) and len(calls) == 16


@pytest.fixture(scope="module")
def smoke(cache_dir):
    return load_source("synthetic:smoke", cache_dir, progress=False)


def test_eval_cache_equals_streamed_pixels_and_is_keyed_by_input(smoke, tmp_path):
    ids = [s.id for s in smoke.split("eval")][:10]
    args = (smoke, ids, "aigenbench-v1", 4321)
    arr, key = build_or_load_eval_inputs(*args, 64, "center_crop", tmp_path, workers=2, progress=False)
    streamed = np.stack([degraded_input(*j) for j in eval_jobs(*args, 64, "center_crop")])
    assert arr.dtype == np.uint8 and arr.shape == (10, 3, 64, 64) and np.array_equal(arr, streamed)
    again, key2 = build_or_load_eval_inputs(*args, 64, "center_crop", tmp_path, workers=1, progress=False)
    assert key2["hit"] and key2["digest"] == key["digest"] and np.array_equal(again, arr)
    mem, key3 = build_or_load_eval_inputs(*args, 64, "center_crop", None, workers=1, progress=False)
    assert key3["path"] is None and np.array_equal(mem, arr)
    _, other = build_or_load_eval_inputs(*args, 48, "resize", tmp_path, workers=1, progress=False)
    assert other["digest"] != key["digest"] and other["input_size"] == 48 and other["input_strategy"] == "resize"
    assert key["degradation"]["versions"]["opencv"] and key["manifest_checksum"] == smoke.checksum
    five, key5 = build_or_load_eval_inputs(*args, 64, "five_crop", tmp_path, workers=1, progress=False)
    assert five.shape == (50, 3, 64, 64) and key5["digest"] != key["digest"]  # chunked store: a row per crop
    assert np.array_equal(five[15:20], degraded_input(*eval_jobs(*args, 64, "five_crop")[3]))
    with pytest.raises(ValueError, match="unknown eval input strategy"):
        build_or_load_eval_inputs(*args, 64, "ten_crop", tmp_path, progress=False)


def test_train_cache_rows_equal_streamed_copies(smoke, tmp_path):
    ids = [s.id for s in smoke.split("train")][:6]
    arr, rows, key = build_or_load_train_inputs(smoke, ids, 2, 64, 0, "light", "center_crop", tmp_path, 2, False)
    cached = ArrayTrainCopies(arr, rows, smoke, ids[::-1], 2)
    streamed = TrainCopies(smoke, ids[::-1], 2, 64, 0, "light", "center_crop")
    assert len(cached) == len(streamed) == 12
    for i in range(12):
        (a, ya, ia), (b, yb, ib) = cached[i], streamed[i]
        assert a.dtype == b.dtype and np.array_equal(a.numpy(), b.numpy()) and ya.item() == yb.item() and ia == ib
    from torch.utils.data import default_collate

    order = [5, 0, 11, 3, 3, 8]  # a shuffled batch with a repeat: one read of the store, same collated batch
    batched, single = default_collate(cached.__getitems__(order)), default_collate([streamed[i] for i in order])
    assert all(u.dtype == v.dtype and torch.equal(u, v) for u, v in zip(batched, single, strict=True))


def _run(tmp_path, cache_dir, detector, name, on):
    cfg = resolve_config("smoke", detector, overrides=[{
        "runs_dir": str(tmp_path / "runs"), "cache_dir": str(cache_dir), "experiment": name, "loggers": [],
        "benchmark": {"generators_per_window": 12},
        "cache": {"eval_inputs": on, "train_inputs": on, "probe_features": on}}])
    run = run_experiment(cfg, progress=False)
    info = json.loads((run / "run.json").read_text())
    logits = [np.load(run / f"window_{k}" / "predictions.npz")["fused_logits"] for k in range(len(info["windows"]))]
    return logits, info


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["smallcnn_probe", "smallcnn_tune"])
def test_outputs_identical_with_and_without_caches(tmp_path, cache_dir, detector):
    """Bit-identical logits: cached pixels are the streamed pixels, probe features are batch-invariant on
    this CPU (fp32 and bf16 checked in protocols/feature_cache.py's docstring), the head sees the same batches."""
    off, info_off = _run(tmp_path, cache_dir, detector, "off", False)
    on, info_on = _run(tmp_path, cache_dir, detector, "on", True)
    assert len(off) >= 2
    for a, b in zip(off, on, strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert info_on["caches"]["switches"]["eval_inputs"] and not info_off["caches"]["switches"]["eval_inputs"]
    assert info_on["eval_cache_key"]["digest"] == info_off["eval_cache_key"]["digest"]
    if detector.endswith("_probe"):
        assert {"eval_features", "train_features"} <= set(info_on["caches"])
        assert len(info_on["caches"]["eval_features"]["backbone_sha256"]) == 64


def test_cache_cli_info_and_clear(tmp_path, capsys):
    import argparse

    from protocols.cache_cli import register

    cached_store(tmp_path, make_spec("eval", {"k": 1}, 2, {"pixels": Field("uint8", (3, 4, 4))}),
                 lambda i: np.zeros((3, 4, 4), np.uint8), [0, 1])
    cached_store(tmp_path, make_spec("features", {"k": 2}, 2, {"features": Field("float32", (8,))}),
                 lambda i: np.zeros(8, np.float32), [0, 1])
    (tmp_path / "datasets").mkdir()
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cache", "info", "--cache-dir", str(tmp_path)])
    assert args.handler(args) == 0 and "2 store(s)" in capsys.readouterr().out
    args = parser.parse_args(["cache", "clear", "--cache-dir", str(tmp_path), "--kind", "features"])
    assert args.handler(args) == 0
    assert [s["kind"] for s in describe_stores(tmp_path)] == ["eval"] and (tmp_path / "datasets").is_dir()
