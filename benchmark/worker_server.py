"""The fork server that cache-building workers start from (import-light: no torch here).

The server imports the job modules once; each worker is then forked from it in milliseconds instead of
importing torch, torchvision and OpenCV again. ``genshift run`` starts it before importing anything heavy, so
its seconds of imports run on the second core while the main process imports torch and Lightning.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context

# Where the pool's job functions live, then what the degradation jobs import lazily (albumentations, ~0.5 s
# in each worker otherwise); benchmark.eval_cache first: it turns off albumentations' update check.
WORKER_MODULES = ["benchmark.eval_cache", "benchmark.train_cache", "benchmark.store_build", "benchmark.reference_eval_cache",
                  "albumentations"]


def worker_context() -> multiprocessing.context.BaseContext:
    """The forkserver context whose server preloads WORKER_MODULES."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_MODULES)
    return ctx


def start_worker_server() -> None:
    """Start the fork server in the background (idempotent); harmless if no cache is built: it exits with
    this process."""
    import multiprocessing.forkserver
    import threading

    worker_context()
    threading.Thread(target=multiprocessing.forkserver.ensure_running, name="genshift-forkserver",
                     daemon=True).start()


def wait_for_worker_server() -> None:
    """Start the fork server if needed and block until it has imported its modules (one worker is forked).

    For timings that, like a `genshift run` whose server boots while the main process imports, should not
    count the server's one-off start-up.
    """
    import concurrent.futures as cf
    import os

    with cf.ProcessPoolExecutor(max_workers=1, mp_context=worker_context()) as pool:
        pool.submit(os.getpid).result()
