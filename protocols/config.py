"""Layered YAML configuration: base → benchmark preset → detector preset → files → command line."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROTOCOL_VERSION = "genshift-1"


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says which and what is expected."""


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(doc).__name__}")
    return doc


def _flat_keys(d: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys.append(prefix + k)
        if isinstance(v, Mapping):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


# Sections whose keys are open: `cl_strategy` holds a strategy name and that strategy's own parameters, checked
# against the strategy's defaults when the run starts (protocols/strategies/registry.py).
OPEN_SECTIONS = ("cl_strategy",)


def _merge_open(base: Any, override: Any) -> dict:
    """A strategy section: a bare name means {name: NAME}; naming another strategy starts from its defaults."""
    base = {"name": base} if isinstance(base, str) else dict(base or {})
    if isinstance(override, str):
        override = {"name": override}
    if not isinstance(override, Mapping):
        raise ConfigError(f"cl_strategy must be a strategy name or a mapping {{name: ..., <parameter>: ...}}, "
                          f"got {override!r}")
    if "name" in override and override["name"] != base.get("name"):
        base = {}
    return {**base, **copy.deepcopy(dict(override))}


def merge(base: dict, override: Mapping, source: str) -> dict:
    """Deep-merge `override` into a copy of `base`; a key unknown to `base` is an error naming `source`."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if k in OPEN_SECTIONS and k in out:
            out[k] = _merge_open(out[k], v)
            continue
        if k not in out:
            close = difflib.get_close_matches(k, list(out), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {sorted(out)}"
            raise ConfigError(f"{source}: unknown config key {k!r}{hint}")
        if isinstance(out[k], dict):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{source}: key {k!r} must be a mapping, got {v!r}")
            out[k] = merge(out[k], v, f"{source} [{k}]")
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> dict:
    """`a.b=value` → {'a': {'b': value}}, the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
    out: dict = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def available_presets(kind: str = "benchmark") -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def resolve_config(
    preset: str = "default",
    detector: str | None = None,
    files: Iterable[Path] = (),
    overrides: Iterable[Mapping] = (),
) -> dict:
    """Build the resolved configuration from the layers, validating every key."""
    cfg = _read_yaml(CONFIG_DIR / "base.yaml")
    preset_path = CONFIG_DIR / "benchmark" / f"{preset}.yaml"
    if not preset_path.is_file():
        raise ConfigError(f"unknown preset {preset!r}; available: {available_presets()}")
    cfg = merge(cfg, _read_yaml(preset_path), str(preset_path))
    det = detector or cfg["detector"]
    det_path = CONFIG_DIR / "detector" / f"{det}.yaml"
    if det_path.is_file():
        cfg = merge(cfg, _read_yaml(det_path), str(det_path))
    for f in files:
        cfg = merge(cfg, _read_yaml(Path(f)), str(f))
    for o in overrides:
        cfg = merge(cfg, o, "command line")
    if detector:
        cfg["detector"] = detector
    return cfg


# Keys that do not change results: where files go, loggers, how often to checkpoint, how many processes.
RUNTIME_KEYS = ("runs_dir", "cache_dir", "loggers", "wandb", "accelerator", "devices", "num_nodes", "strategy",
                "sync_batchnorm", "train.checkpoint_every_n_steps", "cache")


def without_keys(cfg: Mapping[str, Any], ignore: Iterable[str] = RUNTIME_KEYS) -> dict:
    """A copy of `cfg` without the (possibly dotted) keys in `ignore`."""
    out = copy.deepcopy(dict(cfg))
    for key in ignore:
        *parents, last = key.split(".")
        cur = out
        for p in parents:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if isinstance(cur, dict):
            cur.pop(last, None)
    return out


def config_hash(cfg: Mapping[str, Any], ignore: Iterable[str] = RUNTIME_KEYS) -> str:
    """sha256 of the config keys that change results (paths, loggers, checkpointing, process count excluded)."""
    doc = without_keys(cfg, ignore)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += config_diff(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} != {vb!r}")
    return out


CACHE_DEFAULTS = {"eval_inputs": True, "train_inputs": True, "probe_features": True}


def cache_switches(cfg: Mapping[str, Any]) -> dict:
    """The `cache` section with defaults; unknown keys are an error."""
    sw = dict(CACHE_DEFAULTS)
    for k, v in (cfg.get("cache") or {}).items():
        if k not in sw:
            raise ValueError(f"cache.{k}: unknown cache switch; expected one of {sorted(sw)}")
        if not isinstance(v, bool):
            raise ValueError(f"cache.{k}: expected true or false, got {v!r}")
        sw[k] = v
    return sw


def builds_pixel_caches(cfg: Mapping[str, Any]) -> bool:
    """Whether a run may build a pixel store, hence wants the cache workers' fork server started early."""
    sw = cache_switches(cfg)
    return sw["eval_inputs"] or sw["train_inputs"]
