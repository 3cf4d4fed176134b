"""One cached array on disk: `<dir>/data.npy` (memory-mapped on load) + `<dir>/meta.json` (key, sha256, shape).

Shared by the eval-input, training-input and probe-feature caches (DESIGN §8). A store whose key differs,
whose file is missing, truncated or whose sha256 does not match is reported and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_path, atomic_write_text
from benchmark.manifest import sha256_file

DATA = "data.npy"
META = "meta.json"


def key_digest(key: dict) -> str:
    """Short stable hash of a JSON-able key (the store's directory name)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def store_dir(cache_dir: Path, kind: str, key: dict) -> Path:
    """`<cache_dir>/<kind>/<digest of key>`."""
    return Path(cache_dir) / kind / key_digest(key)


def load_store(path: Path, key: dict, verify: bool = True) -> np.ndarray | None:
    """The stored array (read-only memmap) if `path` holds a complete store for exactly `key`, else None.

    A present but stale/corrupt store is announced on stderr (it will be rebuilt by the caller).
    """
    path = Path(path)
    meta_path, data_path = path / META, path / DATA
    if not meta_path.is_file():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        meta, problem = {}, f"unreadable {META} ({type(e).__name__})"
    if not isinstance(meta, dict):
        meta, problem = {}, f"{META} is not a JSON object"
    if problem is None and meta.get("key") != json.loads(json.dumps(key, default=str)):
        problem = "its key differs from this run's"
    elif problem is None and not data_path.is_file():
        problem = f"{DATA} is missing"
    elif problem is None and data_path.stat().st_size != meta.get("size"):
        problem = f"{DATA} has {data_path.stat().st_size} bytes, expected {meta.get('size')}"
    elif problem is None and verify and sha256_file(data_path) != meta.get("sha256"):
        problem = f"{DATA} does not match its sha256"
    if problem is None:
        try:
            arr = np.load(data_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            problem = f"{DATA} cannot be read ({e})"
        else:
            if list(arr.shape) != meta.get("shape") or str(arr.dtype) != meta.get("dtype"):
                problem = f"{DATA} is {arr.dtype} {arr.shape}, meta says {meta.get('dtype')} {meta.get('shape')}"
            else:
                return arr
    print(f"genshift: cache {path} is stale or corrupt: {problem}; rebuilding it", file=sys.stderr, flush=True)
    return None


def save_store(path: Path, key: dict, arr: np.ndarray) -> np.ndarray:
    """Write `arr` atomically with its key and checksum; return the stored array memory-mapped."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / META).unlink(missing_ok=True)  # a store without meta.json is never read
    with atomic_path(path / DATA) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr))
    data_path = path / DATA
    meta = {"key": key, "sha256": sha256_file(data_path), "size": data_path.stat().st_size,
            "shape": list(arr.shape), "dtype": str(arr.dtype)}
    atomic_write_text(path / META, json.dumps(meta, indent=1, default=str))
    return np.load(data_path, mmap_mode="r")


def cached_array(
    cache_dir: Path | None, kind: str, key: dict, build: Callable[[], np.ndarray], verify: bool = True
) -> tuple[np.ndarray, dict]:
    """Load the store for `key` or build it with `build()` and save it. `cache_dir=None`: build, keep in memory.

    Returns (array, info) where info = {"kind", "digest", "path", "hit"} for run.json and logs.
    """
    digest = key_digest(key)
    if cache_dir is None:
        return build(), {"kind": kind, "digest": digest, "path": None, "hit": False}
    path = store_dir(cache_dir, kind, key)
    arr = load_store(path, key, verify)
    if arr is not None:
        return arr, {"kind": kind, "digest": digest, "path": str(path), "hit": True}
    return save_store(path, key, build()), {"kind": kind, "digest": digest, "path": str(path), "hit": False}


def cache_kinds() -> tuple[str, ...]:
    """Sub-directories of a cache dir that hold array stores (datasets/ is the dataset cache, not ours)."""
    return ("eval", "eval_reference", "train_inputs", "features")  # eval_reference: benchmark/reference_eval_cache


def describe_stores(cache_dir: Path) -> list[dict]:
    """Every store under `cache_dir`: kind, digest, size in bytes, shape, whether meta.json is present."""
    out = []
    for kind in cache_kinds():
        for d in sorted((Path(cache_dir) / kind).glob("*")):
            if not d.is_dir():
                continue
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            meta = {}
            if (d / META).is_file():
                try:
                    meta = json.loads((d / META).read_text())
                except (OSError, ValueError):
                    meta = {}
            out.append({"kind": kind, "digest": d.name, "path": str(d), "bytes": size,
                        "shape": meta.get("shape"), "complete": bool(meta)})
    return out


def clear_stores(cache_dir: Path, kinds: tuple[str, ...] | None = None) -> int:
    """Delete the stores of `kinds` (default all array-store kinds); return the bytes freed."""
    freed = 0
    for store in describe_stores(cache_dir):
        if kinds is None or store["kind"] in kinds:
            freed += store["bytes"]
            shutil.rmtree(store["path"])
    return freed
