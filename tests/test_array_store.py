"""Chunked stores (benchmark/array_store.py, benchmark/store_build.py): reading across chunks, hashes taken while
writing, verification levels, resume after a kill (byte-identical), shards, variable rows, and the estimate."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmark.array_store import (
    META,
    ChunkedArray,
    Field,
    StoreWriter,
    describe_stores,
    make_spec,
    open_store,
    store_dir,
    verify_chunks,
)
from benchmark.store_build import build_store, cached_store, shard_chunks

ROOT = Path(__file__).resolve().parent.parent


def _item(i: int) -> np.ndarray:
    return (np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) + 7 * i).astype(np.uint8)


def _spec(n: int = 11, key: dict | None = None, chunk_bytes: int = 3 * 24):
    return make_spec("eval", key or {"t": 1}, n, {"pixels": Field("uint8", (3, 4), rows_per_item=2)}, chunk_bytes)


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_rows_read_across_chunks_equal_the_source(tmp_path):
    spec = _spec(chunk_bytes=30)
    assert spec.items_per_chunk == 1 and spec.n_chunks == 11  # 24 bytes an item: one item (two rows) a chunk
    spec = _spec(chunk_bytes=3 * 24)
    assert spec.items_per_chunk == 3 and spec.n_chunks == 4 and spec.chunk_items(3) == (9, 11)
    src = np.concatenate([_item(i) for i in range(11)])
    arrays, info = cached_store(tmp_path, spec, _item, list(range(11)))
    a = arrays["pixels"]
    assert isinstance(a, ChunkedArray) and a.shape == src.shape == (22, 3, 4) and len(a) == 22 and a.ndim == 3
    assert np.array_equal(np.asarray(a), src) and np.array_equal(a[5], src[5]) and np.array_equal(a[-1], src[-1])
    for sl in (slice(0, 22), slice(4, 17), slice(5, 6), slice(7, 7), slice(1, 20, 3), slice(None, None, -1)):
        assert np.array_equal(a[sl], src[sl]), sl
    rows = [21, 0, 1, 2, 3, 10, 10, 6, 5]  # unsorted, repeats, runs that cross a chunk boundary
    assert np.array_equal(a[rows], src[rows]) and np.array_equal(a[np.asarray(rows)], src[rows])
    assert np.array_equal(a[:, 1:], src[:, 1:]) and np.array_equal(a[3, 2], src[3, 2])
    assert np.array_equal(a[[4, 1], :, 2], src[[4, 1], :, 2])
    out = a[3:9]
    out[:] = 0  # a fresh writable array, the store untouched
    assert np.array_equal(a[3:9], src[3:9])
    with pytest.raises(IndexError):
        a[22]
    b = pickle.loads(pickle.dumps(a))  # DataLoader workers get a copy that reopens the files
    assert np.array_equal(b[[0, 21]], src[[0, 21]])
    assert info["bytes"] == sum(len(v) for k, v in _files(Path(info["path"]) / "chunks").items() if k.endswith(".npy"))


def test_hashes_are_those_of_the_files_and_the_estimate_bounds_the_size(tmp_path):
    spec = _spec(chunk_bytes=3 * 24)
    _, info = cached_store(tmp_path, spec, _item, list(range(11)))
    meta = open_store(Path(info["path"]), spec).meta
    for rec in meta["chunks"]:
        f = rec["fields"]["pixels"]
        data = (Path(info["path"]) / "chunks" / f["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        assert np.array_equal(np.load(Path(info["path"]) / "chunks" / f["file"]),  # a plain .npy file
                              np.concatenate([_item(i) for i in range(*rec["items"])]))
    payload = 11 * 2 * 12
    assert payload <= meta["bytes"] <= spec.estimate_bytes() and spec.estimate_bytes() - payload <= 128 * 4


def test_verification_levels_and_damaged_chunks_rebuilt_alone(tmp_path, capsys):
    spec = _spec(chunk_bytes=3 * 24)
    calls = []

    def build(i):
        calls.append(i)
        return _item(i)

    _, info = cached_store(tmp_path, spec, build, list(range(11)))
    path = Path(info["path"])
    meta = open_store(path, spec, "fast").meta
    chunk = path / "chunks" / "000002.pixels.npy"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0x01  # same size, same header: only a hash finds it
    chunk.write_bytes(bytes(raw))
    assert verify_chunks(path, meta, "fast") == []
    assert verify_chunks(path, meta, "full") == ["chunk 2: 000002.pixels.npy does not match its sha256"]
    header = bytearray(chunk.read_bytes())
    header[10:14] = b"XXXX"
    chunk.write_bytes(bytes(header))
    assert "does not start with its recorded header" in verify_chunks(path, meta, "fast")[0]
    calls.clear()
    arrays, info = cached_store(tmp_path, spec, build, list(range(11)), verify="fast")
    assert not info["hit"] and calls == [6, 7, 8] and "rebuilding 1 chunk(s)" in capsys.readouterr().err
    assert np.array_equal(np.asarray(arrays["pixels"]), np.concatenate([_item(i) for i in range(11)]))
    assert verify_chunks(path, open_store(path, spec).meta, "full") == []


def test_another_key_or_layout_or_an_older_store_is_replaced(tmp_path, capsys):
    spec = _spec(chunk_bytes=3 * 24)
    path = store_dir(tmp_path, "eval", spec.key)
    path.mkdir(parents=True)
    (path / "data.npy").write_bytes(b"old")
    (path / META).write_text('{"key": {"t": 1}, "sha256": "x"}')  # a store of the single-file format
    assert open_store(path, spec) is None and not path.exists()
    assert "older genshift" in capsys.readouterr().err
    build_store(path, _spec(chunk_bytes=2 * 24), _item, list(range(11)))  # the same rows in other chunks
    calls = []
    store = build_store(path, spec, lambda i: calls.append(i) or _item(i), list(range(11)))
    assert calls == [] and store.meta["items_per_chunk"] == 2  # complete: read as it is, whatever its chunking
    other = _spec(key={"t": 2}, chunk_bytes=2 * 24)
    other_path = store_dir(tmp_path, "eval", other.key)
    assert build_store(other_path, other, _item, list(range(11)), shard=(0, 2)) is None  # a partial store ...
    build_store(other_path, replace(other, items_per_chunk=3), lambda i: calls.append(i) or _item(i), list(range(11)))
    assert calls == list(range(6, 11))  # ... is continued in its own chunks, not started anew
    assert _files(other_path) == _files(build_store(tmp_path / "x", other, _item, list(range(11))).path)
    (path / "layout.json").write_text((path / "layout.json").read_text().replace('"t": 1', '"t": 9'))
    (path / META).unlink()
    build_store(path, spec, lambda i: calls.append(i) or _item(i), list(range(11)))  # another key: anew
    assert len(calls) == 16 and "its key differs" in capsys.readouterr().err


def test_shards_build_disjoint_ranges_and_the_last_completes_the_store(tmp_path):
    assert shard_chunks(10, (0, 3)) + shard_chunks(10, (1, 3)) + shard_chunks(10, (2, 3)) == list(range(10))
    assert [shard_chunks(2, (i, 4)) for i in range(4)] == [[], [0], [], [1]]  # more shards than chunks
    spec = _spec(chunk_bytes=2 * 24)
    one = tmp_path / "one"
    build_store(one, spec, _item, list(range(11)))
    two = tmp_path / "two"
    assert build_store(two, spec, _item, list(range(11)), shard=(1, 2)) is None  # half the chunks: not complete
    assert not (two / META).exists() and describe_stores(tmp_path) == []  # not a kind directory: not listed
    store = build_store(two, spec, _item, list(range(11)), shard=(0, 2))
    assert store is not None and _files(one) == _files(two)


def test_variable_rows_per_item(tmp_path):
    """A field whose items have a variable number of rows (e.g. crops that are kept in another form)."""
    fields = {"u8": Field("uint8", (2,), rows_per_item=None, max_rows=3), "pos": Field("int64", (), rows_per_item=1)}
    spec = make_spec("eval", {"v": 1}, 7, fields, chunk_bytes=40)

    def item(i):
        return {"u8": np.full((i % 3, 2), i, np.uint8), "pos": np.asarray([i], np.int64)}

    arrays, _ = cached_store(tmp_path, spec, item, list(range(7)))
    assert arrays["u8"].shape == (sum(i % 3 for i in range(7)), 2) and list(arrays["pos"][:]) == list(range(7))
    assert list(np.asarray(arrays["u8"])[:, 0]) == [i for i in range(7) for _ in range(i % 3)]


def test_writer_refuses_wrong_rows(tmp_path):
    spec = _spec(chunk_bytes=3 * 24)
    w = StoreWriter(tmp_path / "s", spec)
    with pytest.raises(Exception, match=r"rows of shape \(2, 3, 4\), expected \(6, 3, 4\)"):
        w.write_chunk(0, {"pixels": _item(0)})
    with pytest.raises(Exception, match="fields"):
        w.write_chunk(0, {"other": _item(0)})


KILLER = """
import os, signal, sys
import numpy as np
from benchmark.array_store import Field, make_spec
from benchmark.store_build import build_store

def item(i):
    if i == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like an OOM kill or a node failure
    return (np.arange(24, dtype=np.uint8).reshape(2, 3, 4) + 7 * i).astype(np.uint8)

spec = make_spec("eval", {"t": 1}, 11, {"pixels": Field("uint8", (3, 4), rows_per_item=2)}, 3 * 24)
build_store(sys.argv[1], spec, item, list(range(11)))
"""


def test_sigkill_during_a_build_resumes_to_identical_files(tmp_path):
    """A build SIGKILLed in its 3rd chunk keeps its first two; run again it builds only the rest, and the store
    equals, byte for byte, one built without interruption."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    run = [sys.executable, "-c", KILLER]
    assert subprocess.run([*run, str(killed), "7"], cwd=ROOT, capture_output=True).returncode == -9
    assert not (killed / META).exists() and len(list((killed / "chunks").glob("*.json"))) == 2
    (killed / "chunks" / ".000002.pixels.npy.otherhost.1.abcd.tmp").write_bytes(b"x")  # a live writer elsewhere
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from benchmark.array_store import _HOST

    (killed / "chunks" / f".000002.pixels.npy.{_HOST}.{dead.stdout.strip()}.abcd.tmp").write_bytes(b"half")
    again = subprocess.run([*run, str(killed), "3"], cwd=ROOT, capture_output=True, text=True)  # would die on item 3
    assert again.returncode == 0, again.stderr  # ... which is in a finished chunk: not built again
    assert subprocess.run([*run, str(whole), "-1"], cwd=ROOT, capture_output=True).returncode == 0
    left = sorted(p.name for p in (killed / "chunks").glob(".*.tmp"))
    assert left == [".000002.pixels.npy.otherhost.1.abcd.tmp"]  # the killed writer's half chunk was removed
    (killed / "chunks" / left[0]).unlink()
    assert _files(killed) == _files(whole) and (killed / META).is_file()


@pytest.mark.slow  # ~1 min: three `genshift cache build` processes
def test_cache_build_killed_after_a_chunk_resumes_to_identical_stores(tmp_path, cache_dir):
    """`genshift cache build` killed (SIGKILL, no clean-up) after its 3rd chunk, run again: it builds only the
    missing chunks and both stores equal, byte for byte, those of a build without interruption."""
    from benchmark.sources import load_source

    load_source("synthetic:smoke", cache_dir, progress=False)  # the session's dataset, shared by both caches
    stores = {}
    for name in ("killed", "whole"):
        c = tmp_path / name
        c.mkdir()
        (c / "datasets").symlink_to(Path(cache_dir, "datasets").resolve())
        stores[name] = c
    cmd = [sys.executable, "-m", "protocols", "cache", "build", "--preset", "smoke", "--detector", "smallcnn_tune",
           "--set", "cache.chunk_mb=0.3", "--set", "data.check=false", "--no-progress", "--cache-dir"]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    first = subprocess.run([*cmd, str(stores["killed"])], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env=env | {"GENSHIFT_DIE_AT": "store_chunk:0:3"})
    assert first.returncode == -9, first.stderr
    partial = [s for s in describe_stores(stores["killed"]) if not s["complete"]]
    assert len(partial) == 1 and partial[0]["chunks_done"] == 3 < partial[0]["chunks"], partial
    for name in ("killed", "whole"):
        p = subprocess.run([*cmd, str(stores[name])], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
    for kind in ("eval", "train_inputs"):
        (a,), (b,) = [list((stores[n] / kind).iterdir()) for n in ("killed", "whole")]
        assert a.name == b.name and _files(a) == _files(b), kind
