"""Chunked array stores: the on-disk format of every cache genshift computes (DESIGN §8).

A store holds one or more named arrays ("fields") of rows for `n_items` items (eval positions, training images,
dataset rows). Items are cut into chunks of `items_per_chunk`; each chunk of each field is its own `.npy` file,
written whole from memory, hashed while it is written and renamed into place, then recorded in a small JSON
file. So a store is never held whole in memory, a killed build keeps its finished chunks and resumes from them
(the files are a pure function of the items, hence byte-identical to an uninterrupted build), several processes
(a SLURM array of shards) can build disjoint chunks of one store, and a warm start checks sizes, headers and
recorded hashes without reading the data back::

    <cache_dir>/<kind>/<digest of key>/
        layout.json               key, fields, n_items, items_per_chunk (written first; a mismatch wipes the store)
        chunks/000012.<field>.npy rows of items [12·k, 13·k) of that field (a plain .npy file)
        chunks/000012.json        per field: rows, file size, header length, sha256 (the chunk is done)
        meta.json                 layout + every chunk record (written last: the store is complete)

Rows are read with `pread` (ChunkedArray), not memory-mapped: reading a large store does not grow the
process's resident memory. A field may have a fixed number of rows per item (pixels, features) or a variable
one (recorded per chunk; e.g. a variable number of crops per image).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import sys
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text

STORE_FORMAT = 2
LAYOUT, META, CHUNKS = "layout.json", "meta.json", "chunks"
DEFAULT_CHUNK_BYTES = 64 << 20
VERIFY_MODES = ("fast", "sample", "full")  # cache.verify
# Sub-directories of a cache dir that hold stores (eval_reference: the reference pipeline's eval crops, each uint8
# or float32, benchmark/reference_eval_cache.py).
KINDS = ("eval", "eval_reference", "train_inputs", "features", "robustness")
REFERENCE_KIND = "eval_reference"


class StoreError(RuntimeError):
    """A store cannot be written or read as asked (wrong rows, shapes, a chunk out of range)."""


def key_digest(key: dict) -> str:
    """Short stable hash of a JSON-able key (the store's directory name)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def store_dir(cache_dir: Path, kind: str, key: dict) -> Path:
    """`<cache_dir>/<kind>/<digest of key>`."""
    return Path(cache_dir) / kind / key_digest(key)


def _json_key(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


# ------------------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class Field:
    """One array of a store: dtype, the shape of a row, rows per item (None = variable, at most `max_rows`)."""

    dtype: str
    row_shape: tuple[int, ...]
    rows_per_item: int | None = 1
    max_rows: int = 1  # upper bound of rows per item for a variable field (size estimates)

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * int(np.prod(self.row_shape, dtype=np.int64)))

    @property
    def item_bytes(self) -> int:
        """Bytes of one item's rows (the upper bound for a variable field)."""
        return self.row_bytes * (self.rows_per_item if self.rows_per_item is not None else self.max_rows)

    def to_dict(self) -> dict:
        return {"dtype": str(np.dtype(self.dtype)), "row_shape": [int(s) for s in self.row_shape],
                "rows_per_item": self.rows_per_item, "max_rows": self.max_rows}


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds and how it is cut into chunks; `estimate_bytes` is known before anything is built."""

    kind: str
    key: dict
    n_items: int
    fields: Mapping[str, Field]
    items_per_chunk: int

    @property
    def digest(self) -> str:
        return key_digest(self.key)

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.n_items // self.items_per_chunk)) if self.n_items else 0

    def chunk_items(self, c: int) -> tuple[int, int]:
        """Items [a, b) of chunk c."""
        if not 0 <= c < self.n_chunks:
            raise StoreError(f"chunk {c} outside 0..{self.n_chunks - 1} of a {self.kind} store")
        a = c * self.items_per_chunk
        return a, min(a + self.items_per_chunk, self.n_items)

    def estimate_bytes(self, chunks: Iterable[int] | None = None) -> int:
        """Upper bound of the bytes on disk (data files; headers and records add a few hundred bytes a chunk)."""
        per_item = sum(f.item_bytes for f in self.fields.values())
        items = self.n_items if chunks is None else sum(b - a for a, b in map(self.chunk_items, chunks))
        n_chunks = self.n_chunks if chunks is None else len(list(chunks))
        return int(items * per_item + n_chunks * len(self.fields) * 128)

    def layout(self) -> dict:
        return {"store_format": STORE_FORMAT, "kind": self.kind, "key": _json_key(self.key),
                "n_items": int(self.n_items), "items_per_chunk": int(self.items_per_chunk),
                "fields": {n: f.to_dict() for n, f in self.fields.items()}}


def make_spec(kind: str, key: dict, n_items: int, fields: Mapping[str, Field],
              chunk_bytes: int = DEFAULT_CHUNK_BYTES, multiple: int = 1) -> StoreSpec:
    """A spec whose chunks hold about `chunk_bytes` (at least one item; a multiple of `multiple` items, e.g. the
    batch size of the loop that produces the rows, so a resumed build sees the same batches)."""
    per_item = max(1, sum(f.item_bytes for f in fields.values()))
    k = max(1, int(chunk_bytes) // per_item)
    multiple = max(1, int(multiple))
    k = max(multiple, k // multiple * multiple)
    return StoreSpec(kind, dict(key), int(n_items), dict(fields), k)


def _header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The .npy header numpy writes for a C-ordered array of `dtype` and `shape` (format 1.0)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def _same_content(doc: dict, layout: dict) -> bool:
    """Whether a store's layout or meta describes the same content as `layout` (its chunking may differ: a
    complete store cut into other chunks, e.g. built with another cache.chunk_mb, holds the same rows)."""
    return all(doc.get(k) == v for k, v in layout.items() if k != "items_per_chunk")


def chunk_name(c: int, field_name: str | None = None) -> str:
    return f"{c:06d}.{field_name}.npy" if field_name else f"{c:06d}.json"


# ------------------------------------------------------------------------------------------------ writer


class StoreWriter:
    """Writes chunks of one store (several writers may share a store: chunks are written whole and renamed)."""

    def __init__(self, path: Path, spec: StoreSpec):
        self.path = Path(path)
        self.chunks = self.path / CHUNKS
        old = _read_json(self.path / LAYOUT)
        if old is not None and old != spec.layout() and _same_content(old, spec.layout()):
            # the same rows cut into other chunks (another cache.chunk_mb, e.g. a cluster build's): continue in them
            spec = replace(spec, items_per_chunk=int(old["items_per_chunk"]))
        self.spec = spec
        layout = spec.layout()
        if old is not None and old != layout:
            why = "its key differs" if old.get("key") != layout["key"] else "its chunk layout differs"
            print(f"genshift: cache {self.path}: an unfinished or older store is there ({why}); starting it anew",
                  file=sys.stderr, flush=True)
            _remove_store(self.path)
            old = None
        if (self.path / META).is_file() and old is None:  # an older format's store (data.npy + meta.json)
            _remove_store(self.path)
        self.chunks.mkdir(parents=True, exist_ok=True)
        self._remove_dead_temporaries()
        if old is None:
            atomic_write_text(self.path / LAYOUT, json.dumps(layout, indent=1, sort_keys=True))

    def _remove_dead_temporaries(self) -> None:
        """Delete the half-written chunk files of writers of this host that died (SIGKILL leaves them behind);
        those of live writers (other shards) and of other hosts stay."""
        for tmp in self.chunks.glob(".*.tmp"):
            parts = tmp.name.split(".")
            if len(parts) >= 6 and parts[-4] == _HOST and parts[-3].isdigit() and not _alive(int(parts[-3])):
                tmp.unlink(missing_ok=True)

    def done_chunks(self) -> set[int]:
        """Chunks whose record and data files are present with the recorded sizes."""
        done = set()
        for c in range(self.spec.n_chunks):
            rec = _read_json(self.chunks / chunk_name(c))
            if rec is not None and _chunk_files_ok(self.chunks, rec, self.spec):
                done.add(c)
        return done

    def write_chunk(self, c: int, arrays: Mapping[str, np.ndarray]) -> dict:
        """Write chunk c (every field's rows of its items), hashing the bytes as they are written; return its record."""
        a, b = self.spec.chunk_items(c)
        if set(arrays) != set(self.spec.fields):
            raise StoreError(f"chunk {c} of {self.path}: fields {sorted(arrays)}, expected {sorted(self.spec.fields)}")
        rec: dict = {"chunk": c, "items": [a, b], "fields": {}}
        for name, f in self.spec.fields.items():
            arr = np.ascontiguousarray(arrays[name], dtype=f.dtype)
            rows = (b - a) * f.rows_per_item if f.rows_per_item is not None else len(arr)
            if arr.shape != (rows, *f.row_shape):
                raise StoreError(f"chunk {c} of {self.path}, field {name!r}: rows of shape {arr.shape}, expected "
                                 f"({rows}, {', '.join(map(str, f.row_shape))})")
            header = _header(f.dtype, arr.shape)
            h = hashlib.sha256(header)
            target = self.chunks / chunk_name(c, name)
            tmp = target.with_name(f".{target.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(header)
                    if arr.size:
                        data = memoryview(arr.reshape(-1)).cast("B")
                        h.update(data)
                        fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            rec["fields"][name] = {"file": target.name, "rows": int(rows), "offset": len(header),
                                   "bytes": len(header) + arr.nbytes, "sha256": h.hexdigest()}
        atomic_write_text(self.chunks / chunk_name(c), json.dumps(rec, sort_keys=True))
        return rec

    def finalize(self) -> bool:
        """Write meta.json if every chunk is done (idempotent; any writer or reader may call it)."""
        recs = []
        for c in range(self.spec.n_chunks):
            rec = _read_json(self.chunks / chunk_name(c))
            if rec is None or not _chunk_files_ok(self.chunks, rec, self.spec):
                return False
            recs.append(rec)
        meta = self.spec.layout() | {"chunks": recs, "bytes": int(sum(f["bytes"] for r in recs
                                                                      for f in r["fields"].values()))}
        atomic_write_text(self.path / META, json.dumps(meta, sort_keys=True))
        return True


_HOST = socket.gethostname().split(".")[0].replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _chunk_files_ok(chunks: Path, rec: dict, spec: StoreSpec) -> bool:
    try:
        a, b = spec.chunk_items(int(rec["chunk"]))
        if rec["items"] != [a, b] or set(rec["fields"]) != set(spec.fields):
            return False
        return all((chunks / f["file"]).stat().st_size == f["bytes"] for f in rec["fields"].values())
    except (OSError, KeyError, TypeError, ValueError, StoreError):
        return False


def _remove_store(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ reader


class _Files:
    """Open file descriptors of a store's chunk files, at most `limit` at once (least recently used closed)."""

    def __init__(self, limit: int = 64):
        self.limit, self.fds = limit, OrderedDict()

    def fd(self, path: str) -> int:
        fd = self.fds.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            while len(self.fds) >= self.limit:
                os.close(self.fds.popitem(last=False)[1])
        self.fds[path] = fd
        return fd

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.popitem()[1])


def _pread_into(fd: int, out: np.ndarray, offset: int, path: str) -> None:
    view = memoryview(out.reshape(-1)).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise StoreError(f"{path}: file ends {len(view) - done} bytes early (truncated chunk)")
        done += n


class ChunkedArray:
    """One field of a store as a read-only array of rows: `len`, `shape`, `dtype`, and indexing by an int, a
    slice or a sequence of ints, each returning a new (writable) numpy array read from the chunk files."""

    def __init__(self, chunk_dir: Path, dtype: str, row_shape: tuple[int, ...], files: Sequence[tuple[str, int, int]]):
        self.chunk_dir = str(chunk_dir)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.files = [(os.path.join(self.chunk_dir, name), int(offset), int(rows)) for name, offset, rows in files]
        self.starts = np.cumsum([0] + [r for _, _, r in self.files]).astype(np.int64)
        self.row_bytes = int(self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64)))
        self._open = _Files()

    def __getstate__(self) -> dict:  # DataLoader workers: reopen the files in the new process
        return {k: v for k, v in self.__dict__.items() if k != "_open"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open = _Files()

    def __del__(self) -> None:
        opened = self.__dict__.get("_open")
        if opened is not None:
            opened.close()

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return int(self.starts[-1]) * self.row_bytes

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[0:len(self)]
        return out if dtype is None else out.astype(dtype)

    def _read_run(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows [lo, hi) into `out` (hi - lo rows), one pread per chunk file touched."""
        pos = 0
        while lo < hi:
            c = int(np.searchsorted(self.starts, lo, side="right")) - 1
            path, offset, _ = self.files[c]
            end = min(hi, int(self.starts[c + 1]))
            if end > lo:
                _pread_into(self._open.fd(path), out[pos:pos + end - lo],
                            offset + (lo - int(self.starts[c])) * self.row_bytes, path)
            pos += end - lo
            lo = end

    def __getitem__(self, idx) -> np.ndarray:
        n = len(self)
        if isinstance(idx, tuple):  # rows first, then the rest of the index on what was read
            rows = self[idx[0]] if idx else self[:]
            rest = idx[1:]
            return rows[rest] if isinstance(idx[0], (int, np.integer)) else rows[(slice(None), *rest)]
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (n if idx < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {idx} outside a store field of {n} rows")
            out = np.empty((1, *self.row_shape), self.dtype)
            self._read_run(i, i + 1, out)
            return out[0]
        if isinstance(idx, slice):
            lo, hi, step = idx.indices(n)
            if step != 1:
                return self[np.arange(lo, hi, step)]
            out = np.empty((max(0, hi - lo), *self.row_shape), self.dtype)
            self._read_run(lo, max(lo, hi), out)
            return out
        rows = np.asarray(idx, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"rows outside a store field of {n} rows")
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        if not len(rows):
            return out
        chunk = np.searchsorted(self.starts, rows, side="right") - 1
        # runs of consecutive rows within one chunk file: one pread each
        cut = np.flatnonzero((np.diff(rows) != 1) | (np.diff(chunk) != 0)) + 1
        bounds = np.r_[0, cut, len(rows)]
        for i, j in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            c = int(chunk[i])
            path, offset, _ = self.files[c]
            _pread_into(self._open.fd(path), out[i:j], offset + (int(rows[i]) - int(self.starts[c])) * self.row_bytes,
                        path)
        return out


@dataclass
class Store:
    """A complete store: its layout/meta and its fields as ChunkedArrays."""

    path: Path
    meta: dict
    arrays: dict[str, ChunkedArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, f in self.meta["fields"].items():
            files = [(r["fields"][name]["file"], r["fields"][name]["offset"], r["fields"][name]["rows"])
                     for r in self.meta["chunks"]]
            self.arrays[name] = ChunkedArray(self.path / CHUNKS, f["dtype"], tuple(f["row_shape"]), files)

    def field(self, name: str) -> ChunkedArray:
        return self.arrays[name]

    @property
    def nbytes(self) -> int:
        return int(self.meta["bytes"])


def verify_chunks(path: Path, meta: dict, mode: str = "sample", rng: random.Random | None = None) -> list[str]:
    """Problems of a complete store's chunk files (empty = fine).

    `fast`: every file has its recorded size and the .npy header of its recorded dtype and shape. `sample`: that,
    plus the sha256 of one chunk picked at random. `full`: the sha256 of every file (`genshift cache verify`).
    """
    if mode not in VERIFY_MODES:
        raise ValueError(f"cache.verify: {mode!r}; expected one of {VERIFY_MODES}")
    chunks = Path(path) / CHUNKS
    problems = []
    records = meta.get("chunks") or []
    for rec in records:
        for name, f in rec["fields"].items():
            p = chunks / f["file"]
            try:
                size = p.stat().st_size
            except OSError:
                problems.append(f"chunk {rec['chunk']}: {f['file']} is missing")
                continue
            if size != f["bytes"]:
                problems.append(f"chunk {rec['chunk']}: {f['file']} has {size} bytes, expected {f['bytes']}")
                continue
            spec_f = meta["fields"][name]
            want = _header(spec_f["dtype"], (f["rows"], *spec_f["row_shape"]))
            with open(p, "rb") as fh:
                if len(want) != f["offset"] or fh.read(len(want)) != want:
                    problems.append(f"chunk {rec['chunk']}: {f['file']} does not start with its recorded header")
    if problems or mode == "fast" or not records:
        return problems
    chosen = records if mode == "full" else [(rng or random.Random()).choice(records)]
    for rec in chosen:
        for f in rec["fields"].values():
            if _sha256(chunks / f["file"]) != f["sha256"]:
                problems.append(f"chunk {rec['chunk']}: {f['file']} does not match its sha256")
    return problems


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bad_chunks(problems: list[str]) -> set[int]:
    """The chunk numbers named by verify_chunks' problems."""
    return {int(m.group(1)) for p in problems if (m := re.match(r"chunk (\d+):", p))}


def open_store(path: Path, spec: StoreSpec, verify: str = "sample", say_stale: bool = True) -> Store | None:
    """The complete store at `path` for exactly `spec`, checked per `verify`; else None.

    A store whose chunks are all done but whose meta.json is missing (its last shard was killed after its last
    chunk, or shards finished elsewhere) is finalized here. Chunks that fail the check are deleted (and announced)
    so that the next build rebuilds just those; a store of another key, layout or format is wiped.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"cache.verify: {verify!r}; expected one of {VERIFY_MODES}")
    path = Path(path)
    if not path.is_dir():
        return None
    meta = _read_json(path / META)
    layout = spec.layout()
    if meta is None or meta.get("store_format") != STORE_FORMAT:
        if (path / LAYOUT).is_file():
            w = StoreWriter(path, spec)  # wipes a store of another layout
            if not w.finalize():
                return None
            meta = _read_json(path / META)
        elif (path / META).is_file():  # a store of an older genshift (one data.npy)
            _say(say_stale, f"genshift: cache {path} was written by an older genshift; rebuilding it")
            _remove_store(path)
            return None
        else:
            return None
    if meta is None or not _same_content(meta, layout):
        _say(say_stale, f"genshift: cache {path}: its layout or key differs from this run's; rebuilding it")
        _remove_store(path)
        return None
    try:
        problems = verify_chunks(path, meta, verify)
        if not problems:
            return Store(path, meta)
        bad = bad_chunks(problems)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a damaged or planted meta.json
        _say(say_stale, f"genshift: cache {path}: its {META} is malformed ({type(e).__name__}); checking its chunks "
                        "again")
        (path / META).unlink(missing_ok=True)
        return None
    _say(say_stale, f"genshift: cache {path} is damaged ({problems[0]}{'; …' if len(problems) > 1 else ''}); "
                    f"rebuilding {len(bad)} chunk(s)")
    (path / META).unlink(missing_ok=True)
    for c in bad:
        (path / CHUNKS / chunk_name(c)).unlink(missing_ok=True)
        for name in spec.fields:
            (path / CHUNKS / chunk_name(c, name)).unlink(missing_ok=True)
    return None


def _say(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def store_progress(path: Path, spec: StoreSpec) -> tuple[int, int]:
    """(chunks done, bytes of done chunks) of a store that may be partial (for budgets: what is already there)."""
    path = Path(path)
    meta = _read_json(path / META)
    if meta is not None and meta.get("store_format") == STORE_FORMAT and "bytes" in meta \
            and _same_content(meta, spec.layout()):
        return len(meta.get("chunks") or []), int(meta["bytes"])
    layout = _read_json(path / LAYOUT)
    if layout is None or not _same_content(layout, spec.layout()):
        return 0, 0
    spec = replace(spec, items_per_chunk=int(layout["items_per_chunk"]))  # its own chunking
    done, nbytes = 0, 0
    for c in range(spec.n_chunks):
        rec = _read_json(path / CHUNKS / chunk_name(c))
        if rec is not None and _chunk_files_ok(path / CHUNKS, rec, spec):
            done += 1
            nbytes += sum(f["bytes"] for f in rec["fields"].values())
    return done, nbytes


# ------------------------------------------------------------------------------------------ cache directory


def describe_stores(cache_dir: Path) -> list[dict]:
    """Every store under `cache_dir`: kind, digest, bytes on disk, shape of each field, complete or chunks done."""
    out = []
    for kind in KINDS:
        for d in sorted((Path(cache_dir) / kind).glob("*")):
            if not d.is_dir():
                continue
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            meta = _read_json(d / META) or {}
            layout = _read_json(d / LAYOUT) or {}
            complete = meta.get("store_format") == STORE_FORMAT
            doc = meta if complete else layout
            shapes = {}
            n_chunks = done = 0
            try:
                if doc.get("fields"):
                    n_items, per = int(doc["n_items"]), int(doc["items_per_chunk"])
                    n_chunks = -(-n_items // per) if n_items else 0
                    for name, f in doc["fields"].items():
                        rows = sum(r["fields"][name]["rows"] for r in meta["chunks"]) if complete else \
                            (n_items * f["rows_per_item"] if f["rows_per_item"] is not None else None)
                        shapes[name] = [rows, *f["row_shape"]]
                    done = n_chunks if complete else len(list((d / CHUNKS).glob("*.json")))
            except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError):  # malformed records
                shapes, n_chunks, done, complete = {}, 0, 0, False
            out.append({"kind": kind, "digest": d.name, "path": str(d), "bytes": size, "shape": shapes or None,
                        "complete": complete, "chunks": n_chunks, "chunks_done": done,
                        "legacy": bool(meta) and not complete})
    return out


def clear_stores(cache_dir: Path, kinds: tuple[str, ...] | None = None) -> int:
    """Delete the stores of `kinds` (default all kinds); return the bytes freed."""
    freed = 0
    for store in describe_stores(cache_dir):
        if kinds is None or store["kind"] in kinds:
            freed += store["bytes"]
            shutil.rmtree(store["path"])
    return freed


def cache_kinds() -> tuple[str, ...]:
    """Sub-directories of a cache dir that hold stores (datasets/ and checks/ are not ours to clear)."""
    return KINDS
