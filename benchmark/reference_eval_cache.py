"""What the eval cache holds for the reference input pipeline: every crop exactly as the reference's model sees it
before Normalize (DESIGN §8, §9).

The reference resizes or crops the degradation chain's output in its own type, so a crop is either bytes that a
uint8 store restores bit for bit (a PIL crop, or a crop of a float tensor whose values are all k/255), or floats
that are not (a resize of a float tensor, or a crop of the floats left by a bilinear/bicubic random-resized crop).
The store keeps each crop in the smaller exact form (`benchmark.model_input.encode_crop`):

    <cache_dir>/eval_reference/<digest>/
        index.npy   int64 (C, 3): position, kind (0 uint8 via ToDtype, 1 uint8 via to_tensor, 2 float32), row
        u8.raw      uint8 (n_u8, 3, S, S)       rows of the uint8 crops, in crop order
        f32.raw     float32 (n_f32, 3, S, S)    rows of the float crops, in crop order
        meta.json   key, counts, sha256 and size of every file; written last (a store without it is never read)

Crops are in position order, a position's crops in the reference's order (FiveCrop: TL, TR, BL, BR, centre).
Rows are appended as the workers deliver them (memory stays one position deep), into a temporary directory
renamed into place when complete. Normalisation is applied when a batch is read (`decode_crops`, then the
detector module's ``sub(mean).div_(std)``), so one store serves every normalisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.array_store import key_digest
from benchmark.degradations import degradation_key
from benchmark.eval_cache import run_parallel
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest, sha256_file
from benchmark.model_input import F32, check_strategy, decode_crops, encoded_model_input
from common.atomic import atomic_path, atomic_write_text

KIND = "eval_reference"
CACHE_FORMAT = 1  # bump when decode -> chain -> reference crops -> encoding changes beyond library versions
_FILES = ("index.npy", "u8.raw", "f32.raw")


def reference_eval_key(manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int,
                       strategy: str) -> dict:
    """Everything that determines the stored crops (torchvision and the chain's libraries are in `degradation`)."""
    check_strategy(strategy)
    ids_hash = hashlib.sha256(np.asarray(sample_ids, dtype=np.int64).tobytes()).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "pipeline": "reference",
        "manifest_checksum": manifest.checksum,
        "positions_sha256": ids_hash,
        "degradation": degradation_key(profile, base_seed),
        "input_size": int(size),
        "input_strategy": strategy,
    }


def reference_input(root: str, path: str, position: int, profile: str, base_seed: int, size: int,
                    strategy: str) -> list[tuple[int, np.ndarray]]:
    """Decode one eval image and return its reference-pipeline crops, encoded (kind, uint8 or float32 3×S×S)."""
    return encoded_model_input(read_image(root, path), position, profile, base_seed, size, strategy)


def _reference_job(args: tuple) -> list[tuple[int, np.ndarray]]:
    return reference_input(*args)


@dataclass
class ReferenceStore:
    """The stored crops of every eval position; `crops(positions)` gives them as float32 tensors."""

    index: np.ndarray  # (C, 3) int64: position, kind, row
    u8: np.ndarray  # (n_u8, 3, S, S) uint8, memory-mapped when loaded from disk
    f32: np.ndarray  # (n_f32, 3, S, S) float32
    n_positions: int
    offsets: np.ndarray = field(init=False)  # (N + 1,): crops of position p are rows offsets[p]:offsets[p+1]

    def __post_init__(self) -> None:
        pos = self.index[:, 0] if len(self.index) else np.zeros(0, dtype=np.int64)
        if len(pos) and (np.any(np.diff(pos) < 0) or pos[0] < 0 or pos[-1] >= self.n_positions):
            raise ValueError("reference eval store: crop positions are not sorted within 0..N-1")
        counts = np.bincount(pos, minlength=self.n_positions)
        if np.any(counts == 0):
            raise ValueError(f"reference eval store: {int((counts == 0).sum())} positions have no crop")
        self.offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)

    @property
    def n_crops(self) -> int:
        return len(self.index)

    def crop_rows(self, positions: Sequence[int]) -> np.ndarray | slice:
        """Crop indices of `positions`, in order (a slice for consecutive positions: the eval order)."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and pos[-1] - pos[0] == pos.size - 1 and np.all(np.diff(pos) == 1):
            return slice(int(self.offsets[pos[0]]), int(self.offsets[pos[-1] + 1]))
        return np.concatenate([np.arange(self.offsets[p], self.offsets[p + 1]) for p in pos]) \
            if pos.size else np.zeros(0, dtype=np.int64)

    def crops(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 (n, 3, S, S) crops before normalisation, int64 (n,) their positions) for `positions`."""
        idx = self.index[self.crop_rows(positions)]
        x = decode_crops(idx[:, 1], self.u8, self.f32, idx[:, 2])
        return x, torch.from_numpy(idx[:, 0].copy())


class _Sink:
    """Receives each position's encoded crops in position order (run_parallel's `out[i] = ...`) and appends them to
    the row files, or to in-memory lists when no directory is given."""

    def __init__(self, directory: Path | None):
        self.index: list[tuple[int, int, int]] = []
        self.n = {0: 0, 1: 0}  # rows written to the uint8 (0) and float (1) files
        self.mem: dict[int, list[np.ndarray]] | None = None if directory else {0: [], 1: []}
        self.files = None if directory is None else {0: open(directory / "u8.raw", "wb"),
                                                     1: open(directory / "f32.raw", "wb")}
        self.expected = 0

    def __setitem__(self, position: int, crops: list[tuple[int, np.ndarray]]) -> None:
        if position != self.expected:
            raise RuntimeError(f"reference eval store: position {position} arrived before {self.expected}")
        self.expected += 1
        for kind, arr in crops:
            store = 1 if kind == F32 else 0
            arr = np.ascontiguousarray(arr, dtype=np.float32 if store else np.uint8)
            self.index.append((position, kind, self.n[store]))
            self.n[store] += 1
            if self.files is not None:
                self.files[store].write(arr.tobytes())
            else:
                self.mem[store].append(arr)

    def close(self) -> None:
        if self.files:
            for f in self.files.values():
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def index_array(self) -> np.ndarray:
        return np.asarray(self.index, dtype=np.int64).reshape(-1, 3)


def _rows(path: Path, dtype, n: int, size: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 3, size, size), dtype=dtype)
    # copy-on-write: torch wraps the mapped rows without copying them first (the store is never written through it)
    return np.memmap(path, dtype=dtype, mode="c", shape=(n, 3, size, size))


def reference_store_problems(path: Path) -> list[str]:
    """What is wrong with the complete store at `path` (every file against its recorded size and sha256)."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"meta.json is unreadable or malformed ({type(e).__name__}): the next run rebuilds the store"]
    problems = []
    for name in _FILES:
        f, want = path / name, files.get(name) if isinstance(files, dict) else None
        if not isinstance(want, dict) or not f.is_file() or f.stat().st_size != want.get("size"):
            problems.append(f"{name} is missing or its size differs from meta.json's")
        elif sha256_file(f) != want.get("sha256"):
            problems.append(f"{name} does not match its sha256")
    return problems


def stored_bytes(cache_dir: Path, key: dict) -> int:
    """Bytes on disk of the complete store made for `key` under `cache_dir` (0 when there is none): the cache plan
    counts it in place of the estimate. Sizes are read from meta.json and the files' sizes, nothing is hashed."""
    path = Path(cache_dir) / KIND / key_digest(key)
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("key") != json.loads(json.dumps(key, default=str)):
            return 0
        sizes = [(path / n).stat().st_size for n in _FILES]
        if sizes != [int(meta["files"][n]["size"]) for n in _FILES]:
            return 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return int(sum(sizes) + (path / "meta.json").stat().st_size)


def load_reference_store(path: Path, key: dict, verify: bool = True) -> ReferenceStore | None:
    """The store at `path` if it is complete and made for exactly `key`, else None (a stale one is announced)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        meta, problem = {}, f"unreadable meta.json ({e})"
    if problem is None and meta.get("key") != json.loads(json.dumps(key, default=str)):
        problem = "its key differs from this run's"
    for name in _FILES if problem is None else ():
        f = path / name
        want = meta.get("files", {}).get(name, {})
        if not f.is_file() or f.stat().st_size != want.get("size"):
            problem = f"{name} is missing or has {f.stat().st_size if f.is_file() else 0} bytes, " \
                      f"expected {want.get('size')}"
            break
        if verify and sha256_file(f) != want.get("sha256"):
            problem = f"{name} does not match its sha256"
            break
    if problem is None:
        size = int(key["input_size"])
        try:
            store = ReferenceStore(np.load(path / "index.npy", allow_pickle=False),
                                   _rows(path / "u8.raw", np.uint8, int(meta["n_u8"]), size),
                                   _rows(path / "f32.raw", np.float32, int(meta["n_f32"]), size),
                                   int(meta["n_positions"]))
        except (OSError, ValueError, KeyError) as e:
            problem = f"cannot be read ({e})"
        else:
            return store
    print(f"genshift: cache {path} is stale or corrupt: {problem}; rebuilding it", file=sys.stderr, flush=True)
    return None


def build_or_load_reference_inputs(
    manifest: Manifest, sample_ids: Sequence[int], profile: str, base_seed: int, size: int, strategy: str,
    cache_dir: Path | None, workers: int = 2, progress: bool = True,
) -> tuple[ReferenceStore, dict]:
    """(store of every position's reference crops, cache key incl. 'digest', 'path', 'hit' and crop counts).

    `cache_dir=None` builds the store in memory (nothing written).
    """
    key = reference_eval_key(manifest, sample_ids, profile, base_seed, size, strategy)
    digest = key_digest(key)
    by_id = {s.id: s for s in manifest.split("eval")}
    jobs = [(str(manifest.root), by_id[int(i)].path, pos, profile, base_seed, size, strategy)
            for pos, i in enumerate(sample_ids)]
    label = "decoding + degrading eval images (reference pipeline)"
    if cache_dir is None:
        sink = _Sink(None)
        run_parallel(_reference_job, jobs, sink, workers, progress, label)
        u8 = np.stack(sink.mem[0]) if sink.mem[0] else np.zeros((0, 3, size, size), np.uint8)
        f32 = np.stack(sink.mem[1]) if sink.mem[1] else np.zeros((0, 3, size, size), np.float32)
        store = ReferenceStore(sink.index_array(), u8, f32, len(jobs))
        return store, key | {"digest": digest, "path": None, "hit": False} | _counts(store)
    path = Path(cache_dir) / KIND / digest
    store = load_reference_store(path, key)
    if store is not None:
        return store, key | {"digest": digest, "path": str(path), "hit": True} | _counts(store)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sink = _Sink(tmp)
        try:
            run_parallel(_reference_job, jobs, sink, workers, progress, label)
        finally:
            sink.close()
        with atomic_path(tmp / "index.npy") as t, open(t, "wb") as f:
            np.save(f, sink.index_array())
        files = {name: {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size} for name in _FILES}
        meta = {"key": key, "n_positions": len(jobs), "n_crops": len(sink.index), "n_u8": sink.n[0],
                "n_f32": sink.n[1], "shape": [len(sink.index), 3, size, size], "files": files}
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, default=str))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store = load_reference_store(path, key, verify=False)
    if store is None:
        raise RuntimeError(f"the reference eval store just written to {path} cannot be read back")
    return store, key | {"digest": digest, "path": str(path), "hit": False} | _counts(store)


def _counts(store: ReferenceStore) -> dict:
    """How the crops are stored: counts of uint8 and float32 rows (run.json)."""
    kinds = store.index[:, 1]
    return {"crops": store.n_crops, "uint8_crops": int((kinds != F32).sum()), "float32_crops": int((kinds == F32).sum())}


__all__ = ["KIND", "ReferenceStore", "reference_store_problems", "stored_bytes", "reference_eval_key", "reference_input", "build_or_load_reference_inputs",
           "load_reference_store"]
