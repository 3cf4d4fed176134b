"""`genshift detectors ...`: list the registered detectors, scaffold a plugin.

protocols/cli.py calls ``register(subparsers)``; ``python -m detectors`` runs the same commands standalone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``detectors`` command group (list, new) to an argparse subparsers object."""
    p = subparsers.add_parser("detectors", help="list registered detectors, scaffold a detector plugin",
                              description="Detectors are named <backbone>_<probe|tune>; see `detectors list`.")
    sub = p.add_subparsers(dest="detectors_action", required=True)
    ls = sub.add_parser("list", help="table of every registered detector (family, input, normalisation, "
                                     "parameters, FLOPs)")
    ls.add_argument("--family", help="only this family (smallcnn, open_clip, dinov2, timm, torchvision, or a "
                                     "plugin's family)")
    ls.add_argument("--format", choices=["table", "tsv", "json"], default="table")
    ls.add_argument("--no-cache", action="store_true", help="measure every detector again (slow)")
    ls.set_defaults(handler=cmd_list)
    show = sub.add_parser("show", help="build one detector untrained (meta device) and print its metadata")
    show.add_argument("name", help="detector name, e.g. RN50_probe, timm:resnet50_tune")
    show.set_defaults(handler=cmd_show)
    new = sub.add_parser("new", help="write a plugin package registering <name>_probe and <name>_tune")
    new.add_argument("name", help="backbone name of the new detector (letters, digits, '_', '-')")
    new.add_argument("--dir", default=".", help="parent directory of the package (default: .)")
    new.add_argument("--force", action="store_true", help="write into an existing non-empty directory")
    new.set_defaults(handler=cmd_new)
    return p


def cmd_list(args) -> int:
    """Print the detector table; exit 1 if some detector could not be built (its row says why)."""
    from .listing import COLUMNS, detector_rows, format_row

    rows = detector_rows(family=args.family, use_cache=not args.no_cache)
    if args.family and not rows:
        print(f"no detector of family {args.family!r}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "tsv":
        print("\t".join(COLUMNS))
        for row in rows:
            print("\t".join(format_row(row)))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="genshift detectors (FLOPs: forward, one image, multiply-add = 2)")
        for col in COLUMNS:
            table.add_column(col, justify="right" if col in ("params", "trainable", "FLOPs") else "left",
                             no_wrap=col in ("name", "input"))
        for row in rows:
            table.add_row(*(escape(cell) for cell in format_row(row)))  # '[@<tag>]' is text, not markup
        Console(width=max(140, Console().width)).print(table)
    broken = [r for r in rows if "error" in r]
    for r in broken:
        print(f"genshift: detector {r['name']} cannot be built: {r['error']}", file=sys.stderr)
    return 1 if broken else 0


def cmd_show(args) -> int:
    """Print one detector's row as JSON; an unknown name fails at once with the closest names."""
    from .registry import check_name

    check_name(args.name)  # fast: a typo fails before torch or a model library is imported
    from .listing import measure

    print(json.dumps(measure(args.name, raise_errors=True), indent=1))  # a factory's error propagates unchanged
    return 0


def cmd_new(args) -> int:
    """Write the plugin package and say how to install and try it."""
    from .scaffold import plugin_names, write_plugin

    root = write_plugin(args.name, Path(args.dir), force=args.force)
    n = plugin_names(args.name)
    print(f"wrote {root}/ ({n['pkg']}/detector.py, pyproject.toml, tests/, README.md)\n"
          f"next:\n  pip install -e {root}\n  genshift detectors list --family {args.name}\n"
          f"  genshift run --preset smoke --detector {args.name}_tune")
    return 0


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions the CLI reports as one 'error:' line (exit 2) rather than a traceback."""
    from .checkpoint import CheckpointError
    from .registry import UnknownDetectorError
    from .scaffold import ScaffoldError

    return (UnknownDetectorError, ScaffoldError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m detectors list|new ...``."""
    parser = argparse.ArgumentParser(prog="genshift")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except user_errors() as exc:
        print(f"genshift: error: {exc}", file=sys.stderr)
        return 2
