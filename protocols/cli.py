"""`genshift` command line: run, leaderboard, detectors, data."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from protocols.config import ConfigError, available_presets, parse_override
from protocols.config_model import RunConfig, resolve_run_config


def add_data_options(p) -> None:
    """The options that say which data, detector and settings a run uses (`run`, `cache build`)."""
    p.add_argument("--preset", default="default", help=f"benchmark preset: {', '.join(available_presets())}")
    p.add_argument("--detector", help="registered detector name (see `genshift detectors list`)")
    p.add_argument("--pretrained", help="weights: default | openai | <hub tag> | /path/to/file | none")
    p.add_argument("--dataset", help="synthetic[:default|smoke|formats] (embedded), aigenbench:PATH (the AI-GenBench "
                                     "release), folder:ROOT or csv:FILE (your own images); real sources take "
                                     "?timeline=YAML")
    p.add_argument("--seed", type=int)
    p.add_argument("--benchmark-type", help="cumulative | continual | replay:<r> | full")
    p.add_argument("--cl-strategy", metavar="NAME",
                   help="continual-learning strategy with its default parameters: naive (default) | replay | ewc | "
                        "mas | lwf | der++ | a plugin (`genshift strategies list`); parameters: --set cl_strategy.KEY=V")
    p.add_argument("--cache-dir", help="dataset and eval-input cache (default $GENSHIFT_CACHE or ~/.cache/genshift)")
    p.add_argument("--config", action="append", default=[], type=Path, help="extra YAML layer (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=0.01 (repeatable)")


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run (or resume) a benchmark and print its leaderboard",
                       description="Train a detector window after window and score the eval split after each. "
                                   "Re-running the same command resumes at the first unfinished window.")
    add_data_options(p)
    p.add_argument("--experiment", help="run directory name under --runs-dir (one name, no '/')")
    p.add_argument("--runs-dir", help="where run directories go (default runs/)")
    p.add_argument("--force-new", action="store_true",
                   help="if the run directory was made by another config, move it aside and start anew")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--no-leaderboard", action="store_true", help="do not print/write the leaderboard at the end")
    g = p.add_argument_group("SLURM", "submit the same run as a SLURM job instead of running it here "
                                      "(settings: --slurm-profile, then the flags below)")
    for flag, kw in SLURM_FLAGS.items():
        g.add_argument(flag, **kw)


SLURM_FLAGS = {
    "--slurm": dict(action="store_true", help="write an sbatch script for this run and submit it"),
    "--array": dict(nargs="+", metavar="KEY=V1,V2", default=[],
                    help="one array task per combination, e.g. --array detector=A,B seed=0,1,2"),
    "--dry-run": dict(action="store_true", help="with --slurm: print the sbatch script, submit nothing"),
    "--slurm-profile": dict(metavar="NAME|PATH", help="configs/slurm/<NAME>.yaml or a YAML file (default: default)"),
    "--partition": dict(), "--account": dict(), "--qos": dict(), "--time": dict(help="e.g. 24:00:00"),
    "--gpus": dict(type=int, dest="gpus_per_node", help="GPUs per node (>1: DDP)"),
    "--nodes": dict(type=int), "--cpus": dict(type=int, dest="cpus_per_task", help="CPUs per task"),
    "--mem": dict(help="memory per node, e.g. 32G"),
    "--after": dict(metavar="JOBID", help="start only once this SLURM job succeeded (afterok), e.g. the "
                                          "`genshift cache build --slurm` job whose stores the runs share"),
}


def run_config(args) -> RunConfig:
    overrides = []
    simple = {
        "pretrained": args.pretrained, "dataset": args.dataset, "seed": args.seed,
        "experiment": getattr(args, "experiment", None), "runs_dir": getattr(args, "runs_dir", None),
        "cache_dir": args.cache_dir,
    }
    overrides.append({k: v for k, v in simple.items() if v is not None})
    if args.benchmark_type:
        overrides.append({"benchmark": {"type": args.benchmark_type}})
    if args.cl_strategy:
        overrides.append({"cl_strategy": {"name": args.cl_strategy}})
    overrides += [parse_override(s) for s in args.set]
    # Typed and checked here, detector and strategy names included: a typo fails before torch loads or data is read.
    return resolve_run_config(args.preset, args.detector, args.config, overrides)


def cmd_slurm(args, argv: list[str]) -> int:
    """Write the sbatch script of this run (an array over --array combinations), print or submit it."""
    from protocols import slurm

    if args.array and args.experiment:
        raise ConfigError("--array with --experiment would put every task in one run directory; drop --experiment")
    combos = slurm.parse_array(args.array) if args.array else [{}]
    for combo in combos:  # every task's config must resolve here, before anything is submitted
        one = build_parser("run").parse_args(["run", *slurm.strip_flags(argv[1:], slurm_flag_arity()),
                                         *slurm.task_args(combo)])
        rc = run_config(one)
    settings = slurm.load_profile(args.slurm_profile)
    settings["log_dir"] = settings.get("log_dir") or str(Path(rc.runs_dir).resolve() / "slurm")
    settings |= {k: getattr(args, k) for k in ("partition", "account", "qos", "time", "gpus_per_node", "nodes",
                                               "cpus_per_task", "mem") if getattr(args, k) is not None}
    run_args = slurm.strip_flags(argv[1:], slurm_flag_arity())
    workdir = Path.cwd()
    script = slurm.render_script(run_args, combos, settings, workdir, after=args.after)
    if args.dry_run:
        print(script, end="")
        return 0
    path, job_id = slurm.submit(script, settings, workdir)
    print(f"submitted SLURM job {job_id} ({len(combos)} task(s)); script {path}")
    return 0


def slurm_flag_arity() -> dict[str, int]:
    out = {}
    for flag, kw in SLURM_FLAGS.items():
        out[flag] = 0 if kw.get("action") == "store_true" else (-1 if kw.get("nargs") == "+" else 1)
    return out


def cmd_run(args) -> int:
    if args.slurm:
        return cmd_slurm(args, args.argv)
    if args.dry_run or args.array:
        raise ConfigError("--array and --dry-run only make sense with --slurm")
    rc = run_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(rc.to_dict(), sort_keys=False))
        return 0
    from detectors.registry import check_name

    check_name(rc.detector, library=True)  # timm:/torchvision:/openclip: models: before any data is prepared
    from protocols.run_setup import prepare_run

    # Caches too large: refused here, within seconds, before Lightning is imported and before the cache workers'
    # fork server competes for the CPU.
    prepared = prepare_run(rc, progress=not args.no_progress)
    if rc.builds_pixel_caches:
        from benchmark.worker_server import start_worker_server

        start_worker_server()  # its imports overlap this process's own (Lightning, the data check) on another core
    from protocols.engine import run_experiment
    from protocols.resume import EXIT_PREEMPTED, Preempted

    try:
        run_dir = run_experiment(rc, force_new=args.force_new, progress=not args.no_progress,
                                 prepared=prepared)
    except Preempted as e:
        print(f"genshift: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    if not args.no_leaderboard:
        from leaderboard.report import write_leaderboard

        write_leaderboard([run_dir], run_dir)
    return 0


# Command groups registered by other packages, command -> module with ``register(subparsers)``. A command's
# module is imported only when that command runs (or when top-level help lists the commands), so `genshift run`
# with a misspelt detector fails before torch or a model library is imported.
COMMAND_MODULES = {
    "leaderboard": "leaderboard.cli", "inspect": "leaderboard.cli", "detectors": "detectors.cli",
    "data": "benchmark.cli", "cache": "protocols.cache_cli", "bench": "protocols.bench",
    "robustness": "protocols.robustness_cli", "predict": "protocols.predict", "strategies": "protocols.strategies.cli",
}
# Modules that import torch when imported: top-level help shows this line for them instead of importing them.
HEAVY_COMMAND_HELP = {"robustness": "score a run's window checkpoints under graded degradations"}


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``, or None when there is none or top-level help comes first."""
    for arg in argv:  # the top-level parser has no option besides -h/--help
        if not arg.startswith("-"):
            return arg
        if arg in ("-h", "--help"):
            return None
    return None


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with usage mistakes reported like every other user error: one `genshift: error:` line, exit 2
    (its subcommand parsers inherit this class)."""

    def error(self, message: str):
        command = self.prog.removeprefix("genshift").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"genshift: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``command`` only that command's module is imported (others are left out)."""
    parser = OneLineErrorParser(prog="genshift", description="Continual benchmark for AI-generated image "
                                                              "detectors (AI-GenBench protocol).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    known = command == "run" or command in COMMAND_MODULES
    registered: set[str] = set()
    for cmd, module in COMMAND_MODULES.items():
        if module in registered or (known and cmd != command):
            continue
        if not known and cmd in HEAVY_COMMAND_HELP:
            sub.add_parser(cmd, help=HEAVY_COMMAND_HELP[cmd])  # listed in help; imported when it is run
            continue
        importlib.import_module(module).register(sub)
        registered.add(module)
    return parser


# Exceptions reported as one 'error:' line (exit 2) rather than a traceback, by defining module. An exception
# can only have been raised if its module was imported, so only modules already loaded are consulted: the
# error path of a light command (a detector-name typo) imports nothing heavy.
USER_ERRORS = {
    "benchmark.images": "ImageReadError", "benchmark.manifest": "ManifestError", "benchmark.sources": "SourceError",
    "benchmark.timeline": "TimelineError", "protocols.rundir": "RunDirError", "protocols.slurm": "SlurmError",
    "detectors.registry": "UnknownDetectorError", "detectors.scaffold": "ScaffoldError",
    "detectors.checkpoint": "CheckpointError", "leaderboard.runs": "LeaderboardError",
    "detectors.weights": ("WeightsFileError", "WeightsUnavailableError", "WeightsMismatchError"),
    "benchmark.sequences": "SequenceError", "benchmark.video_frames": "VideoReadError",
}
# OSErrors of the machine, not of genshift: a full or read-only disk, no permission, a path that cannot exist.
# Reported in one line naming the file (finished work is never lost: every write is atomic).
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                      errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                      errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "the file name is too long",
                      errno.ENOTDIR: "a part of the path is not a directory", errno.EISDIR: "it is a directory",
                      errno.ELOOP: "too many levels of symbolic links",
                      errno.EEXIST: "a file of that name is in the way"}


def environment_error_line(e: OSError) -> str | None:
    """The one-line message for an OSError of the machine (full disk, read-only, permissions), else None."""
    if e.errno not in ENVIRONMENT_ERRNOS:
        return None
    target = f" {e.filename}" if e.filename else ""
    advice = ("; free space or point --runs-dir/--cache-dir (or --out) at another disk, then run the same "
              "command again (finished windows are kept)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else
              "; point --runs-dir/--cache-dir (or --out) at a writable place" if e.errno in (errno.EROFS,
                                                                                       errno.EACCES, errno.EPERM)
              else "")
    verb = "cannot write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "cannot access"
    return f"{verb}{target}: {ENVIRONMENT_ERRNOS[e.errno]} ({e.strerror or e}){advice}"


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError]
    for module, names in USER_ERRORS.items():
        if module in sys.modules:
            errors += [getattr(sys.modules[module], n) for n in ((names,) if isinstance(names, str) else names)]
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    args.argv = argv
    handlers = {"run": cmd_run}
    handler = getattr(args, "handler", None) or handlers[args.command]
    from protocols.allocator import keep_large_allocations

    keep_large_allocations()  # every command that runs a model (run, bench, robustness) gains from it
    try:
        return handler(args)
    except _user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"genshift: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:
        line = environment_error_line(e)
        if line is None:
            raise
        print(f"genshift: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
