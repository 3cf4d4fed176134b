"""Name -> strategy registry: built-ins plus plugins under the entry-point group ``genshift.strategies``.

The config section ``cl_strategy: {name: NAME, <parameter>: value, ...}`` (or ``--cl-strategy NAME``) names a
strategy; every parameter it leaves out takes the strategy's documented default, and an unknown name or
parameter is an error naming the closest known ones. `resolve_strategy_config` returns the section with every
parameter filled in: that resolved form is what run.json, the config hash, the npz and the leaderboard record.

Import-light on purpose: built-ins are served from `BUILTINS` (target class, defaults, one-line summary) and
plugins from their entry-point metadata, so checking a name or its parameters imports neither torch nor a
strategy module. A plugin's class is imported (its ``DEFAULTS`` read) only when its name is used.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from protocols.config import ConfigError

ENTRY_POINT_GROUP = "genshift.strategies"
DEFAULT_STRATEGY = "naive"


@dataclass(frozen=True)
class BuiltinStrategy:
    """A built-in strategy: its class as ``module:Class``, its parameters with their defaults, a summary."""

    target: str
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


# The defaults below are the documented ones (docs/strategies.md); `--cl-strategy NAME` alone runs with them.
BUILTINS: dict[str, BuiltinStrategy] = {
    "naive": BuiltinStrategy(
        "protocols.strategies.naive:Naive", {},
        "fine-tuning: window k starts from window k-1's weights (the reference's; the default)"),
    "replay": BuiltinStrategy(
        "protocols.strategies.replay:Replay", {"memory_size": 500, "ratio": 1.0, "real_share": 0.5},
        "rehearsal: a fixed-size memory of images (reservoir sampling balanced over each generator's fakes and "
        "the reals) mixed into every batch, `ratio` memory images per new one"),
    "ewc": BuiltinStrategy(
        "protocols.strategies.regularizers:EWC", {"lambda": 100.0, "gamma": 1.0},
        "online EWC: penalty lambda * sum F (theta - theta*)^2, diagonal Fisher F accumulated over windows with "
        "decay gamma"),
    "mas": BuiltinStrategy(
        "protocols.strategies.regularizers:MAS", {"lambda": 1.0, "alpha": 0.5},
        "Memory Aware Synapses: penalty lambda * sum Omega (theta - theta*)^2, Omega = mean |d logit^2 / d theta| "
        "blended over windows with alpha"),
    "lwf": BuiltinStrategy(
        "protocols.strategies.lwf:LwF", {"alpha": 1.0, "temperature": 2.0},
        "Learning without Forgetting (binary): alpha * BCE(sigmoid(z/T), sigmoid(z_prev/T)) against the previous "
        "window's model on the current data"),
    "der++": BuiltinStrategy(
        "protocols.strategies.replay:DERPlusPlus", {"memory_size": 500, "ratio": 1.0, "real_share": 0.5, "alpha": 0.1,
                                                    "beta": 0.5},
        "Dark Experience Replay++: replay memory with stored logits; alpha * MSE to the stored logits + beta * "
        "BCE on the memory's labels"),
}


class UnknownStrategyError(ConfigError):
    """No strategy of that name; the message lists the closest known names."""


class StrategyConfigError(ConfigError):
    """A strategy parameter is unknown or has a wrong type; the message names it and the expected ones."""


_entry_points: dict[str, EntryPoint] | None = None
_registered: dict[str, type] = {}  # runtime registrations (register_strategy), e.g. from tests or notebooks


def _plugin_entry_points() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def register_strategy(name: str, cls: type, *, overwrite: bool = False) -> type:
    """Register a Strategy subclass under ``name`` at runtime (plugins use the entry-point group instead)."""
    from protocols.strategies.base import Strategy

    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"strategy {name!r}: {cls!r} is not a subclass of protocols.strategies.Strategy")
    if not overwrite and (name in BUILTINS or name in _registered or name in _plugin_entry_points()):
        raise ValueError(f"strategy {name!r} is already registered; pass overwrite=True to replace it")
    _registered[name] = cls
    return cls


def list_strategies() -> list[str]:
    """Sorted names of every known strategy (built-ins, runtime registrations, installed plugins)."""
    return sorted(set(BUILTINS) | set(_registered) | set(_plugin_entry_points()))


def source_of(name: str) -> str:
    """'builtin', 'registered' or the plugin's distribution (``plugin <dist>``)."""
    if name in _registered:
        return "registered"
    if name in BUILTINS:
        return "builtin"
    ep = _plugin_entry_points().get(name)
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"plugin {dist}" if dist else "plugin"


def check_strategy_name(name: str) -> None:
    """Raise UnknownStrategyError (closest names listed) unless ``name`` is served; imports nothing."""
    if name in BUILTINS or name in _registered or name in _plugin_entry_points():
        return
    known = list_strategies()
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.4)
    raise UnknownStrategyError(
        f"unknown continual-learning strategy {name!r} (cl_strategy.name); "
        f"{'closest: ' + ', '.join(close) + '; ' if close else ''}known: {', '.join(known)} "
        "(`genshift strategies list`; `cl_strategy` is the continual-learning method, `strategy` is Lightning's "
        "distributed strategy)")


def strategy_class(name: str) -> type:
    """The Strategy subclass serving ``name`` (imports its module, or the plugin's)."""
    check_strategy_name(name)
    if name in _registered:
        return _registered[name]
    if name in BUILTINS:
        module, _, attr = BUILTINS[name].target.partition(":")
        return getattr(importlib.import_module(module), attr)
    cls = _plugin_entry_points()[name].load()  # a broken plugin fails here, loudly, when it is asked for
    from protocols.strategies.base import Strategy

    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"the entry point {name!r} in group {ENTRY_POINT_GROUP} gives {cls!r}, not a subclass of "
                        "protocols.strategies.Strategy")
    return cls


def strategy_defaults(name: str) -> dict[str, Any]:
    """Every parameter of ``name`` with its default (built-ins: without importing anything)."""
    check_strategy_name(name)
    if name in BUILTINS and name not in _registered:
        return dict(BUILTINS[name].defaults)
    return dict(getattr(strategy_class(name), "DEFAULTS", {}) or {})


def strategy_summary(name: str) -> str:
    if name in BUILTINS and name not in _registered:
        return BUILTINS[name].summary
    doc = (strategy_class(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _check_value(name: str, key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the default's type, or StrategyConfigError (ints are accepted for floats; numbers
    and booleans written as text, as `--set cl_strategy.lambda=1e3` gives them, are read as such)."""
    from protocols.config_schema import _coerce

    where = f"cl_strategy.{key} (strategy {name})"
    if default is None or isinstance(default, (list, dict)):
        return value
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = _coerce(value, type(default))
        except (ValueError, TypeError):
            pass  # refused below with the expected type
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise StrategyConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise StrategyConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StrategyConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise StrategyConfigError(f"{where}: expected a string, got {value!r}")
    return value


def resolve_strategy_config(section: Any) -> dict[str, Any]:
    """``{name, params...}`` with the name checked and every parameter present, typed as its default.

    Accepts a mapping, a bare name, or None (the default strategy). Parameters are kept in sorted order so
    that the recorded form (and hence the config hash) does not depend on the order they were given in.
    """
    if section is None:
        section = {"name": DEFAULT_STRATEGY}
    if isinstance(section, str):
        section = {"name": section}
    if not isinstance(section, Mapping):
        raise StrategyConfigError(f"cl_strategy must be a mapping {{name: ..., <parameter>: ...}} or a name, "
                                  f"got {section!r}")
    name = section.get("name", DEFAULT_STRATEGY)
    if not isinstance(name, str):
        raise StrategyConfigError(f"cl_strategy.name must be a strategy name, got {name!r}")
    check_strategy_name(name)
    defaults = strategy_defaults(name)
    given = {k: v for k, v in section.items() if k != "name"}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        hints = {k: difflib.get_close_matches(k, list(defaults), n=1) for k in unknown}
        listed = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise StrategyConfigError(f"cl_strategy: strategy {name!r} has no parameter {listed}; its parameters: "
                                  f"{', '.join(f'{k}={v!r}' for k, v in defaults.items()) or 'none'}")
    params = {k: _check_value(name, k, given.get(k, d), d) for k, d in sorted(defaults.items())}
    return {"name": name, **params}


def strategy_label(resolved: Mapping[str, Any]) -> str:
    """'ewc(gamma=1.0, lambda=100.0)' or 'naive': the name with its parameters, as tables show it."""
    params = {k: v for k, v in resolved.items() if k != "name"}
    if not params:
        return str(resolved["name"])
    return f"{resolved['name']}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def create_strategy(section: Any) -> Any:
    """Build the strategy a config section names (parameters resolved and checked first)."""
    resolved = resolve_strategy_config(section)
    cls = strategy_class(resolved["name"])
    params = {k: v for k, v in resolved.items() if k != "name"}
    strategy = cls(params)
    strategy.name = resolved["name"]
    return strategy
