"""`genshift robustness RUN_DIR`: score a run's window checkpoints under single graded degradations and write
the grid's files into the run directory (protocols/robustness.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.single_degradations import DEFAULT_GRID, parse_grid
from protocols.robustness import PRECISIONS, RobustnessError, score_grid, write_outputs


def cmd_robustness(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        grid = parse_grid(args.degradation)
        result = score_grid(Path(args.run_dir), args.window, grid, batch_size=args.batch_size,
                            cache_dir=Path(args.cache_dir) if args.cache_dir else None, limit=args.limit,
                            progress=not args.no_progress, use_cache=not args.no_cache, device=args.device,
                            precision=args.precision)
        paths = write_outputs(Path(args.run_dir), result.rows, grid, args.limit, result)
    except RobustnessError as e:  # a user error: one line, no traceback
        print(f"genshift: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def register(subparsers) -> None:
    """Add `robustness RUN_DIR`; sets ``args.handler(args) -> int``."""
    p = subparsers.add_parser("robustness", help="score a run's window checkpoints under graded degradations",
                              description="JPEG quality, Gaussian blur, Gaussian noise, down-scaling and the "
                                          "mandatory chain, one at a time; writes robustness.csv/.png in RUN_DIR.")
    p.add_argument("run_dir", help="a run directory (runs/<experiment>) with finished windows")
    p.add_argument("--window", type=int, action="append", help="only this window (repeatable; default all)")
    p.add_argument("--degradation", action="append", metavar="KIND[=L1,L2]",
                   help=f"only these degradations (repeatable), kinds: {', '.join(DEFAULT_GRID)}; default all")
    p.add_argument("--batch-size", type=int, help="scoring batch size (default: the run's eval.batch_size)")
    p.add_argument("--precision", default="run", choices=PRECISIONS,
                   help="scoring precision; 'run' (default) = the eval precision the run recorded, so the "
                        "mandatory cell reproduces the run's AUROC")
    p.add_argument("--cache-dir", help="where the run's dataset lives (default: the run's cache_dir)")
    p.add_argument("--limit", type=int, help="only the first N eval positions (quick look; recorded)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device for scoring, e.g. cuda (default cpu)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write prepared degraded inputs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_robustness)
