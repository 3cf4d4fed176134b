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
from benchmark.sources import resolve_cache_dir
from protocols.cache_plan import CachePlan, eval_strategy, human_bytes, plan_caches


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' (task I of N, 0-based) -> (I, N); None stays None."""
    if text is None:
        return None
    i, sep, n = str(text).partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 0 <= int(i) < int(n):
        from protocols.config import ConfigError

        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N (e.g. 3/16, or $SLURM_ARRAY_TASK_ID/16)")
    return int(i), int(n)


def build_caches(cfg: dict, features: bool = False, shard: tuple[int, int] | None = None, progress: bool = True,
                 stage: str = "all", say: Callable[[str], None] = print) -> dict:
    """Check the data and the budget, then build (this shard's chunks of) the run's pixel stores and, with
    `features`, a probe's feature stores. Returns a summary for the log and tests."""
    from protocols.run_inputs import prepare_run_inputs, stop_between_chunks
    from protocols.run_setup import prepare_benchmark, prepare_run

    t0 = time.time()
    cache_dir = resolve_cache_dir(cfg.get("cache_dir"))
    if not features:
        cfg = cfg | {"pretrained": "none"}  # pixel stores depend on the input geometry only, never on weights
    prepared = prepare_run(cfg, progress, features=features)  # refused here if the stores do not fit
    detector = prepared.detector
    bench = prepare_benchmark(cfg, progress, prepared.manifest)
    plan = plan_caches(cfg, bench, detector, cache_dir, features=features)
    say(f"genshift cache build: {bench.manifest.name}, detector {detector.meta.name} "
        f"(input {detector.meta.input_size} px, {eval_strategy(cfg, detector.meta)}); {plan.summary()}")
    out = {"plan": plan.to_dict(), "built": {}}
    if stage == "prepare":
        say("data checked and budget fits; the stores are built by the shard tasks")
        return out
    if features:
        if shard is not None:
            from protocols.config import ConfigError

            raise ConfigError("--features needs the complete pixel stores: build the shards first, then "
                              "`genshift cache build --features` (e.g. as a SLURM job with --after <shards job>)")
        inputs = prepare_run_inputs(cfg, bench, detector, cache_dir, progress, say, plan=plan)
        out["built"] = {k: {"digest": v.get("digest"), "hit": v.get("hit"), "path": v.get("path")}
                        for k, v in inputs.describe.items() if isinstance(v, dict) and "digest" in v}
        say(f"done in {time.time() - t0:.0f} s")
        return out
    out["built"] = _build_pixels(cfg, bench, detector, cache_dir, plan, shard, progress, stop_between_chunks, say)
    say(f"done in {time.time() - t0:.0f} s")
    return out


def _build_pixels(cfg: dict, bench, detector, cache_dir: Path, plan: CachePlan, shard, progress: bool,
                  should_stop, say) -> dict:
    from benchmark.eval_cache import build_or_load_eval_inputs
    from benchmark.train_cache import build_or_load_train_inputs
    from protocols.config import cache_switches

    sw = cache_switches(cfg)
    meta = detector.meta
    opts = {"verify": sw["verify"], "chunk_bytes": int(float(sw["chunk_mb"]) * (1 << 20)), "shard": shard,
            "should_stop": should_stop}
    workers = max(1, int(cfg["train"]["num_workers"]))
    done = {}
    part = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    if plan.policy("eval_inputs") == "cached" and plan.stores["eval_inputs"].spec.kind == REFERENCE_KIND:
        if shard is None or shard[0] == 0:  # its own format, built whole: by the first shard
            from benchmark.reference_eval_cache import build_or_load_reference_inputs

            deg = cfg["degradation"]
            _, key = build_or_load_reference_inputs(bench.manifest, bench.plan.sample_ids, deg["profile"],
                                                    deg["base_seed"], meta.input_size, eval_strategy(cfg, meta),
                                                    cache_dir, workers, progress)
            done["eval_inputs"] = {"digest": key["digest"], "path": key["path"], "complete": True, "hit": key["hit"]}
            say(f"eval inputs (reference pipeline): store {key['digest']} complete, {key['crops']} crops")
        else:
            say("eval inputs (reference pipeline): built whole by shard 0")
    elif plan.policy("eval_inputs") == "cached":
        deg = cfg["degradation"]
        arr, key = build_or_load_eval_inputs(bench.manifest, bench.plan.sample_ids, deg["profile"], deg["base_seed"],
                                             meta.input_size, eval_strategy(cfg, meta), cache_dir, workers,
                                             progress, **opts)
        done["eval_inputs"] = {"digest": key["digest"], "path": key["path"], "complete": arr is not None,
                               "hit": key["hit"]}
        say(f"eval inputs{part}: store {key['digest']} "
            + ("complete" if arr is not None else "this shard's chunks done, other shards pending")
            + (f", {human_bytes(key['bytes'])}" if key.get("bytes") else ""))
    else:
        say(f"eval inputs: not stored ({plan.stores['eval_inputs'].reason})")
    tplan = plan.stores["train_inputs"]
    if tplan.policy == "cached":
        union = sorted({int(i) for ids in bench.train_sets for i in ids})
        tc = cfg["train"]
        arr, _, key = build_or_load_train_inputs(
            bench.manifest, union, int(tc["augmentation_factor"]), meta.input_size, int(cfg["seed"]),
            tc["augmentation"], meta.eval_resize, cache_dir, workers, progress,
            bool(getattr(meta, "has_localization", False)), **opts)
        done["train_inputs"] = {"digest": key["digest"], "path": key["path"], "complete": arr is not None,
                                "hit": key["hit"]}
        say(f"training copies{part}: store {key['digest']} "
            + ("complete" if arr is not None else "this shard's chunks done, other shards pending")
            + (f", {human_bytes(key['bytes'])}" if key.get("bytes") else ""))
    else:
        say(f"training copies: not stored here ({tplan.policy}: {tplan.reason})")
    return done
