"""`genshift cache info|clear`: list or delete the computed caches (eval inputs, training copies, probe features).

The dataset cache (`datasets/`) is left alone: `clear` only removes stores that genshift can rebuild from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmark.array_store import cache_kinds, clear_stores, describe_stores


def _cache_dir(args) -> Path:
    from benchmark.sources import default_cache_dir

    return Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_cache(args: argparse.Namespace) -> int:
    root = _cache_dir(args)
    kinds = tuple(args.kind) if args.kind else None
    if args.action == "info":
        stores = [s for s in describe_stores(root) if kinds is None or s["kind"] in kinds]
        if args.json:
            print(json.dumps({"cache_dir": str(root), "stores": stores}, indent=1))
            return 0
        print(f"cache directory: {root}")
        for s in stores:
            state = "" if s["complete"] else "  (incomplete: rebuilt on next use)"
            print(f"  {s['kind']:<13} {s['digest']}  {_human(s['bytes']):>10}  shape {s['shape']}{state}")
        total = sum(s["bytes"] for s in stores)
        print(f"{len(stores)} store(s), {_human(total)}")
        return 0
    freed = clear_stores(root, kinds)
    print(f"removed {', '.join(kinds) if kinds else 'all'} caches under {root}: {_human(freed)} freed")
    return 0


def register(subparsers) -> None:
    """Add `cache info|clear`; sets `args.handler(args) -> int`."""
    p = subparsers.add_parser("cache", help="list or clear cached eval inputs, training copies and probe features",
                              description="Caches are keyed by everything that changes their content and are "
                                          "rebuilt automatically when stale or corrupt; clear them to free disk.")
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--cache-dir", help="default $GENSHIFT_CACHE or ~/.cache/genshift")
    p.add_argument("--kind", action="append", choices=list(cache_kinds()),
                   help="only this kind of cache (repeatable; default all)")
    p.add_argument("--json", action="store_true", help="info as JSON")
    p.set_defaults(handler=cmd_cache)
