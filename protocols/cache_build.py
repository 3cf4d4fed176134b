"""`genshift cache build`: prepare the stores a run of this configuration would use, before (and apart from)
the run — on this machine, or as SLURM jobs whose array tasks each build a range of every store's chunks.

The stores, their keys and their chunks are exactly those `genshift run` makes (protocols/run_inputs.py), so a
run started afterwards finds them complete (`hit` in run.json) and only verifies them. Several runs of detectors
with the same input (size, eval crop, training augmentation) share the pixel stores; probe feature stores need
the detector's weights and are built only with `--features`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from benchmark.array_store import REFERENCE_KIND
from protocols.cache_plan import CachePlan, eval_strategy, human_bytes, plan_caches
from protocols.config_model import ConfigLike, RunConfig, run_config


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' (task I of N, 0-based) -> (I, N); None stays None."""
    if text is None:
        return None
    i, sep, n = str(text).partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 0 <= int(i) < int(n):
        from protocols.config import ConfigError

        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N (e.g. 3/16, or $SLURM_ARRAY_TASK_ID/16)")
    return int(i), int(n)


def build_caches(cfg: ConfigLike, features: bool = False, shard: tuple[int, int] | None = None, progress: bool = True,
                 stage: str = "all", say: Callable[[str], None] = print) -> dict:
    """Check the data and the budget, then build (this shard's chunks of) the run's pixel stores and, with
    `features`, a probe's feature stores. Returns a summary for the log and tests."""
    from protocols.run_inputs import prepare_run_inputs, stop_between_chunks
    from protocols.run_setup import prepare_benchmark, prepare_run

    t0 = time.time()
    rc = run_config(cfg)
    cache_dir = rc.cache_path
    if not features:
        rc = rc.replace(pretrained="none")  # pixel stores depend on the input geometry only, never on weights
    prepared = prepare_run(rc, progress, features=features)  # refused here if the stores do not fit
    detector = prepared.detector
    bench = prepare_benchmark(rc, progress, prepared.manifest)
    plan = plan_caches(rc, bench, detector, cache_dir, features=features)
    say(f"genshift cache build: {bench.manifest.name}, detector {detector.meta.name} "
        f"(input {detector.meta.input_size} px, {eval_strategy(rc, detector.meta)}); {plan.summary()}")
    out = {"plan": plan.to_dict(), "built": {}}
    if stage == "prepare":
        say("data checked and budget fits; the stores are built by the shard tasks")
        return out
    if features:
        if shard is not None:
            from protocols.config import ConfigError

            raise ConfigError("--features needs the complete pixel stores: build the shards first, then "
                              "`genshift cache build --features` (e.g. as a SLURM job with --after <shards job>)")
        inputs = prepare_run_inputs(rc, bench, detector, cache_dir, progress, say, plan=plan)
        out["built"] = {k: {"digest": v.get("digest"), "hit": v.get("hit"), "path": v.get("path")}
                        for k, v in inputs.describe.items() if isinstance(v, dict) and "digest" in v}
        say(f"done in {time.time() - t0:.0f} s")
        return out
    out["built"] = _build_pixels(rc, bench, detector, cache_dir, plan, shard, progress, stop_between_chunks, say)
    say(f"done in {time.time() - t0:.0f} s")
    return out


def _build_pixels(rc: RunConfig, bench, detector, cache_dir: Path, plan: CachePlan, shard, progress: bool,
                  should_stop, say) -> dict:
    from benchmark.eval_cache import build_or_load_eval_inputs
    from benchmark.train_cache import build_or_load_train_inputs

    meta = detector.meta
    opts = {"verify": rc.cache.verify.value, "chunk_bytes": rc.cache.chunk_bytes, "shard": shard,
            "should_stop": should_stop}
    workers = max(1, rc.train.num_workers)
    deg, strategy = rc.degradation, eval_strategy(rc, meta)
    done = {}
    part = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    if plan.policy("eval_inputs") == "cached":
        reference = plan.stores["eval_inputs"].spec.kind == REFERENCE_KIND
        if reference:
            from benchmark.reference_eval_cache import build_or_load_reference_inputs as build_eval
        else:
            build_eval = build_or_load_eval_inputs
        arr, key = build_eval(bench.manifest, bench.plan.sample_ids, deg.spec, deg.base_seed, meta.input_size,
                              strategy, cache_dir, workers, progress, **opts)
        done["eval_inputs"] = {"digest": key["digest"], "path": key["path"], "complete": arr is not None,
                               "hit": key["hit"]}
        say(f"eval inputs{' (reference pipeline)' if reference else ''}{part}: store {key['digest']} "
            + ("complete" if arr is not None else "this shard's chunks done, other shards pending")
            + (f", {key['crops']} crops" if reference and arr is not None else "")
            + (f", {human_bytes(key['bytes'])}" if key.get("bytes") else ""))
    else:
        say(f"eval inputs: not stored ({plan.stores['eval_inputs'].reason})")
    tplan = plan.stores["train_inputs"]
    if tplan.policy == "cached":
        union = sorted({int(i) for ids in bench.train_sets for i in ids})
        arr, _, key = build_or_load_train_inputs(
            bench.manifest, union, rc.train.augmentation_factor, meta.input_size, rc.seed,
            rc.train.augmentation.value, meta.eval_resize, cache_dir, workers, progress,
            bool(getattr(meta, "has_localization", False)), **opts)
        done["train_inputs"] = {"digest": key["digest"], "path": key["path"], "complete": arr is not None,
                                "hit": key["hit"]}
        say(f"training copies{part}: store {key['digest']} "
            + ("complete" if arr is not None else "this shard's chunks done, other shards pending")
            + (f", {human_bytes(key['bytes'])}" if key.get("bytes") else ""))
    else:
        say(f"training copies: not stored here ({tplan.policy}: {tplan.reason})")
    return done
