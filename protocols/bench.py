"""`genshift bench`: images/s of every stage on the same data in one run, as ratios (DESIGN §8).

Stage mode: decode, degradation, pure model forward, whole evaluation from the cache and streamed like the
reference, a training step (cached copies and streamed), probe head-only evaluation, and the leaderboard. The
forward and the cached evaluation are timed in adjacent rounds and compared round by round (`--rounds`).
`--whole-run`: the embedded benchmark end to end with every cache off (reference-style), then on with empty
caches (cold), then on again with the caches left by the previous run (warm), `--repeats` rounds of the three;
predictions must be identical. All runs share this process, so process start-up (imports, the cache workers'
fork server) precedes every timing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import predictions_file
from common import run_dir as layout
from protocols.config_model import RunConfig

STORES = ("eval_inputs", "train_inputs", "eval_features", "train_features")  # run.json "caches" entries
ROUNDS = 9  # paired rounds of the model forward and the cached evaluation (`--rounds`)


def _timed(fn, n: int, repeat: int = 1) -> dict:
    """Time `fn` over `n` images; with `repeat` > 1 the fastest of that many calls (as timeit does: the
    others measure the machine's noise). Only for idempotent stages."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _timing(times, n)


def _timing(times: list[float], n: int) -> dict:
    """Seconds (the fastest call), images/s from it, and with several calls their median and count."""
    best = min(times)
    out = {"seconds": round(best, 3), "images": n, "images_per_s": round(n / max(best, 1e-9), 1)}
    if len(times) > 1:
        out |= {"repeats": len(times), "median_seconds": round(float(np.median(times)), 3)}
    return out


def _paired(fn_a, fn_b, rounds: int) -> tuple[list[float], list[float]]:
    """Times of `fn_a` and `fn_b` called back to back in `rounds` rounds, alternating which goes first.

    On a shared machine the speed drifts by tens of percent within seconds; two stages timed minutes apart
    give a ratio of that drift. Adjacent calls see the same machine, so their per-round ratio is stable."""
    ta: list[float] = []
    tb: list[float] = []
    for r in range(rounds):
        for fn, out in ((fn_a, ta), (fn_b, tb)) if r % 2 == 0 else ((fn_b, tb), (fn_a, ta)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return ta, tb


def _ratio_summary(num: list[float], den: list[float]) -> dict:
    """Median (and range) of the per-round ratios num[r] / den[r]."""
    q = [a / max(b, 1e-12) for a, b in zip(num, den, strict=True)]
    return {"median": round(float(np.median(q)), 3), "min": round(min(q), 3), "max": round(max(q), 3),
            "rounds": len(q)}


def _cfg(args) -> RunConfig:
    from protocols.config import parse_override
    from protocols.config_model import resolve_run_config

    over = [{"cache_dir": args.cache_dir} if args.cache_dir else {}]
    over += [{"dataset": args.dataset}] if args.dataset else []
    over += [parse_override(s) for s in args.set]
    return resolve_run_config(args.preset, args.detector, [], over)


def _lightning_quiet() -> None:
    from protocols.trainer import quiet_lightning

    quiet_lightning()
    import warnings

    warnings.filterwarnings("ignore", message=".*srun.*")
    warnings.filterwarnings("ignore", message=".*custom batch sampler.*")


def _predict(detector, ds, train_cfg: dict, precision: str, batch_size: int, workers: int, features: bool,
             device):
    """Logits of `ds` in order, through the engine's single-process scoring loop on `device`."""
    from torch.utils.data import DataLoader

    from protocols.distributed import EvalBatches
    from protocols.module import DetectorModule
    from protocols.scoring import score_batches

    loader = DataLoader(ds, batch_sampler=EvalBatches(len(ds), batch_size), num_workers=workers,
                        collate_fn=getattr(ds, "collate", None) or getattr(getattr(ds, "dataset", None), "collate", None))
    out = score_batches(DetectorModule(detector, train_cfg, 1, features_in=features), loader, precision, device)
    return np.concatenate([o[0].cpu().numpy() for o in out])


def _fit(detector, ds, train_cfg: dict, features: bool, workers: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    from protocols.module import DetectorModule
    from protocols.trainer import build_trainer

    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=int(train_cfg["batch_size"]), shuffle=True, generator=g, num_workers=workers)
    trainer = build_trainer(train_cfg["precision"], n_batches=len(loader), gradient_clip_val=train_cfg["grad_clip"])
    trainer.fit(DetectorModule(detector, train_cfg, len(loader), features_in=features), train_dataloaders=loader)


@dataclass
class _Setup:
    """What every stage of `bench_stages` shares: the config, benchmark, detector and the run's resolved settings."""

    cfg: RunConfig
    bench: Any
    detector: Any
    tc: dict  # train config resolved for this machine
    eprec: str  # eval precision
    ids: Any  # the first n eval sample ids
    pipe: Any  # the resolved input pipeline
    bs: int  # eval batch size
    workers: int
    dev: Any  # where the engine scores

    @property
    def n(self) -> int:
        return len(self.ids)


def bench_stages(args) -> dict:
    """Every stage on the same `--images` eval images (and as many training copies)."""
    import torch

    from leaderboard.bench import bench_leaderboard

    s = _stage_setup(args)
    res: dict[str, dict] = {}
    eval_ds, stream_ds = _data_stages(s, res)
    n_crops, paired, identical = _eval_stages(s, eval_ds, stream_ds, args.rounds, res)
    n_copies = _train_stages(s, res)
    lb = {}
    res["leaderboard"] = _timed(lambda: lb.update(bench_leaderboard(args.lb_runs, len(s.bench.windows), s.n, 0)),
                                args.lb_runs * len(s.bench.windows) * s.n)
    # From images/s, which _timed takes from the unrounded time (`seconds` is rounded to 1 ms, too coarse for
    # a stage of a few dozen images).
    ref, fwd = res["eval_uncached"]["images_per_s"], res["model_forward"]["images_per_s"]
    for r in res.values():
        r["speedup_vs_uncached_eval"] = round(r["images_per_s"] / max(ref, 1e-12), 2)
        r["cost_vs_model_forward"] = round(fwd / max(r["images_per_s"], 1e-12), 2)
    meta = s.detector.meta
    return {"mode": "stages", "detector": meta.name, "dataset": s.cfg.dataset, "images": s.n, "crops": n_crops,
            "input_size": meta.input_size, "pipeline": s.pipe.to_dict(),
            "train_copies": n_copies, "precision": {"train": s.tc["precision"], "eval": s.eprec},
            "channels_last": s.tc["channels_last"], "workers": s.workers, "threads": torch.get_num_threads(),
            "cached_equals_uncached": identical, "eval_cached_vs_forward_paired": paired, "stages": res,
            "leaderboard_detail": lb}


def _stage_setup(args) -> _Setup:
    """The benchmark, the detector and the settings a run would resolve, built outside every timing."""
    import torch

    from benchmark.worker_server import wait_for_worker_server
    from detectors import create_detector, init_seed_kwargs
    from protocols.engine import prepare_benchmark
    from protocols.pipeline import resolve_pipeline
    from protocols.scoring import eval_device
    from protocols.speed import resolve_precision, resolve_train_cfg

    _lightning_quiet()
    cfg = _cfg(args)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    bench = prepare_benchmark(cfg, progress=False)
    # Process start-up is outside every timing: the cache workers' fork server (which `genshift run` boots while
    # it imports torch) is up before the cache build is timed, as in --whole-run.
    wait_for_worker_server()
    detector = create_detector(cfg.detector, pretrained=cfg.pretrained, **init_seed_kwargs(cfg.detector, cfg.seed))
    tc = resolve_train_cfg(cfg, detector)
    if tc["channels_last"]:
        detector.to(memory_format=torch.channels_last)
    eprec = resolve_precision(cfg.eval.precision, cfg, "eval.precision")
    # By default the whole eval split: the acceptance compares "evaluation of a window" with the forward.
    n = min(args.images or len(bench.plan.sample_ids), len(bench.plan.sample_ids))
    pipe = resolve_pipeline(cfg, detector.meta)  # eval.pipeline / eval.input / eval.normalize, as a run resolves
    return _Setup(cfg, bench, detector, tc, eprec, bench.plan.sample_ids[:n], pipe, cfg.eval.batch_size,
                  int(tc["num_workers"]), eval_device(cfg))


def _data_stages(s: _Setup, res: dict) -> tuple:
    """decode, degrade and build_eval_cache; returns the cached and the streamed eval datasets of the n images."""
    from types import SimpleNamespace

    from benchmark.degradations import degrade
    from benchmark.eval_cache import eval_jobs
    from benchmark.imagestore import read_image
    from protocols.run_inputs import eval_pixels

    prof, bseed = s.cfg.degradation.spec, s.cfg.degradation.base_seed
    jobs = eval_jobs(s.bench.manifest, s.ids, prof, bseed, s.detector.meta.input_size, s.pipe.input)
    subset = SimpleNamespace(manifest=s.bench.manifest, plan=SimpleNamespace(sample_ids=s.ids))
    imgs: list = []
    res["decode"] = _timed(lambda: imgs.extend(read_image(j[0], j[1]) for j in jobs), s.n)
    res["degrade"] = _timed(lambda: [degrade(im, j[2], prof, bseed) for im, j in zip(imgs, jobs, strict=True)], s.n)
    ds_box: list = []
    res["build_eval_cache"] = _timed(lambda: ds_box.append(eval_pixels(s.cfg, subset, s.pipe, None, True,
                                                                       max(1, s.workers), False)[0]), s.n)
    return ds_box[0], eval_pixels(s.cfg, subset, s.pipe, None, False, s.workers, False)[0]


def _eval_stages(s: _Setup, eval_ds, stream_ds, rounds: int, res: dict) -> tuple[int, dict, bool]:
    """model_forward and eval_cached (paired rounds), eval_uncached, and a probe's features; returns (crops, the
    paired ratio, whether every way of scoring gave identical logits)."""
    import torch
    from torch.utils.data import Subset, default_collate

    from protocols.cached_data import ArrayEval
    from protocols.crop_data import GroupedRows, crop_rows, is_grouped
    from protocols.feature_cache import Extraction, extract_features
    from protocols.module import DetectorModule

    detector, tc, eprec, bs, dev, n = s.detector, s.tc, s.eprec, s.bs, s.dev, s.n
    # The pure forward's input: every crop of the n images, normalised as the scoring loop normalises them.
    batch = (getattr(eval_ds, "collate", None) or default_collate)(eval_ds.__getitems__(list(range(n))))
    n_crops = len(batch[0])
    x = DetectorModule(detector, tc, 1).normalise(batch[0])
    detector.eval()
    x = x.to(dev)
    dtype = torch.bfloat16 if eprec == "bf16-mixed" else torch.float32

    def forward() -> None:
        detector.to(dev)  # the scoring loop hands the model back on the CPU, as Lightning does (no-op on a CPU)
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=eprec == "bf16-mixed"):
            for i in range(0, n_crops, bs * n_crops // n):  # the scoring loop's batches: bs images' crops
                detector(x[i:i + bs * n_crops // n])
        if dev.type == "cuda":
            torch.cuda.synchronize()

    forward()  # warm-up (oneDNN primitive creation)
    _predict(detector, Subset(eval_ds, list(range(min(n, bs)))), tc, eprec, bs, 0, False, dev)  # warm-up
    out: dict = {}
    # The pair that the "eval from the cache ≤ 1.2× the forward" target compares: each takes a fraction of a
    # second for a small model, so they are timed in adjacent pairs of calls (idempotent: the first outputs
    # are kept) and compared round by round.
    t_fwd, t_eval = _paired(forward, lambda: out.setdefault("c", _predict(detector, eval_ds, tc, eprec, bs,
                                                                          0, False, dev)), rounds)
    res["model_forward"] = _timing(t_fwd, n)
    res["eval_cached"] = _timing(t_eval, n)
    res["eval_uncached"] = _timed(lambda: out.setdefault("u", _predict(detector, stream_ds, tc, eprec, bs,
                                                                           s.workers, False, dev)), n)
    identical = bool(np.array_equal(out["c"], out["u"]))
    if detector.is_probe:
        feats: list = []
        how = Extraction(tc, eprec, "auto", batch_size=bs)
        res["probe_features"] = _timed(lambda: feats.append(extract_features(
            detector, crop_rows(eval_ds) if is_grouped(eval_ds) else eval_ds, how)), n)
        fds = GroupedRows(feats[0], eval_ds.offsets, features_in=True) if is_grouped(eval_ds) \
            else ArrayEval(feats[0], features_in=True)
        res["eval_from_features"] = _timed(lambda: out.setdefault("f", _predict(
            detector, fds, tc, eprec, bs, 0, True, dev)), n)
        identical = identical and bool(np.array_equal(out["c"], out["f"]))
    return n_crops, _ratio_summary(t_eval, t_fwd), identical


def _train_stages(s: _Setup, res: dict) -> int:
    """train_cached and train_uncached from the same weights (restored afterwards); returns the copies trained."""
    from benchmark.reference_train_augment import NAME as REFERENCE_AUGMENTATION
    from benchmark.train_cache import build_or_load_train_inputs
    from protocols.cached_data import ArrayTrainCopies
    from protocols.data import ReferenceTrainCopies, TrainCopies

    detector, tc, meta, m, workers = s.detector, s.tc, s.detector.meta, s.bench.manifest, s.workers
    train_ids = sorted(s.bench.train_sets[0])[: max(1, s.n // int(tc["augmentation_factor"]))]
    targs = (int(tc["augmentation_factor"]), meta.input_size, s.cfg.seed, tc["augmentation"],
             meta.eval_resize)
    n_copies = len(train_ids) * targs[0]
    detector.train()
    state = {k: v.clone() for k, v in detector.trainable_state_dict().items()}
    if tc["augmentation"] == REFERENCE_AUGMENTATION:  # streamed in every window: there is no cached variant
        res["train_uncached"] = _timed(lambda: _fit(detector, ReferenceTrainCopies(
            m, train_ids, targs[0], meta.input_size, s.cfg.seed, 0,
            s.cfg.train.augmentation_base_seed), tc, False, workers), n_copies)
    else:
        tarr, rows, _ = build_or_load_train_inputs(m, train_ids, *targs, None, max(1, workers), False)
        res["train_cached"] = _timed(lambda: _fit(detector, ArrayTrainCopies(tarr, rows, m, train_ids, targs[0]), tc,
                                                  False, 0), n_copies)
        detector.load_trainable_state_dict(state)
        res["train_uncached"] = _timed(lambda: _fit(detector, TrainCopies(m, train_ids, *targs), tc, False, workers),
                                       n_copies)
    detector.load_trainable_state_dict(state)
    return n_copies


def bench_whole_run(args) -> dict:
    """End-to-end runs: caches off, caches on (cold), caches on (warm); wall-clock and identical predictions."""
    from protocols.engine import checked_manifest, run_experiment

    cfg = _cfg(args)
    data_cache = cfg.cache_path
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="genshift-bench-") as tmp:
        tmp = Path(tmp)
        (data_cache / "datasets").mkdir(parents=True, exist_ok=True)
        from benchmark.sources import load_source
        from benchmark.worker_server import wait_for_worker_server

        # Process start-up is outside every timing (imports happen before the first run); the cache workers'
        # fork server is part of it: `genshift run` boots it while its main process imports torch.
        wait_for_worker_server()
        off = {"eval_inputs": False, "train_inputs": False, "probe_features": False}
        on = {"eval_inputs": True, "train_inputs": True, "probe_features": True}
        modes = (("uncached", off), ("cached_cold", on), ("cached_warm", on))
        times: dict[str, list[float]] = {name: [] for name, _ in modes}
        found: dict[str, list[dict]] = {name: [] for name, _ in modes}
        runs: dict[str, Path] = {}
        for r in range(args.repeats):
            # Each repeat is one round of the three modes, back to back, so all three see the same machine;
            # a cold run starts from an empty cache directory of its own (the warm run after it reuses it).
            work_cache = tmp / f"cache_{r}"
            work_cache.mkdir()
            (work_cache / "datasets").symlink_to((data_cache / "datasets").resolve())  # dataset reused, not timed
            # The dataset build and its data check (cached per manifest in the cache dir) are one-off work
            # outside every timing: left inside, only the round's first run (uncached) would pay for the check.
            checked_manifest(load_source(cfg.dataset, work_cache, progress=False), cfg, work_cache, progress=False)
            for name, switches in modes:
                c = cfg.replace(cache=switches, cache_dir=str(work_cache), runs_dir=str(tmp / "runs"),
                                experiment=f"{name}_{r}", loggers=[])
                t = time.perf_counter()
                runs[f"{name}_{r}"] = run_experiment(c, progress=False)
                times[name].append(time.perf_counter() - t)
                caches = layout.read_run_json(runs[f"{name}_{r}"])["caches"]
                # which stores the run found ready (true) or built (false): cold must build, warm must find
                found[name].append({k: v["hit"] for k, v in caches.items() if k in STORES and v.get("cached", True)})
        n_windows = len(layout.read_run_json(runs["uncached_0"])["windows"])
        same = True
        for k in range(n_windows):
            z = [predictions_file.read(layout.predictions_path(layout.window_dir(d, k)))["fused_logits"]
                 for d in runs.values()]
            same = same and all(np.array_equal(z[0], zi) for zi in z[1:])
    base = times["uncached"]
    for name, t in times.items():
        results[name] = {"seconds": round(min(t), 3), "speedup_vs_uncached": round(min(base) / max(min(t), 1e-9), 2),
                         "stores_found": found[name]}
        if len(t) > 1:  # per-round ratios: each round's three runs are adjacent in time
            results[name] |= {"all_seconds": [round(x, 3) for x in t],
                              "speedup_per_round": [round(u / max(x, 1e-9), 2) for u, x in zip(base, t, strict=True)]}
    return {"mode": "whole-run", "detector": cfg.detector, "dataset": cfg.dataset, "preset": args.preset,
            "overrides": args.set, "windows": n_windows, "repeats": args.repeats, "identical_predictions": same,
            "runs": results}


def _print(doc: dict) -> None:
    if doc["mode"] == "stages":
        pipe = doc.get("pipeline") or {}
        print(f"genshift bench: {doc['detector']} on {doc['images']} eval images / {doc['train_copies']} training "
              f"copies of {doc['dataset']} (precision {doc['precision']}, channels-last {doc['channels_last']}, "
              f"{doc['workers']} workers, {doc['threads']} threads)")
        if pipe:
            print(f"input pipeline: {pipe['pipeline']}, {pipe['input']} at {pipe['size']} px, {pipe['normalize']} "
                  f"statistics; {doc['crops']} crops scored")
        print(f"{'stage':<20} {'images/s':>10} {'seconds':>9} {'× faster than uncached eval':>28} "
              f"{'cost / model forward':>21}")
        for name, r in doc["stages"].items():
            print(f"{name:<20} {r['images_per_s']:>10.1f} {r['seconds']:>9.2f} {r['speedup_vs_uncached_eval']:>28.2f} "
                  f"{r['cost_vs_model_forward']:>21.2f}")
        p = doc["eval_cached_vs_forward_paired"]
        print(f"evaluation from the cache / model forward, paired calls: median {p['median']:.2f}× "
              f"(range {p['min']:.2f}–{p['max']:.2f} over {p['rounds']} rounds)")
        print(f"cached and uncached evaluation give identical logits: {doc['cached_equals_uncached']}")
    else:
        print(f"genshift bench --whole-run: {doc['detector']} on {doc['dataset']} ({doc['windows']} windows, "
              f"fastest of {doc['repeats']} round(s))")
        for name, r in doc["runs"].items():
            rounds = f"   per round: {', '.join(f'{x:.2f}×' for x in r['speedup_per_round'])}" \
                if "speedup_per_round" in r else ""
            print(f"  {name:<12} {r['seconds']:>8.1f} s   {r['speedup_vs_uncached']:>6.2f}× vs uncached{rounds}")
        print(f"identical predictions in every window: {doc['identical_predictions']}")


def cmd_bench(args: argparse.Namespace) -> int:
    if args.scale:
        from protocols.scale_bench import print_scale, scale_bench

        if not args.workdir:
            from protocols.config import ConfigError

            raise ConfigError("--scale needs --workdir DIR (dataset, caches and runs go there: GBs)")
        doc = scale_bench(args)
        print_scale(doc)
        _write_json(args, doc)
        return 0 if all(r.get("rc", 0) == 0 for r in doc["stages"].values()) else 1
    if args.data_path:
        from protocols.data_path_bench import data_path_bench, print_data_path

        doc = data_path_bench(args, _cfg(args))
        print_data_path(doc)
        _write_json(args, doc)
        return 0
    doc = bench_whole_run(args) if args.whole_run else bench_stages(args)
    _print(doc)
    _write_json(args, doc)
    return 0 if doc.get("cached_equals_uncached", doc.get("identical_predictions")) else 1


def _write_json(args, doc: dict) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"written to {args.json}")


def register(subparsers) -> None:
    """Add `bench`; sets `args.handler(args) -> int`."""
    p = subparsers.add_parser("bench", help="measure images/s of each stage (and whole runs with/without caches)",
                              description=__doc__)
    p.add_argument("--preset", default="default")
    p.add_argument("--detector", default=None, help="default: the preset's (smallcnn_tune)")
    p.add_argument("--dataset", default=None)
    p.add_argument("--cache-dir", default=None, help="where the dataset is (default $GENSHIFT_CACHE or ~/.cache)")
    p.add_argument("--images", type=int, default=0,
                   help="eval images (and training copies) per stage (default: the whole eval split)")
    p.add_argument("--rounds", type=int, default=ROUNDS,
                   help=f"paired rounds of model forward and cached evaluation (default {ROUNDS})")
    p.add_argument("--lb-runs", type=int, default=3, help="fabricated runs for the leaderboard stage")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--whole-run", action="store_true", help="time whole runs with and without caches")
    p.add_argument("--repeats", type=int, default=1,
                   help="--whole-run: rounds of (uncached, cold, warm); each mode reports its fastest (default 1)")
    p.add_argument("--json", default="bench.json", help="where to write the results (default bench.json)")
    g = p.add_argument_group("data path", "--data-path: decode + augmentation images/s per data-loader worker at "
                                          "the release's image sizes, and the workers a forward rate needs")
    g.add_argument("--data-path", action="store_true", help="measure the streamed data path (see above)")
    g.add_argument("--sizes", default="512,768,1024", help="image sides in px (default 512,768,1024)")
    g.add_argument("--format", choices=["jpeg", "png"], default="jpeg", help="test image format (default jpeg)")
    g.add_argument("--forward-rate", type=float, action="append", default=[], metavar="IMG_PER_S",
                   help="a model's training images/s on its GPU: prints the workers it needs (repeatable)")
    s_ = p.add_argument_group("scale", "--scale ROWS: time and peak memory of every stage on a release-format "
                                       "dataset of ROWS rows (protocols/scale_bench.py)")
    s_.add_argument("--scale", type=int, metavar="ROWS", help="rows of the release-format dataset to write and run")
    s_.add_argument("--image-size", default="64-96", metavar="LO-HI", help="image sides in px (default 64-96)")
    s_.add_argument("--stages", help="comma-separated subset of write,scan,check,cache,run,warm,start (default all)")
    s_.add_argument("--workdir", help="where the dataset, caches and runs go (kept; delete it when done)")
    s_.add_argument("--pretrained", help="the detector's weights (e.g. none)")
    s_.add_argument("--workers", type=int, default=2, help="data check workers (default 2)")
    s_.add_argument("--clean-stores", action="store_true", help="delete the stores at the end (keep the dataset)")
    p.set_defaults(handler=cmd_bench)
