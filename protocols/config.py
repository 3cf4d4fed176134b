"""Layered YAML configuration: base → benchmark preset → detector preset → files → command line.

The resolved config is typed and validated against the schema table (protocols/config_schema.py) before
anything else happens; only the keys that change results take part in its hash (the run's identity).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from benchmark import strict_yaml
from common.configs import config_dir
from protocols.config_schema import ConfigError, operational_keys, parse_bytes, validate  # noqa: F401 (re-export)

CONFIG_DIR = config_dir()


def _read_yaml(path: Path) -> dict:
    """A config layer: strict YAML (no `!!python` tags, no duplicated keys), a mapping at the top."""
    doc = strict_yaml.read_file(path, "config", ConfigError) or {}
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


def _merge_open(base: Any, override: Any, source: str) -> dict:
    """A strategy section: a bare name means {name: NAME}; naming another strategy starts from its defaults."""
    base = {"name": base} if isinstance(base, str) else dict(base or {})
    if isinstance(override, str):
        override = {"name": override}
    if not isinstance(override, Mapping):
        raise ConfigError(f"{source}: cl_strategy must be a strategy name or a mapping {{name: ..., <parameter>: "
                          f"...}}, got {override!r}")
    bad = [k for k in override if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{source}: config key cl_strategy.{bad[0]!r} is not a name")
    if "name" in override and override["name"] != base.get("name"):
        base = {}
    return {**base, **copy.deepcopy(dict(override))}


def merge(base: dict, override: Mapping, source: str, _prefix: str = "",
          sources: dict[str, str] | None = None) -> dict:
    """Deep-merge `override` into a copy of `base`; a key unknown to `base` is an error naming `source`.

    `sources`, when given, records for every dotted key set here the layer that set it (for messages)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if not isinstance(k, str):
            raise ConfigError(f"{source}: config key {_prefix}{k!r} is not a name")
        if not _prefix and k in OPEN_SECTIONS and k in out:
            out[k] = _merge_open(out[k], v, source)
            if sources is not None:
                sources.update({f"{k}.{sub}": source for sub in (v if isinstance(v, Mapping) else ("name",))})
            continue
        if k not in out:
            close = difflib.get_close_matches(k, list(out), n=3)
            hint = (f"; did you mean {', '.join(_prefix + c for c in close)}?" if close
                    else f"; known keys: {[_prefix + c for c in sorted(out)]}")
            raise ConfigError(f"{source}: unknown config key {k!r} ({_prefix}{k}){hint}")
        if isinstance(out[k], dict):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{source}: key {_prefix}{k} is a section (keys {sorted(out[k])}); "
                                  f"got {v!r} instead of a mapping")
            out[k] = merge(out[k], v, source, f"{_prefix}{k}.", sources)
        else:
            out[k] = copy.deepcopy(v)
            if sources is not None:
                sources[_prefix + k] = source
    return out


def parse_override(item: str) -> dict:
    """`a.b=value` → {'a': {'b': value}}, the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = strict_yaml.load_text(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({strict_yaml.error_line(e)})") from e
    out: dict = {}
    cur = out
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key name in {key!r}")
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
    """Build the resolved configuration from the layers: every key known, every value typed and checked."""
    defaults = _read_yaml(CONFIG_DIR / "base.yaml")
    sources: dict[str, str] = {}
    if preset not in available_presets() or "/" in preset:
        raise ConfigError(f"unknown preset {preset!r}; available: {available_presets()}")
    preset_path = CONFIG_DIR / "benchmark" / f"{preset}.yaml"
    cfg = merge(defaults, _read_yaml(preset_path), str(preset_path), sources=sources)
    det = detector or cfg["detector"]
    det_path = CONFIG_DIR / "detector" / f"{det}.yaml"
    if isinstance(det, str) and "/" not in det and det_path.is_file():
        cfg = merge(cfg, _read_yaml(det_path), str(det_path), sources=sources)
    for f in files:
        cfg = merge(cfg, _read_yaml(Path(f)), str(f), sources=sources)
    for o in overrides:
        cfg = merge(cfg, o, "command line", sources=sources)
    if detector:
        cfg["detector"] = detector
        sources["detector"] = "command line"
    cfg = validate(cfg, defaults, sources)
    from protocols.strategies.registry import resolve_strategy_config  # imports no torch

    cfg["cl_strategy"] = resolve_strategy_config(cfg.get("cl_strategy"))  # every parameter, typed (defaults filled)
    return cfg



def validate_config(cfg: dict) -> dict:
    """Type and check an already resolved config in place (for configs built or edited in Python)."""
    return validate(cfg, _read_yaml(CONFIG_DIR / "base.yaml"))


def completed(cfg: Mapping[str, Any]) -> dict:
    """A config built in Python completed with base.yaml's defaults, typed and checked (a copy)."""
    defaults = _read_yaml(CONFIG_DIR / "base.yaml")
    out = validate(merge(defaults, cfg, "config"), defaults)
    from protocols.strategies.registry import resolve_strategy_config  # imports no torch

    out["cl_strategy"] = resolve_strategy_config(out.get("cl_strategy"))
    return out


# Keys that do not change results (the schema's operational keys): where files go, caches, loggers, how often to
# checkpoint, how many processes, workers and threads, the eval batch size. They may change on a resumed run.
RUNTIME_KEYS = operational_keys()


def without_keys(cfg: Any, ignore: Iterable[str] = RUNTIME_KEYS) -> dict:
    """A copy of `cfg` (its validated mapping, for a RunConfig) without the (possibly dotted) keys in `ignore`."""
    out = cfg.to_dict() if hasattr(cfg, "to_dict") else copy.deepcopy(dict(cfg))
    for key in ignore:
        *parents, last = key.split(".")
        cur = out
        for p in parents:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if isinstance(cur, dict):
            cur.pop(last, None)
    return out


def config_hash(cfg: Any, ignore: Iterable[str] = RUNTIME_KEYS) -> str:
    """sha256 of the config keys that change results (paths, loggers, checkpointing, process count excluded);
    `cfg`: a mapping or a RunConfig."""
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
