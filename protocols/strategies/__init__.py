"""Continual-learning strategies: what a method changes in training (loss terms, batch composition, per-window
state), chosen with `--cl-strategy NAME` or the `cl_strategy` config section (docs/strategies.md).

Importing the package imports only the registry (no torch); `Strategy` and the context types load on first
access, so a misspelt strategy name fails in milliseconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import (
    ENTRY_POINT_GROUP,
    StrategyConfigError,
    UnknownStrategyError,
    create_strategy,
    list_strategies,
    register_strategy,
    resolve_strategy_config,
    strategy_defaults,
)

if TYPE_CHECKING:
    from .base import BatchExtension, Strategy, TrainStep, WindowContext, trainable_named_parameters

_LAZY = {"Strategy": "base", "BatchExtension": "base", "TrainStep": "base", "WindowContext": "base",
         "trainable_named_parameters": "base"}

__all__ = [
    "ENTRY_POINT_GROUP", "BatchExtension", "Strategy", "StrategyConfigError", "TrainStep", "UnknownStrategyError",
    "WindowContext", "create_strategy", "list_strategies", "register_strategy", "resolve_strategy_config",
    "strategy_defaults", "trainable_named_parameters",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
