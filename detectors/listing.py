"""The `detectors list` table: every registered name with family, mode, input, normalisation, size and FLOPs.

Each detector is built with pretrained='none' on the meta device (no memory, no weights; plain CPU if the
factory cannot build on meta) and its forward FLOPs are counted with torch.utils.flop_counter for one image.
Rows are cached on disk, keyed by the library versions, this package's source and each plugin's version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import torch

from . import registry
from .base import count_flops
from .builtins import BUILTINS

CACHE_NAME = "detectors-list.json"
_NORMS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def default_cache_file() -> Path:
    """$GENSHIFT_CACHE/detectors-list.json (default ~/.cache/genshift)."""
    env = os.environ.get("GENSHIFT_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "genshift") / CACHE_NAME


def norm_label(mean: Iterable[float], std: Iterable[float]) -> str:
    """'clip', 'imagenet', 'inception' for the well-known statistics, else the numbers."""
    mean, std = tuple(mean), tuple(std)
    for label, (m, s) in _NORMS.items():
        if all(abs(a - b) < 1e-4 for a, b in zip(mean + std, m + s, strict=True)):
            return label
    return "mean=" + ",".join(f"{v:.3g}" for v in mean) + " std=" + ",".join(f"{v:.3g}" for v in std)


def _fingerprint() -> str:
    """Library versions + this package's source: a change to either invalidates cached rows."""
    h = hashlib.sha256()
    for dist in ("torch", "torchvision", "timm", "open_clip_torch"):
        try:
            h.update(f"{dist}={metadata.version(dist)};".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=absent;".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _plugin_key(name: str) -> str | None:
    """'dist==version:entry.point' of the plugin serving ``name``, or None for built-ins."""
    for ep_name, ep in registry._plugin_entry_points().items():
        if ep_name == name or name in (f"{ep_name}_{m}" for m in ("probe", "tune")):
            dist = getattr(ep, "dist", None)
            return f"{dist.name if dist else '?'}=={dist.version if dist else '?'}:{ep.value}"
    return None


def family_hint(name: str) -> str | None:
    """Family of a built-in name without building it (None for plugins: only their metadata says)."""
    if _plugin_key(name) is not None:
        return None
    return registry.family_of(name)


class _NoRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def measure(name: str, raise_errors: bool = False) -> dict:
    """Build ``name`` untrained (meta device, else CPU) and describe it.

    With ``raise_errors`` the factory's own exception propagates unchanged; otherwise it becomes an 'error'
    row, so that one broken plugin does not hide the other detectors in a listing.
    """
    quiet = _NoRandomInitNotice()
    logging.getLogger().addFilter(quiet)  # 'initialized randomly' is the point here, not news
    try:
        try:
            with torch.device("meta"):
                det = registry.create_detector(name, pretrained="none")
            device = "meta"
            flops = count_flops(det)
        except (NotImplementedError, RuntimeError):  # a factory or an op without meta-device support
            det = registry.create_detector(name, pretrained="none")
            device = "cpu"
            flops = count_flops(det)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the other rows; shown in its row
        if raise_errors:
            raise
        return {"name": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
    finally:
        logging.getLogger().removeFilter(quiet)
    m = det.meta
    return {"name": name, "family": m.family, "backbone": m.backbone, "mode": m.mode, "input_size": m.input_size,
            "eval_resize": m.eval_resize, "norm": norm_label(m.mean, m.std), "feature_dim": m.feature_dim,
            "n_params": m.n_params, "n_trainable": m.n_trainable, "flops": flops, "measured_on": device}


def detector_rows(family: str | None = None, use_cache: bool = True, cache_file: Path | None = None) -> list[dict]:
    """One row per registered name (plus family-pattern rows), optionally only ``family``; cached on disk."""
    cache_file = cache_file or default_cache_file()
    base = _fingerprint()
    cache: dict = {}
    if use_cache and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (ValueError, OSError):
            cache = {}
    rows, dirty = [], False
    for name in registry.list_detectors():
        hint = family_hint(name)
        if family and hint is not None and hint != family:
            continue
        key = f"{base}|{_plugin_key(name) or 'builtin'}"
        hit = cache.get(name)
        if hit and hit.get("key") == key and "error" not in hit["row"]:
            row = hit["row"]
        else:
            row = measure(name)
            cache[name], dirty = {"key": key, "row": row}, True
        if family and row.get("family", hint) != family:
            continue
        rows.append(row)
    for pattern in registry.list_detectors(include_patterns=True):
        if registry._is_pattern(pattern):
            fam = BUILTINS[pattern][1] if pattern in BUILTINS else "plugin"
            if not family or fam == family:
                shown = f"{pattern[:-1]}<model>{'[@<tag>]' if fam == 'open_clip' else ''}_<mode>"
                rows.append({"name": shown if pattern.endswith("*") else pattern,
                             "family": fam, "pattern": True})
    if dirty and use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, cache_file)
    return rows


def _human(n: int | None, billions: str = "G") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, billions), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n}"


COLUMNS = ("name", "family", "mode", "input", "normalisation", "params", "trainable", "FLOPs")


def format_row(row: dict) -> tuple[str, ...]:
    """Display strings for one row, in COLUMNS order."""
    if row.get("pattern"):
        return (row["name"], row["family"], "probe|tune", "model's", "model's", "-", "-", "-")
    if "error" in row:
        return (row["name"], "ERROR", "-", "-", row["error"], "-", "-", "-")
    return (row["name"], row["family"], row["mode"], f"{row['input_size']} {row['eval_resize']}", row["norm"],
            _human(row["n_params"], "B"), _human(row["n_trainable"], "B"), _human(row["flops"]))
