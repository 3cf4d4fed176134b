"""`genshift bench --data-path`: how fast one data-loader worker decodes and augments images of the release's
sizes, and how many workers a GPU's forward rate needs.

Test images of each `--sizes` side (JPEG or PNG, made here, nothing downloaded) are put through exactly what a
streamed run does per item, in one single-threaded process (one DataLoader worker): `decode`; `train_copy` =
decode + one augmented training copy at the detector's input (protocols.data.TrainCopies, as with
`cache.train_inputs: stream`); `eval_input` = decode + the mandatory degradation chain + the detector's crop (the
eval stream, as with `cache.eval_inputs: false`, and the eval store's build), per CPU second of that process
(the rate of one dedicated core, steady on a shared machine). Then the same with every core (a process pool, as
the cache builds run; wall time) to show how it scales. For each `--forward-rate` (images/s the model
consumes on the GPU) it prints the workers needed: ceil(rate / per-worker images/s of training copies).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import time
from pathlib import Path

from protocols.config_model import ConfigLike


def _make_images(root: Path, sizes: list[int], per_size: int, fmt: str) -> list[tuple[int, str]]:
    from PIL import Image

    from benchmark.testdata import make_image

    out = []
    for side in sizes:
        for j in range(per_size):
            img = make_image(side * 1000 + j, j % 2, size=(side, int(side * (1.0 + 0.25 * (j % 3)))))
            path = root / f"{side}_{j}.{'jpg' if fmt == 'jpeg' else 'png'}"
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG" if fmt == "jpeg" else "PNG",
                                      **({"quality": 95} if fmt == "jpeg" else {}))
            path.write_bytes(buf.getvalue())
            out.append((side, path.name))
    return out


def _decode_job(args: tuple) -> int:
    from benchmark.imagestore import read_image

    return read_image(args[0], args[1]).shape[0]


def _train_job(args: tuple) -> int:
    from benchmark.train_cache import train_copy

    root, path, sid, size, seed, profile, resize = args
    return train_copy(root, path, sid, sid % 4, size, seed, profile, resize).shape[1]


def _eval_job(args: tuple) -> int:
    from benchmark.eval_cache import degraded_input

    root, path, pos, profile, seed, size, strategy = args
    return degraded_input(root, path, pos, profile, seed, size, strategy).shape[1]


def _rate(fn, jobs: list, workers: int, rounds: int) -> float:
    """Images/s of `fn` over `jobs` with `workers` processes (1 = here, single-threaded, per CPU second): the best
    of `rounds`. A pool is started and warmed (one job per worker) before it is timed, as a DataLoader's are."""
    best = math.inf
    if workers == 1:  # CPU time of this single-threaded process: what one dedicated core gives, even when shared
        for _ in range(rounds):
            t = time.process_time()
            for j in jobs:
                fn(j)
            best = min(best, time.process_time() - t)
        return len(jobs) / best
    import concurrent.futures as cf

    from benchmark.store_build import worker_init
    from benchmark.worker_server import worker_context

    with cf.ProcessPoolExecutor(max_workers=workers, initializer=worker_init, mp_context=worker_context()) as pool:
        list(pool.map(fn, jobs[:workers]))
        for _ in range(rounds):
            t = time.perf_counter()
            list(pool.map(fn, jobs))
            best = min(best, time.perf_counter() - t)
    return len(jobs) / best


def data_path_bench(args, cfg: ConfigLike) -> dict:
    """Decode + augmentation images/s per worker at the chosen sizes; `cfg`: the bench's resolved config."""
    import cv2
    import torch

    from protocols.config_model import run_config

    rc = run_config(cfg)
    from detectors import create_detector

    meta = create_detector(rc.detector, pretrained="none").meta
    tc = rc.train
    sizes = [int(s) for s in str(args.sizes).split(",")]
    per_size = max(2, int(args.images or 12))
    rounds = max(1, min(3, int(args.rounds)))  # the best of a few: the machine is shared
    strategy = rc.eval.input.value if rc.eval.input is not None else meta.eval_resize
    deg = rc.degradation
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    res: dict = {"mode": "data-path", "detector": meta.name, "input_size": meta.input_size,
                 "augmentation": tc.augmentation.value, "degradation": deg.spec, "eval_input": strategy,
                 "format": args.format, "images_per_size": per_size, "cores": cores, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="genshift-datapath-") as tmp:
        images = _make_images(Path(tmp), sizes, per_size, args.format)
        for side in sizes:
            names = [n for s, n in images if s == side]
            jobs = {
                "decode": (_decode_job, [(tmp, n) for n in names]),
                "train_copy": (_train_job, [(tmp, n, i, meta.input_size, rc.seed, tc.augmentation.value,
                                             meta.eval_resize) for i, n in enumerate(names)]),
                "eval_input": (_eval_job, [(tmp, n, i, deg.spec, deg.base_seed, meta.input_size,
                                            strategy) for i, n in enumerate(names)]),
            }
            row = {}
            for name, (fn, js) in jobs.items():
                row[name] = {"per_worker": round(_rate(fn, js, 1, rounds), 1)}
                if cores > 1:
                    row[name][f"{cores}_workers"] = round(_rate(fn, js * 4, cores, rounds), 1)
            res["sizes"][str(side)] = row
    per_worker = min(r["train_copy"]["per_worker"] for r in res["sizes"].values())
    res["slowest_train_copy_per_worker"] = per_worker
    res["workers_needed"] = {str(rate): math.ceil(float(rate) / per_worker) for rate in args.forward_rate}
    return res


def print_data_path(doc: dict) -> None:
    print(f"genshift bench --data-path: {doc['detector']} (input {doc['input_size']} px, augmentation "
          f"{doc['augmentation']}, eval {doc['degradation']} + {doc['eval_input']}), {doc['format']} images, "
          f"{doc['images_per_size']} per size, {doc['cores']} core(s)")
    print(f"{'side px':>8} {'stage':<11} {'img/s per worker':>17} {'img/s, all cores':>17}")
    for side, row in doc["sizes"].items():
        for stage, r in row.items():
            allc = next((v for k, v in r.items() if k.endswith("_workers")), None)
            print(f"{side:>8} {stage:<11} {r['per_worker']:>17.1f} {'' if allc is None else f'{allc:.1f}':>17}")
    for rate, n in doc["workers_needed"].items():
        print(f"a forward rate of {rate} training images/s needs {n} data-loader worker(s) "
              f"(at {doc['slowest_train_copy_per_worker']:.1f} copies/s per worker on the largest images)")
