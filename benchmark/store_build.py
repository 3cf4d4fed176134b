"""Building chunked stores in parallel: one job per item, results gathered in item order into chunks.

`ordered_map` runs the jobs in a process pool with a bounded number of batches in flight (memory stays a few
batches deep whatever the number of jobs) and yields results in order; `build_store` feeds them, chunk by chunk,
to a `StoreWriter`, skipping the chunks already done (resume) and, for a shard of a cluster build, the chunks of
other shards. `should_stop` is asked between chunks, so a preempted build ends after a finished chunk.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from benchmark.array_store import Store, StoreError, StoreSpec, StoreWriter, open_store
from benchmark.progress import counted_progress


def worker_init() -> None:
    """One thread per worker process: the pool already uses every core."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _call_batch(fn: Callable, jobs: list) -> list:
    return [fn(j) for j in jobs]


def ordered_map(fn: Callable, jobs: Sequence, workers: int, batch: int = 0) -> Iterator:
    """fn(job) for every job, in order, computed by `workers` processes (1 = here) with at most 4 batches per
    worker in flight."""
    workers = max(1, min(int(workers), os.cpu_count() or 1, len(jobs) or 1))
    if workers == 1:
        for j in jobs:
            yield fn(j)
        return
    batch = batch or max(1, min(32, len(jobs) // (8 * workers)))
    from benchmark.worker_server import worker_context

    # forkserver, not fork: a child forked from a parent whose OpenMP pool is running (torch, OpenCV) can
    # deadlock on its first threaded call; the server imports the job modules once, so workers start in ms.
    pool = cf.ProcessPoolExecutor(max_workers=workers, initializer=worker_init, mp_context=worker_context())
    pending: deque = deque()
    starts = iter(range(0, len(jobs), batch))
    try:
        for _ in range(4 * workers):
            s = next(starts, None)
            if s is None:
                break
            pending.append(pool.submit(_call_batch, fn, list(jobs[s:s + batch])))
        while pending:
            results = pending.popleft().result()
            s = next(starts, None)
            if s is not None:
                pending.append(pool.submit(_call_batch, fn, list(jobs[s:s + batch])))
            yield from results
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _as_fields(spec: StoreSpec, value) -> dict[str, np.ndarray]:
    """A job's result as {field: rows of this item}: a dict, or one array for a single-field store (one row per
    item may come without its leading axis)."""
    if isinstance(value, dict):
        return value
    (name, f), = spec.fields.items()
    arr = np.asarray(value)
    if f.rows_per_item == 1 and arr.shape == tuple(f.row_shape):
        arr = arr[None]
    return {name: arr}


class ChunkSink:
    """Collects items in order and writes each chunk when its last item arrives. Fields with a fixed number of rows
    per item fill one buffer allocated once and reused for every chunk (no allocation per chunk: the heap stays
    the same size however many chunks a store has); variable fields are gathered and joined."""

    def __init__(self, writer: StoreWriter, chunks: Sequence[int]):
        self.writer, self.spec = writer, writer.spec
        self.order = list(chunks)
        self.k = 0
        self.buffers = {n: np.empty((self.spec.items_per_chunk * f.rows_per_item, *f.row_shape), f.dtype)
                        for n, f in self.spec.fields.items() if f.rows_per_item is not None and self.order}
        self._start()

    def _start(self) -> None:
        self.parts: dict[str, list] = {n: [] for n in self.spec.fields if n not in self.buffers}
        if self.k < len(self.order):
            self.a, self.b = self.spec.chunk_items(self.order[self.k])
            self.next = self.a

    def items(self) -> Iterator[int]:
        """The items to produce, in order."""
        for c in self.order:
            a, b = self.spec.chunk_items(c)
            yield from range(a, b)

    def put(self, item: int, value) -> int | None:
        """Add one item's rows; returns the chunk number when this completed (and wrote) a chunk."""
        if self.k >= len(self.order) or item != self.next:
            raise StoreError(f"{self.writer.path}: item {item} arrived out of order")
        for name, rows in _as_fields(self.spec, value).items():
            f = self.spec.fields[name]
            if name in self.buffers:
                rows = np.asarray(rows)
                if rows.shape != (f.rows_per_item, *f.row_shape):
                    raise StoreError(f"{self.writer.path}: item {item}, field {name!r}: rows of shape {rows.shape}, "
                                     f"expected ({f.rows_per_item}, {', '.join(map(str, f.row_shape))})")
                i = (item - self.a) * f.rows_per_item
                self.buffers[name][i:i + f.rows_per_item] = rows
            else:
                self.parts[name].append(np.asarray(rows))
        self.next += 1
        if self.next < self.b:
            return None
        c = self.order[self.k]
        arrays = {n: _concat(p, self.spec.fields[n]) for n, p in self.parts.items()}
        for n, buf in self.buffers.items():
            arrays[n] = buf[:(self.b - self.a) * self.spec.fields[n].rows_per_item]
        self.writer.write_chunk(c, arrays)
        self.k += 1
        self._start()
        return c


def _concat(parts: list, f) -> np.ndarray:
    if not parts:
        return np.zeros((0, *f.row_shape), f.dtype)
    return np.concatenate(parts, axis=0) if len(parts) > 1 else np.ascontiguousarray(parts[0])


def shard_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
    """Chunks of shard (i, n): a contiguous range, ranges of all shards covering every chunk once."""
    if shard is None:
        return list(range(n_chunks))
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: expected 0 <= i < n")
    return list(range(i * n_chunks // n, (i + 1) * n_chunks // n))


def build_store(
    path: Path, spec: StoreSpec, fn: Callable, jobs: Sequence, workers: int = 1, progress: bool = False,
    label: str = "building", shard: tuple[int, int] | None = None,
    should_stop: Callable[[], None] | None = None, verify: str = "sample",
) -> Store | None:
    """Build the chunks of `spec` at `path` that are not done (all, or those of `shard`) and return the store once
    complete (None while other shards are still missing). jobs[i] is the argument of fn for item i."""
    if len(jobs) != spec.n_items:
        raise StoreError(f"{len(jobs)} jobs for a store of {spec.n_items} items")
    store = open_store(path, spec, verify)
    if store is not None:
        return store
    writer = StoreWriter(path, spec)
    spec = writer.spec  # a partial store's own chunking, if it was started with another chunk size
    todo = [c for c in shard_chunks(spec.n_chunks, shard) if c not in writer.done_chunks()]
    sink = ChunkSink(writer, todo)
    items = list(sink.items())
    with counted_progress(progress) as bar:
        task = bar.add_task(label, total=len(items))
        for item, value in zip(items, ordered_map(fn, [jobs[i] for i in items], workers), strict=True):
            if sink.put(item, value) is not None and should_stop is not None:
                should_stop()
            bar.advance(task)
    writer.finalize()
    return open_store(path, spec, "fast")


def build_in_memory(spec: StoreSpec, fn: Callable, jobs: Sequence, workers: int = 1, progress: bool = False,
                    label: str = "building") -> dict[str, np.ndarray]:
    """What `build_store` would write, as in-memory arrays (no cache directory: small data, tests, benches)."""
    parts: dict[str, list] = {n: [] for n in spec.fields}
    with counted_progress(progress) as bar:
        task = bar.add_task(label, total=len(jobs))
        for value in ordered_map(fn, jobs, workers):
            for name, rows in _as_fields(spec, value).items():
                parts[name].append(np.asarray(rows))
            bar.advance(task)
    return {n: _concat(p, spec.fields[n]) for n, p in parts.items()}


def cached_store(
    cache_dir: Path | None, spec: StoreSpec, fn: Callable, jobs: Sequence, workers: int = 1,
    progress: bool = False, label: str = "building", verify: str = "sample",
    shard: tuple[int, int] | None = None, should_stop: Callable[[], None] | None = None,
) -> tuple[dict | None, dict]:
    """Load the store of `spec` under `cache_dir` or build (the missing chunks of) it; `cache_dir=None` builds in
    memory. Returns ({field: ChunkedArray or ndarray} — None when a shard left other chunks to build — and
    {"kind", "digest", "path", "hit", "bytes"} for run.json)."""
    info = {"kind": spec.kind, "digest": spec.digest, "path": None, "hit": False}
    if cache_dir is None:
        arrays = build_in_memory(spec, fn, jobs, workers, progress, label)
        return arrays, info | {"bytes": int(sum(a.nbytes for a in arrays.values()))}
    from benchmark.array_store import store_dir

    path = store_dir(cache_dir, spec.kind, spec.key)
    info["path"] = str(path)
    t, cpu = time.perf_counter(), time.process_time()
    store = open_store(path, spec, verify)
    info["verify_seconds"] = round(time.perf_counter() - t, 4)  # what a warm start spends checking this store
    info["verify_cpu_seconds"] = round(time.process_time() - cpu, 4)
    info["verify"] = verify
    if store is not None:
        return dict(store.arrays), info | {"hit": True, "bytes": store.nbytes}
    store = build_store(path, spec, fn, jobs, workers, progress, label, shard, should_stop, verify)
    if store is None:
        return None, info | {"bytes": None}
    return dict(store.arrays), info | {"bytes": store.nbytes}
