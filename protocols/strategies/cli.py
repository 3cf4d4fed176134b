"""`genshift strategies ...`: list the continual-learning strategies, scaffold a strategy plugin.

protocols/cli.py calls ``register(subparsers)``. Listing imports no strategy module for built-ins (their defaults
and summaries are in the registry's table); an installed plugin's class is imported to read its defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``strategies`` command group (list, new) to an argparse subparsers object."""
    p = subparsers.add_parser("strategies", help="list continual-learning strategies, scaffold a strategy plugin",
                              description="Strategies change how a window trains (loss terms, batch composition, "
                                          "state carried between windows); choose one with --cl-strategy NAME.")
    sub = p.add_subparsers(dest="strategies_action", required=True)
    ls = sub.add_parser("list", help="every registered strategy with its default parameters")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(handler=cmd_list)
    new = sub.add_parser("new", help="write a plugin package registering strategy NAME")
    new.add_argument("name", help="strategy name (letters, digits, '_', '-')")
    new.add_argument("--dir", default=".", help="parent directory of the package (default: .)")
    new.add_argument("--force", action="store_true", help="write into an existing non-empty directory")
    new.set_defaults(handler=cmd_new)
    return p


def strategy_rows() -> list[dict]:
    """One row per strategy: name, source (builtin or plugin), default parameters, summary."""
    from .registry import list_strategies, source_of, strategy_defaults, strategy_summary

    rows = []
    for name in list_strategies():
        row = {"name": name, "source": source_of(name)}
        try:
            row |= {"defaults": strategy_defaults(name), "summary": strategy_summary(name)}
        except Exception as e:  # a broken plugin is listed with its error, the others still show
            row |= {"defaults": {}, "summary": "", "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
    return rows


def cmd_list(args) -> int:
    """Print the strategy table; exit 1 if a plugin could not be loaded (its row says why)."""
    rows = strategy_rows()
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="genshift continual-learning strategies (--cl-strategy NAME; parameters: "
                            "--set cl_strategy.KEY=VALUE)")
        for col in ("name", "source", "defaults", "summary"):
            table.add_column(col, no_wrap=col == "name")
        for r in rows:
            defaults = ", ".join(f"{k}={v}" for k, v in r["defaults"].items()) or "—"
            table.add_row(*(escape(c) for c in (r["name"], r["source"], defaults, r.get("error") or r["summary"])))
        Console(width=max(140, Console().width)).print(table)
    broken = [r for r in rows if "error" in r]
    for r in broken:
        print(f"genshift: strategy {r['name']} cannot be loaded: {r['error']}", file=sys.stderr)
    return 1 if broken else 0


def cmd_new(args) -> int:
    """Write the plugin package and say how to install and try it."""
    from .scaffold import plugin_names, write_plugin

    root = write_plugin(args.name, Path(args.dir), force=args.force)
    n = plugin_names(args.name)
    print(f"wrote {root}/ ({n['pkg']}/strategy.py, pyproject.toml, tests/, README.md)\n"
          f"next:\n  pip install -e {root}\n  genshift strategies list\n"
          f"  genshift run --preset smoke --benchmark-type continual --cl-strategy {args.name}")
    return 0
