"""`genshift cache info|verify|clear|build`: list, check, delete or prepare the computed caches (eval inputs,
the reference pipeline's eval crops, training copies, probe features, robustness levels).

The dataset cache (`datasets/`) is left alone: `clear` only removes stores that genshift can rebuild from it.
`build` prepares the stores of a run configuration ahead of the run, here or as SLURM jobs (protocols/cache_build.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.array_store import (
    META,
    cache_kinds,
    clear_stores,
    describe_stores,
    verify_chunks,
)

if TYPE_CHECKING:
    from protocols.config_model import RunConfig


def _cache_dir(args) -> Path:
    from benchmark.sources import resolve_cache_dir

    return resolve_cache_dir(args.cache_dir)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _stores(args) -> list[dict]:
    kinds = tuple(args.kind) if args.kind else None
    return [s for s in describe_stores(_cache_dir(args)) if kinds is None or s["kind"] in kinds]


def cmd_info(args: argparse.Namespace) -> int:
    root, stores = _cache_dir(args), _stores(args)
    if args.json:
        print(json.dumps({"cache_dir": str(root), "stores": stores}, indent=1))
        return 0
    print(f"cache directory: {root}")
    for s in stores:
        if s["complete"]:
            state = ""
        elif s["legacy"]:
            state = "  (older format: rebuilt on next use)"
        else:
            state = f"  (incomplete: {s['chunks_done']}/{s['chunks']} chunks; resumed on next build)"
        shape = ", ".join(f"{k} {v}" for k, v in (s["shape"] or {}).items())
        print(f"  {s['kind']:<13} {s['digest']}  {_human(s['bytes']):>10}  {shape}{state}")
    print(f"{len(stores)} store(s), {_human(sum(s['bytes'] for s in stores))}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    kinds = tuple(args.kind) if args.kind else None
    freed = clear_stores(_cache_dir(args), kinds)
    print(f"removed {', '.join(kinds) if kinds else 'all'} caches under {_cache_dir(args)}: {_human(freed)} freed")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Every complete store's chunk files against their recorded sizes, headers and sha256 (all of them)."""
    bad = 0
    report = []
    for s in _stores(args):
        if not s["complete"]:
            report.append({"path": s["path"], "state": "incomplete", "problems": []})
            print(f"  {s['kind']:<13} {s['digest']}  incomplete ({s['chunks_done']}/{s['chunks']} chunks): "
                  "finished by the next build")
            continue
        try:
            problems = verify_chunks(Path(s["path"]), json.loads((Path(s["path"]) / META).read_text()), "full")
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as e:  # a damaged or planted meta.json
            problems = [f"its {META} is unreadable or malformed ({type(e).__name__}): the next build re-checks "
                        "every chunk"]
        report.append({"path": s["path"], "state": "damaged" if problems else "ok", "problems": problems})
        if not problems:
            print(f"  {s['kind']:<13} {s['digest']}  ok ({s['chunks']} chunks, {_human(s['bytes'])})")
            continue
        bad += 1
        print(f"  {s['kind']:<13} {s['digest']}  DAMAGED: {'; '.join(problems[:3])}"
              + (f"; … ({len(problems)} problems)" if len(problems) > 3 else ""))
        if args.repair:
            from benchmark.array_store import CHUNKS, bad_chunks, chunk_name

            for c in bad_chunks(problems):
                for f in (Path(s["path"]) / CHUNKS).glob(f"{c:06d}.*"):
                    f.unlink()
                (Path(s["path"]) / CHUNKS / chunk_name(c)).unlink(missing_ok=True)
            (Path(s["path"]) / META).unlink(missing_ok=True)
            print("    damaged chunks removed: the next run or `genshift cache build` rebuilds just those")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if bad and not args.repair:
        print(f"genshift: {bad} damaged store(s); `genshift cache verify --repair` removes the damaged chunks so the "
              "next build rebuilds them", file=sys.stderr)
    return 1 if bad and not args.repair else 0


def cmd_build(args: argparse.Namespace) -> int:
    from protocols.cli import run_config
    from protocols.config import ConfigError

    rc = run_config(args)
    if args.slurm:
        return _submit_build(args, rc)
    if args.dry_run or args.shards != 1 or args.parsable:
        raise ConfigError("--dry-run, --shards and --parsable only make sense with --slurm")
    from detectors.registry import check_name

    check_name(rc.detector, library=True)
    from benchmark.worker_server import start_worker_server
    from protocols.cache_build import build_caches, parse_shard
    from protocols.resume import EXIT_PREEMPTED, Preempted, install_signal_handlers

    start_worker_server()
    install_signal_handlers()
    from protocols.trainer import quiet_lightning

    quiet_lightning()
    try:
        out = build_caches(rc, features=args.features, shard=parse_shard(args.shard), progress=not args.no_progress,
                           stage=args.stage)
    except Preempted as e:
        print(f"genshift: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


def _submit_build(args: argparse.Namespace, rc: RunConfig) -> int:
    """Submit the build as SLURM jobs: with --shards N, a one-task job that checks the data and the budget, then an
    array of N tasks (each a range of every store's chunks) that waits for it. Prints the last job's id."""
    from protocols import slurm
    from protocols.cli import slurm_flag_arity
    from protocols.config import ConfigError

    if args.shard is not None:
        raise ConfigError("--shard is set per task by --slurm --shards N; drop it")
    if args.features and args.shards > 1:
        raise ConfigError("--features needs the complete pixel stores: submit the shards first, then "
                          "`genshift cache build --features --slurm --after <their job id>`")
    settings = slurm.load_profile(args.slurm_profile)
    cache_dir = rc.cache_path
    settings["log_dir"] = settings.get("log_dir") or str(cache_dir.resolve() / "slurm")
    settings |= {k: getattr(args, k) for k in ("partition", "account", "qos", "time", "gpus_per_node", "nodes",
                                               "cpus_per_task", "mem") if getattr(args, k) is not None}
    settings["job_name"] = settings.get("job_name") if settings.get("job_name") not in (None, "genshift") \
        else "genshift-cache"
    if args.shards < 1:
        raise ConfigError(f"--shards {args.shards}: expected at least 1")
    arity = slurm_flag_arity() | {"--shards": 1, "--parsable": 0, "--stage": 1}
    build_args = slurm.strip_flags(args.argv[2:], arity)
    workdir = Path.cwd()
    if args.shards > 1:  # (extra args, per-task args, what it is)
        jobs = [(["--stage", "prepare"], None, "data check + budget"),
                ([], [["--shard", f"{i}/{args.shards}"] for i in range(args.shards)],
                 f"array of {args.shards} shard tasks")]
    else:
        jobs = [([], None, "cache build")]
    after, scripts = args.after, []
    for extra, tasks, what in jobs:
        script = slurm.render_script(build_args + extra, [{}], settings, workdir, command="cache build",
                                     task_lists=tasks, after=after)
        if args.dry_run:
            scripts.append(script)
            after = "<job id of the script above>"
            continue
        path, after = slurm.submit(script, settings, workdir)
        if not args.parsable:
            print(f"submitted SLURM job {after} ({what}); script {path}")
    if args.dry_run:
        print("\n".join(scripts), end="")
    elif args.parsable:
        print(after)
    else:
        print(f"runs sharing these stores: genshift run --slurm --after {after} ...")
    return 0


def _add_filters(p) -> None:
    p.add_argument("--cache-dir", help="default $GENSHIFT_CACHE or ~/.cache/genshift")
    p.add_argument("--kind", action="append", choices=list(cache_kinds()),
                   help="only this kind of store (repeatable; default all)")


def register(subparsers) -> None:
    """Add `cache info|verify|clear|build`; sets `args.handler(args) -> int`."""
    p = subparsers.add_parser("cache", help="list, verify, clear or build the caches (eval inputs, training copies, "
                                            "probe features, robustness levels)",
                              description="Caches are keyed by everything that changes their content, written chunk "
                                          "by chunk (a killed build resumes), checked cheaply on every start and "
                                          "rebuilt where damaged; clear them to free disk.")
    sub = p.add_subparsers(dest="action", required=True)
    info = sub.add_parser("info", help="list the stores, their sizes and whether they are complete")
    _add_filters(info)
    info.add_argument("--json", action="store_true", help="info as JSON")
    info.set_defaults(handler=cmd_info)
    clear = sub.add_parser("clear", help="delete stores (the datasets stay)")
    _add_filters(clear)
    clear.set_defaults(handler=cmd_clear)
    verify = sub.add_parser("verify", help="re-hash every chunk of every complete store (a run samples one chunk)")
    _add_filters(verify)
    verify.add_argument("--repair", action="store_true", help="remove damaged chunks so the next build rebuilds them")
    verify.add_argument("--json", help="also write the report to this file")
    verify.set_defaults(handler=cmd_verify)

    from protocols.cli import SLURM_FLAGS, add_data_options

    build = sub.add_parser("build", help="prepare the stores a run of this configuration uses (here or on SLURM)",
                           description="Builds the eval-input and training-copy stores that `genshift run` with the "
                                       "same options would build (and, with --features, a probe's feature stores), "
                                       "so runs of several detectors can share them. See docs/running-at-scale.md.")
    add_data_options(build)
    build.add_argument("--features", action="store_true",
                       help="also the probe feature stores (needs the detector's weights; one process)")
    build.add_argument("--shard", metavar="I/N", help="build only task I's range of every store's chunks (of N)")
    build.add_argument("--stage", choices=["all", "prepare"], default="all",
                       help="prepare: check the data and the budget only (the first job of a sharded build)")
    build.add_argument("--no-progress", action="store_true")
    build.add_argument("--json", help="write a summary (plan, stores) to this file")
    g = build.add_argument_group("SLURM", "submit the build as SLURM job(s) instead of running it here")
    for flag, kw in SLURM_FLAGS.items():
        if flag != "--array":
            g.add_argument(flag, **kw)
    g.add_argument("--shards", type=int, default=1, help="with --slurm: an array of N tasks, each a range of chunks")
    g.add_argument("--parsable", action="store_true", help="with --slurm: print only the last job id")
    build.set_defaults(handler=cmd_build)
