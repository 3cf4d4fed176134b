"""The reference pipeline's eval store (benchmark/reference_eval_cache.py) is a chunked store like the others:
killed mid-build it resumes from its finished chunks to the very bytes of an uninterrupted build, and a warm start
finds it without re-hashing every chunk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import ROOT, write_folder_dataset

from benchmark.array_store import META
from benchmark.model_input import F32

GENERATORS = {"ganA": "2018-01-01", "ganB": "2019-01-01", "diffC": "2021-01-01"}
SIZE, STRATEGY = 32, "five_crop"  # five_crop: a variable number of crops, uint8 and float32 ones
CHUNK = 3 * 5 * (3 * SIZE * SIZE * 5 + 1)  # three positions a chunk (each item sized at its upper bound)

BUILDER = """
import os, signal, sys
from pathlib import Path
import benchmark.reference_eval_cache as rec
from benchmark.sources import load_source

root, cache, die_at, chunk = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
manifest = load_source(f"folder:{root}", Path(sys.argv[5]), progress=False)
ids = sorted(s.id for s in manifest.split("eval"))
real = rec.reference_input

def dying(*job):
    if job[2] == die_at:  # the eval position being built
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like an OOM kill or a node failure
    return real(*job)

rec.reference_input = dying
rec.build_or_load_reference_inputs(manifest, ids, "aigenbench-v1", 4321, int(sys.argv[6]), sys.argv[7], cache,
                                   workers=1, progress=False, chunk_bytes=chunk)
"""


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_sigkill_during_a_reference_store_build_resumes_to_identical_files(tmp_path, monkeypatch):
    import benchmark.reference_eval_cache as rec
    from benchmark.sources import load_source

    root = write_folder_dataset(tmp_path / "data", GENERATORS, train_fakes=1, eval_fakes=2)
    manifests = tmp_path / "manifests"
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    first = subprocess.run([sys.executable, "-c", BUILDER, str(root), str(killed), "7", str(CHUNK), str(manifests),
                            str(SIZE), STRATEGY], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == -9, first.stderr  # killed at position 7: inside the 3rd chunk (positions 6..8)
    (store_dir,) = (killed / "eval_reference").iterdir()
    assert not (store_dir / META).exists() and len(list((store_dir / "chunks").glob("*.json"))) == 2

    manifest = load_source(f"folder:{root}", manifests, progress=False)
    ids = sorted(s.id for s in manifest.split("eval"))
    built = []
    real = rec.reference_input

    def counted(*job):
        built.append(job[2])
        return real(*job)

    monkeypatch.setattr(rec, "reference_input", counted)

    def build(cache: Path):
        return rec.build_or_load_reference_inputs(manifest, ids, "aigenbench-v1", 4321, SIZE, STRATEGY, cache,
                                                  workers=1, progress=False, chunk_bytes=CHUNK)

    _, key = build(killed)  # resumed: only the positions of the unfinished chunks are decoded
    assert not key["hit"] and Path(key["path"]) == store_dir and built == list(range(6, len(ids)))
    build(whole)
    (whole_dir,) = (whole / "eval_reference").iterdir()
    assert whole_dir.name == store_dir.name and _files(store_dir) == _files(whole_dir)
    assert len(list((store_dir / "chunks").glob("*.json"))) == 4 and (store_dir / META).is_file()
    built.clear()
    store, warm = build(killed)  # warm start: found, each chunk checked by size and header, one hashed
    assert warm["hit"] and built == [] and warm["verify"] == "sample" and warm["crops"] == key["crops"]
    assert store.n_positions == len(ids)


def test_the_reference_store_reads_back_what_its_crops_are(tmp_path):
    """Rows read back from the chunked store decode, bit for bit, to the crops computed from the images, and
    the same store built in memory (no cache directory) holds the same crops."""
    from benchmark.reference_eval_cache import (
        build_or_load_reference_inputs,
        open_reference_store,
        reference_input,
    )
    from benchmark.sources import load_source

    root = write_folder_dataset(tmp_path / "data", GENERATORS, train_fakes=1, eval_fakes=2)
    manifest = load_source(f"folder:{root}", tmp_path / "m", progress=False)
    ids = sorted(s.id for s in manifest.split("eval"))
    args = (manifest, ids, "aigenbench-v1", 4321, SIZE, STRATEGY)
    stored, key = build_or_load_reference_inputs(*args, tmp_path / "c", workers=1, progress=False, chunk_bytes=CHUNK)
    memory, _ = build_or_load_reference_inputs(*args, None, workers=1, progress=False)
    opened = open_reference_store(Path(key["path"]))
    kinds = stored.index[:, 1]
    assert key["float32_crops"] == int((kinds == F32).sum()) > 0 and key["uint8_crops"] > 0
    by_id = {s.id: s for s in manifest.split("eval")}
    for store in (stored, memory, opened):
        np.testing.assert_array_equal(store.index, stored.index)
        x, pos = store.crops(list(range(len(ids))))
        for p, i in enumerate(ids):
            crops = reference_input(str(manifest.root), by_id[i].path, p, "aigenbench-v1", 4321, SIZE, STRATEGY)
            mine = x[pos == p]
            assert len(mine) == len(crops)
            for j, (kind, arr) in enumerate(crops):
                want = torch.from_numpy(arr.astype(np.float32) / 255 if kind != F32 else arr)
                if kind == F32:
                    assert torch.equal(mine[j], want)
                else:
                    assert torch.allclose(mine[j], want, atol=1e-7)
