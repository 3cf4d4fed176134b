"""`genshift leaderboard` and `genshift inspect` subcommands; `register(subparsers)` adds both."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import run_dir as layout
from common.atomic import atomic_path, atomic_write_text


def _add_leaderboard(sub) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="tables (md, csv, tex, html), windows.csv and plots from stored predictions (no models needed)",
        description="Rank runs by NEXT with bootstrap 95 % intervals; runs that differ only in their seed are "
        "pooled into one row (two-level bootstrap). Accepts genshift run directories and AI-GenBench experiment "
        "folders (window_<k>/predictions_validate_all.npz); refuses runs whose evaluation-defining fields differ "
        "(manifest, protocol version, degradation profile, ...) unless --group-by them. See docs/leaderboard.md.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories (runs/<experiment>), experiment_<id> dirs, or a runs "
                   "directory (every run in it)")
    p.add_argument("--out", type=Path, help="output directory (default: the run directory for one run, the runs "
                   "directory they share for several, else the current directory)")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--group-by", nargs="+", default=[], metavar="FIELD",
                   help="one table per value of these recorded fields, by config name (e.g. degradation.profile); "
                        "needed to show runs whose evaluation-defining fields differ")
    p.add_argument("--per-seed", action="store_true",
                   help="also list every run on its own (runs differing only in the seed are pooled by default)")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown table")
    p.set_defaults(handler=cmd_leaderboard)


def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="schema, counts, per-group/per-generator metrics and hardest errors of one predictions .npz",
    )
    p.add_argument("path", type=Path, help="window_<k>/predictions.npz (or AI-GenBench predictions_validate_all.npz), "
                   "or window_<k>/localization.npz")
    p.add_argument("--window", type=int, help="training window k (needed only if the file does not store it)")
    p.add_argument("--top", type=int, default=10, help="how many hardest false negatives/positives to list")
    p.add_argument("--robustness", type=Path, help="robustness.csv to show window k's rows of (default: the run's)")
    p.add_argument("--csv", type=Path, help="write one row per image to this CSV")
    p.add_argument("--roc", type=Path, help="write ROC arrays (fpr, tpr, thresholds) of --group to this .npz")
    p.add_argument("--group", default="all", help="group for --roc: next, seen, all, window:<j>, generator:<name>, ...")
    p.add_argument("--plots", type=Path, help="video-track files: write manipulations.csv/.md and roc_<method>.png "
                                              "into this directory")
    p.set_defaults(handler=cmd_inspect)


def register(subparsers) -> None:
    """Add the `leaderboard` and `inspect` subcommands; each sets `args.handler(args) -> int`."""
    _add_leaderboard(subparsers)
    _add_inspect(subparsers)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.report import write_leaderboard

    runs = expand_runs([Path(r) for r in args.runs])
    out = args.out or (args.runs[0] if len(args.runs) == 1 and len(runs) > 1 else default_output_dir(runs))
    write_leaderboard(runs, out, echo=not args.quiet, n_replicates=args.replicates, seed=args.bootstrap_seed,
                      group_by=args.group_by, per_seed=args.per_seed)
    return 0


def expand_runs(paths: list[Path]) -> list[Path]:
    """Each path as given, except a runs directory (no run.json, no window_0/, but sub-directories that hold a
    run.json): its runs, sorted by name, so `genshift leaderboard runs/` ranks everything made there."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir() and not layout.has_run_json(p) and not layout.window_dir(p, 0).is_dir():
            found = sorted(d for d in p.iterdir() if d.is_dir() and layout.has_run_json(d))
            if found:
                out += found
                continue
        out.append(p)
    return out


def default_output_dir(runs: list[Path]) -> Path:
    """One run: its directory. Several runs in one runs directory: that directory. Otherwise (runs in unrelated
    trees, whose common ancestor may be / or a home directory) the current directory."""
    if len(runs) == 1:
        return runs[0]
    parents = {r.resolve().parent for r in runs}
    return parents.pop() if len(parents) == 1 else Path.cwd()


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the report; bad files surface as LeaderboardError (a user error for `genshift`)."""
    from leaderboard.runs import LeaderboardError

    try:
        return _inspect(args)
    except ValueError as e:
        if isinstance(e, LeaderboardError):
            raise
        raise LeaderboardError(str(e)) from e


def _inspect(args: argparse.Namespace) -> int:
    from leaderboard import inspect as I
    from leaderboard import video_view as VV
    from leaderboard.localization_view import inspect_report, is_localization_file

    if is_localization_file(args.path):  # a window's localization.npz: pixel metrics vs baselines, worst images
        print(inspect_report(args.path, args.top), end="")
        return 0
    if VV.is_predict_file(args.path):  # `genshift predict` output: no windows, video (or image) rows
        arrays = VV.load_arrays(args.path)
        if not VV.is_video_file(arrays):
            raise ValueError(f"{args.path}: a genshift predict file of images; read it with numpy "
                             "(fused_scores, fused_labels, fused_paths) or its predictions.csv")
        print(f"file: {args.path}\n{VV.report(arrays)}", end="")
        _video_plots(args, arrays)
        return 0
    arrays = I.load_predictions(args.path, args.window)
    k = I.resolve_window(arrays, args.window, args.path)
    print(I.report(args.path, k, args.top, robustness=args.robustness), end="")
    if VV.is_video_file(arrays):
        print("\n" + VV.report(arrays), end="")
        _video_plots(args, arrays)
    if args.csv:
        atomic_write_text(args.csv, I.sample_frame(arrays).to_csv(index=False))
        print(f"rows written to {args.csv}")
    if args.roc:
        roc = I.roc_arrays(arrays, args.group, k)
        with atomic_path(args.roc) as tmp, open(tmp, "wb") as f:
            np.savez(f, **roc)
        print(f"ROC arrays of group {args.group!r} ({roc['fpr'].size} points) written to {args.roc}")
    return 0


def _video_plots(args: argparse.Namespace, arrays: dict) -> None:
    if args.plots is None:
        return
    from leaderboard import video_view as VV

    written = VV.write_views(arrays, args.plots, title=str(args.path))
    print(f"video views written to {args.plots}: " + ", ".join(p.name for p in written))
