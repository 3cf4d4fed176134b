"""`genshift` command line: run, leaderboard, detectors, data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protocols.config import ConfigError, available_presets, parse_override, resolve_config


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run (or resume) a benchmark and print its leaderboard",
                       description="Train a detector window after window and score the eval split after each. "
                                   "Re-running the same command resumes at the first unfinished window.")
    p.add_argument("--preset", default="default", help=f"benchmark preset: {', '.join(available_presets())}")
    p.add_argument("--detector", help="registered detector name (see `genshift detectors list`)")
    p.add_argument("--pretrained", help="weights: default | openai | <hub tag> | /path/to/file | none")
    p.add_argument("--dataset", help="synthetic[:default|smoke] (more sources to come)")
    p.add_argument("--seed", type=int)
    p.add_argument("--benchmark-type", help="cumulative | continual | replay:<r> | full")
    p.add_argument("--experiment", help="run directory name under --runs-dir")
    p.add_argument("--runs-dir", help="where run directories go (default runs/)")
    p.add_argument("--cache-dir", help="dataset and eval-input cache (default $GENSHIFT_CACHE or ~/.cache/genshift)")
    p.add_argument("--config", action="append", default=[], type=Path, help="extra YAML layer (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=0.01 (repeatable)")
    p.add_argument("--force-new", action="store_true",
                   help="if the run directory was made by another config, move it aside and start anew")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--no-leaderboard", action="store_true", help="do not print/write the leaderboard at the end")


def _run_config(args) -> dict:
    overrides = []
    simple = {
        "pretrained": args.pretrained, "dataset": args.dataset, "seed": args.seed,
        "experiment": args.experiment, "runs_dir": args.runs_dir, "cache_dir": args.cache_dir,
    }
    overrides.append({k: v for k, v in simple.items() if v is not None})
    if args.benchmark_type:
        overrides.append({"benchmark": {"type": args.benchmark_type}})
    overrides += [parse_override(s) for s in args.set]
    return resolve_config(args.preset, args.detector, args.config, overrides)


def cmd_run(args) -> int:
    cfg = _run_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    from protocols.engine import run_experiment

    run_dir = run_experiment(cfg, force_new=args.force_new, progress=not args.no_progress)
    if not args.no_leaderboard:
        from leaderboard.report import write_leaderboard

        write_leaderboard([run_dir], run_dir)
    return 0


def cmd_detectors(args) -> int:
    from detectors import list_detectors

    if args.action == "list":
        for name in list_detectors():
            print(name)
    return 0


def cmd_data(args) -> int:
    from benchmark.sources import default_cache_dir, load_source

    m = load_source(args.source, Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    from benchmark.timeline import make_windows

    info = {
        "name": m.name, "root": str(m.root), "checksum": m.checksum,
        "train": len(m.split("train")), "eval": len(m.split("eval")),
        "windows": make_windows(m.timeline, args.generators_per_window),
    }
    print(json.dumps(info, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genshift", description="Continual benchmark for AI-generated image "
                                                                    "detectors (AI-GenBench protocol).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    from leaderboard.cli import register as register_leaderboard

    register_leaderboard(sub)
    p = sub.add_parser("detectors", help="registered detectors")
    p.add_argument("action", choices=["list"])
    p = sub.add_parser("data", help="build/verify a dataset source and print its summary")
    p.add_argument("source", help="dataset spec, e.g. synthetic:default")
    p.add_argument("--cache-dir")
    p.add_argument("--generators-per-window", type=int, default=4)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from benchmark.images import ImageReadError
    from benchmark.manifest import ManifestError
    from benchmark.sources import SourceError
    from benchmark.timeline import TimelineError
    from protocols.rundir import RunDirError

    errors: list[type[BaseException]] = [ConfigError, RunDirError, SourceError, ManifestError, TimelineError,
                                         ImageReadError, FileNotFoundError]
    try:
        from detectors.registry import UnknownDetectorError

        errors.append(UnknownDetectorError)
    except ImportError:
        pass
    try:
        from leaderboard.report import LeaderboardError

        errors.append(LeaderboardError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "detectors": cmd_detectors, "data": cmd_data}
    handler = getattr(args, "handler", None) or handlers[args.command]
    try:
        return handler(args)
    except _user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"genshift: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
