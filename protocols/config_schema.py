"""The config schema: for every dotted key its type, allowed values, and whether it changes results.

One table (`SCHEMA`), read by `validate`: a resolved config is coerced and checked against it before a run
directory, a dataset or a model is touched. Defaults stay in configs/base.yaml; a key the table does not list
is still coerced to the type of its default there. Each entry is meant to become one field definition of a
typed config object (type, default from base.yaml, allowed values as field metadata).

Adding a key: a line in configs/base.yaml (default + comment) and, unless the default's type says it all, a
line here. `operational=True` marks keys that do not change results (where files go, speed, logging): they may
differ on a resumed run and are left out of the run's identity (`config_hash`). A key ending in `.*` covers
every key of that section.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocols.config_enums import (
    Accelerator,
    CacheTrainInputs,
    CacheVerify,
    DistributedStrategy,
    EvalInput,
    EvalPipeline,
    Logger,
    Normalization,
    Optimizer,
    Precision,
    RealSampling,
    Scheduler,
    Selection,
    SequenceAggregate,
    SequenceProfile,
    TestEvery,
    TrainAugmentation,
    WandbMode,
    values,
)
from protocols.value_checks import (  # noqa: F401  (re-exported; a leaf module: the test datasets' parser reads them too)
    DEGRADATION_PROFILES,
    safe_name_problem,
)
from protocols.value_checks import dataset_problem as _dataset_problem

# The allowed values of the enum-valued keys, as plain strings (the enums in protocols/config_enums.py own them;
# degradation profiles are benchmark.formats.DegradationProfile; a test checks the modules that use them agree).
PRECISIONS = values(Precision)
TRAIN_AUGMENTATIONS = values(TrainAugmentation)
EVAL_INPUTS = values(EvalInput)
EVAL_PIPELINES = values(EvalPipeline)
EVAL_NORMALIZATIONS = values(Normalization)
LOGGERS = values(Logger)
SEQUENCE_PROFILES = values(SequenceProfile)
SEQUENCE_AGGREGATES = values(SequenceAggregate)
REAL_SAMPLINGS = values(RealSampling)
SELECTIONS = values(Selection)
TEST_EVERY = values(TestEvery)
CACHE_TRAIN_INPUTS = values(CacheTrainInputs)
CACHE_VERIFY_MODES = values(CacheVerify)


def _profile_problem(profile: str) -> str | None:
    from benchmark.formats import profile_problem

    return profile_problem(profile)


def _benchmark_type_problem(spec: str) -> str | None:
    from benchmark.windows_plan import BenchmarkType

    try:
        BenchmarkType.parse(spec)
    except ValueError as e:
        return str(e)
    return None


def _epochs_per_branch(value: dict) -> str | None:
    bad = {k: v for k, v in value.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
    return f"epochs must be integers >= 1, got {bad}" if bad else None


_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_bytes(value: Any, key: str) -> int | None:
    """A byte count: an integer, or a string with a unit (`500M`, `64GB`, `1.5TiB`); null = no limit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a byte count (e.g. 64000000000 or 64GB), got {value!r}")
    if isinstance(value, (int, float)):
        n = value
    else:
        text = str(value).strip().lower().replace(" ", "")
        num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(num):]
        try:
            n = float(num) * _BYTE_UNITS[unit]
        except (ValueError, KeyError):
            raise ConfigError(f"{key}: {value!r} is not a byte count; expected e.g. 64000000000, 500MB, 64GB "
                              f"or 1.5TiB") from None
    if not math.isfinite(n) or n < 0:
        raise ConfigError(f"{key}: expected a non-negative byte count, got {value!r}")
    return int(n)


def _byte_count_problem(value: Any) -> str | None:
    try:
        parse_bytes(value, "")
    except ConfigError:
        return "not a byte count"
    return None


def _strategy_problem(name: str) -> str | None:
    from protocols.strategies.registry import UnknownStrategyError, check_strategy_name  # imports no torch

    try:
        check_strategy_name(name)
    except UnknownStrategyError as e:
        return str(e)
    return None


def _validation_problem(value) -> str | None:
    from benchmark.validation_split import validation_problem

    return validation_problem(value)


def _threshold_problem(value: str) -> str | None:
    from leaderboard.metrics import parse_threshold_rule

    try:
        parse_threshold_rule(value)
    except ValueError as e:
        return str(e).partition(": ")[2]
    return None


def _test_datasets_problem(value: list) -> str | None:
    from protocols.test_dataset_specs import test_datasets_problem

    return test_datasets_problem(value)


def _non_empty(value: str) -> str | None:
    return "expected a non-empty string" if not value.strip() else None


@dataclass(frozen=True)
class Key:
    """One config key. `type` None: the type of its default in base.yaml. `check(value)` returns what is wrong
    and what is expected (None when the value is fine), after type, range and choices passed."""

    type: type | tuple[type, ...] | None = None
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    above: float | None = None  # strict lower bound (lr > 0)
    below: float | None = None  # strict upper bound
    choices: tuple = ()
    items: tuple = ()  # allowed items of a list
    check: Callable[[Any], str | None] | None = None
    operational: bool = False
    help: str = ""  # what is allowed, when `check` decides


SEED = Key(int, min=0, max=2**32 - 1)
SCHEMA: dict[str, Key] = {
    "experiment": Key(str, nullable=True, check=safe_name_problem, operational=True),
    "runs_dir": Key(str, check=_non_empty, operational=True),
    "cache_dir": Key(str, nullable=True, check=_non_empty, operational=True),
    "cache.*": Key(operational=True),
    "cache.eval_inputs": Key(bool, operational=True),
    "cache.train_inputs": Key((bool, str), choices=(*CACHE_TRAIN_INPUTS, True, False), operational=True),
    "cache.max_bytes": Key((int, str), nullable=True, check=_byte_count_problem, operational=True,
                           help="a byte count: an integer or a number with a unit (500MB, 64GB, 1.5TiB)"),
    "cache.verify": Key(str, choices=CACHE_VERIFY_MODES, operational=True),
    "cache.chunk_mb": Key((int, float), above=0, operational=True),
    "cache.probe_features": Key(bool, operational=True),
    "dataset": Key(str, check=_dataset_problem,
                   help="synthetic[:preset], aigenbench:PATH, folder:ROOT or csv:FILE"),
    "detector": Key(str, check=_non_empty),
    "pretrained": Key(str, check=_non_empty),
    "seed": SEED,
    "data.check": Key(bool, operational=True),
    "data.skip_bad_images": Key(bool),
    "data.min_side": Key(int, min=1),
    "benchmark.type": Key(str, check=_benchmark_type_problem, help="cumulative, continual, replay:<r> or full"),
    "benchmark.generators_per_window": Key(int, min=1),
    "benchmark.real_sampling_seed": SEED,
    "benchmark.real_sampling": Key(str, choices=REAL_SAMPLINGS),
    "benchmark.eval_balance_seed": SEED,
    "benchmark.eval_shuffle_seed": SEED,
    "benchmark.eval_pairing_seed": SEED,
    "benchmark.replay_seed": SEED,
    "cl_strategy.name": Key(str, check=_strategy_problem, help="a strategy name (`genshift strategies list`)"),
    "cl_strategy.*": Key(),  # the named strategy's parameters: typed and checked against its defaults by
    # protocols.strategies.registry.resolve_strategy_config (plugins bring their own)
    "degradation.profile": Key(str, check=_profile_problem,
                               help="aigenbench-v1 or fixed, optionally +reencode<Q> (every eval image re-encoded "
                                    "as JPEG at quality Q first), e.g. aigenbench-v1+reencode95"),
    "degradation.base_seed": Key(int, min=0, max=2**31 - 1),
    "train.epochs": Key(int, min=1),
    "train.augmentation_factor": Key(int, min=1),
    "train.augmentation": Key(str, choices=TRAIN_AUGMENTATIONS),
    "train.augmentation_base_seed": Key(int, min=0, max=2**31 - 1),
    "train.batch_size": Key(int, min=1),
    "train.accumulate_grad_batches": Key(int, min=1),
    "train.drop_last": Key(bool),
    "train.optimizer": Key(str, choices=values(Optimizer)),
    "train.lr": Key(float, above=0),
    "train.momentum": Key(float, min=0, max=1),
    "train.weight_decay": Key(float, min=0),
    "train.scheduler": Key(str, choices=values(Scheduler)),
    "train.grad_clip": Key(float, nullable=True, min=0),
    "train.precision": Key(str, choices=PRECISIONS),
    "train.channels_last": Key((bool, str), choices=("auto", True, False)),
    "train.num_workers": Key(int, min=0, operational=True),
    "train.checkpoint_every_n_steps": Key(int, min=0, operational=True),
    "train.selection": Key(str, choices=SELECTIONS),
    "train.branch_epochs": Key(dict, nullable=True, check=_epochs_per_branch),
    "train.validation": Key((int, float), min=0, check=_validation_problem),
    "train.validation_seed": SEED,
    "train.validate_every_n_steps": Key(int, min=0),
    "train.patience": Key(int, min=1),
    "train.min_delta": Key(float, min=0),
    "train.average_last": Key(int, min=1),
    "sequence.profile": Key(str, nullable=True, choices=SEQUENCE_PROFILES),
    "sequence.aggregate": Key(str, nullable=True, choices=SEQUENCE_AGGREGATES),
    "sequence.segment_length": Key(int, nullable=True, min=2),
    "sequence.frames_every": Key(int, nullable=True, min=1),
    "sequence.frames_count": Key(int, min=1),
    "eval.batch_size": Key(int, min=1, operational=True),
    "eval.pipeline": Key(str, choices=EVAL_PIPELINES),
    "eval.input": Key(str, nullable=True, choices=EVAL_INPUTS),
    "eval.normalize": Key(str, nullable=True, choices=EVAL_NORMALIZATIONS),
    "eval.precision": Key(str, choices=PRECISIONS),
    "eval.score_initial": Key(bool, operational=True),  # window_init/ only: no window's predictions change
    "eval.threshold": Key(str, check=_threshold_problem, help="eer, fpr:<x> (0 <= x < 1), youden or a number in [0, 1]"),
    # Test datasets change no benchmark result: they may be added to a finished run (its windows' checkpoints score
    # them on the next `genshift run`).
    "test_datasets": Key(list, check=_test_datasets_problem, operational=True),
    "test_every": Key(str, choices=TEST_EVERY, operational=True),
    "loggers": Key(list, items=LOGGERS, operational=True),
    "wandb.*": Key(operational=True),
    "wandb.mode": Key(str, choices=values(WandbMode), operational=True),
    "wandb.project": Key(str, check=_non_empty, operational=True),
    "wandb.entity": Key(str, nullable=True, operational=True),
    "accelerator": Key(str, choices=values(Accelerator), operational=True),
    "devices": Key(int, min=1, operational=True),
    "num_nodes": Key(int, min=1, operational=True),
    "strategy": Key(str, choices=values(DistributedStrategy), operational=True),
    "sync_batchnorm": Key(bool, operational=True),
    "threads": Key(int, nullable=True, min=1, operational=True),
}


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says which and what is expected."""


def key_spec(dotted: str) -> Key | None:
    """The table entry of a dotted key: its own line, else its section's `.*` line."""
    if dotted in SCHEMA:
        return SCHEMA[dotted]
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        spec = SCHEMA.get(".".join(parts[:i]) + ".*")
        if spec is not None:
            return spec
    return None


def operational_keys() -> tuple[str, ...]:
    """Keys (and whole sections, without the `.*`) that do not change results."""
    out = []
    for key, spec in SCHEMA.items():
        if not spec.operational:
            continue
        if key.endswith(".*"):
            out.append(key[:-2])
        elif key.rpartition(".")[0] + ".*" not in SCHEMA:
            out.append(key)
    return tuple(out)


_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a mapping"}


def _coerce(value: Any, typ: type) -> Any:
    """`value` as `typ`, or raise ValueError. Numbers written as text (`1e-3`) become numbers."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if isinstance(value, bool) or isinstance(value, (list, dict)) and typ not in (list, dict):
        raise ValueError
    if typ is float:
        out = float(value.strip() if isinstance(value, str) else value)
        if not math.isfinite(out):
            raise ValueError
        return out
    if typ is int:
        if isinstance(value, int):
            return value
        number = float(value.strip() if isinstance(value, str) else value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError
        return int(number)
    if typ is str:
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, str):
            return value
        raise ValueError
    if typ is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        raise ValueError
    if isinstance(value, typ):
        return value
    raise ValueError


def _allowed(spec: Key, typ: type | tuple[type, ...] | None) -> str:
    """What the key accepts, in words."""
    if spec.help:
        text = spec.help
    elif spec.choices:
        text = "one of " + ", ".join(_show(c) for c in spec.choices)
    elif spec.items:
        text = "a list of " + ", ".join(spec.items)
    else:
        text = _TYPE_WORDS.get(typ, getattr(typ, "__name__", str(typ))) if not isinstance(typ, tuple) else \
            " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in typ)
        bounds = [f"{op} {_number(b)}" for op, b in ((">", spec.above), (">=", spec.min), ("<", spec.below),
                                                      ("<=", spec.max)) if b is not None]
        text += (" " + " and ".join(bounds)) if bounds else ""
    return text + (", or null" if spec.nullable else "")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _show(v: Any) -> str:
    return "true" if v is True else "false" if v is False else "null" if v is None else str(v)


def _problem(value: Any, spec: Key, typ: type | tuple[type, ...] | None) -> tuple[Any, str | None]:
    """(coerced value, what is wrong or None)."""
    if value is None:
        return None, None if spec.nullable or typ is None else "null is not allowed"
    if typ is not None:
        types = typ if isinstance(typ, tuple) else (typ,)
        for t in types:
            try:
                value = _coerce(value, t)
                break
            except (ValueError, TypeError):
                continue
        else:
            return value, "wrong type"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max) or \
                (spec.above is not None and value <= spec.above) or (spec.below is not None and value >= spec.below):
            return value, "out of range"
    if spec.choices and value not in spec.choices:
        return value, "not allowed"
    if spec.items:
        bad = [v for v in value if v not in spec.items]
        if bad:
            return value, f"unknown item(s) {', '.join(map(str, bad))}"
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            return value, problem
    return value, None


def _leaves(d: Mapping, prefix: str = ""):
    """(dotted key, value) of every setting; a mapping is one setting where the table types its key a mapping."""
    for k, v in d.items():
        spec = key_spec(f"{prefix}{k}")
        if isinstance(v, Mapping) and not (spec is not None and spec.type is dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _lookup(d: Mapping, dotted: str) -> tuple[bool, Any]:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _assign(d: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value


def validate(cfg: dict, defaults: Mapping, sources: Mapping[str, str] | None = None) -> dict:
    """Coerce every leaf of `cfg` in place to its key's type and check it; raise ConfigError on the first bad one.

    `defaults` (base.yaml) gives the type of keys the table does not list; `sources` maps dotted keys to the
    layer that set them, for the message.
    """
    sources = sources or {}
    for dotted, value in list(_leaves(cfg)):
        spec = key_spec(dotted) or Key()
        typ = spec.type
        if typ is None:
            known, default = _lookup(defaults, dotted)
            typ = type(default) if known and default is not None else None
            if known and default is None:
                spec = Key(nullable=True, operational=spec.operational)
        coerced, problem = _problem(value, spec, typ)
        if problem is None:
            _assign(cfg, dotted, coerced)
            continue
        where = f" (set in {sources[dotted]})" if dotted in sources else ""
        hint = ""
        if spec.choices and isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in spec.choices], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
        elif spec.items and isinstance(value, list):
            close = [c for v in value if v not in spec.items for c in difflib.get_close_matches(str(v), spec.items, 1)]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
        if problem in ("wrong type", "out of range", "not allowed"):
            detail = f"expected {_allowed(spec, typ)}{hint}"
        elif problem.startswith("unknown item"):
            detail = f"{problem}; expected {_allowed(spec, typ)}{hint}"
        else:  # a check's own words: what is wrong and what is expected
            detail = problem
        raise ConfigError(f"config key {dotted} = {_show_value(value)}{where}: {detail}")
    return cfg


def _show_value(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else _show(value) if value is None or isinstance(value, bool) \
        else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
