"""Protocol variants of runs: the recorded fields that shape a number, read by their config names.

A number means something only together with its variant (DESIGN §9). Two kinds of fields:

- evaluation-defining (EVAL_FIELDS): the data and the evaluation the numbers are measured on. Runs that differ
  in one are never ranked in one table: `genshift leaderboard` refuses them (naming the fields) unless told to
  `--group-by` the fields, which gives one table per group;
- method-side (METHOD_FIELDS): what a method chose (detector, benchmark type, continual strategy, selection,
  input pipeline). Comparing them is the point of a leaderboard: they are columns of one table.

A field is read, by its config name, from the first of: the run's window_0 predictions.npz (key = the name with
dots replaced by underscores, e.g. `eval_pipeline`; `cl_strategy` together with `cl_strategy_params`), run.json's
top level (by either spelling, e.g. `manifest_checksum`, `benchmark_type`; a mapping there is a record, not a
value), run.json's `config` (dotted path, e.g. `degradation.profile`), and the default below for runs made
before the field was recorded. Any recorded config key can be used with `--group-by`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

import numpy as np

EVAL_FIELDS: tuple[str, ...] = ("manifest_checksum", "protocol_version", "eval.split", "degradation.profile",
                                "degradation.base_seed")
METHOD_FIELDS: tuple[str, ...] = ("detector", "benchmark.type", "cl_strategy", "train.selection", "eval.pipeline",
                                  "eval.normalize")
VARIANT_FIELDS: tuple[str, ...] = EVAL_FIELDS + METHOD_FIELDS
# Values of runs that did not record a field (older runs): what those runs did.
DEFAULTS: dict[str, object] = {
    "eval.split": "eval",
    "degradation.profile": "aigenbench-v1",
    "degradation.base_seed": 4321,
    "benchmark.type": "cumulative",
    "cl_strategy": "naive",
    "train.selection": "last",
    "eval.pipeline": "native",
}
# Config keys that do not change what a run computes: runs differing only in these (and the seed) are seeds of
# one configuration, pooled into one leaderboard row.
OPERATIONAL_KEYS: tuple[str, ...] = (
    "seed", "experiment", "runs_dir", "cache_dir", "cache", "loggers", "wandb", "threads", "accelerator", "devices",
    "num_nodes", "strategy", "train.num_workers", "train.checkpoint_every_n_steps", "data.check", "eval.batch_size",
)
# Config sections that a variant field already stands for, with the default of runs that did not record them:
# left out of the configuration key so that a run made before the section existed pools with one that records
# the default (a run without `cl_strategy` fine-tuned, as one with `cl_strategy: {name: naive}`).
RECORDED_AS_FIELDS: tuple[str, ...] = ("cl_strategy",)
MISSING = "(not recorded)"


def _config_get(config: Mapping, name: str):
    node: object = config
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def _text(value) -> str:
    """A field value as a short, stable string."""
    if isinstance(value, np.ndarray):
        value = value.item() if value.shape == () else value.tolist()
    if isinstance(value, Mapping):
        params = {k: v for k, v in value.items() if k != "name"}
        if "name" in value:
            inner = ", ".join(f"{k}={_text(v)}" for k, v in sorted(params.items()))
            return f"{value['name']}({inner})" if inner else str(value["name"])
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str)
    if value is None:
        return "null"
    return str(value)


def field_value(name: str, info: Mapping, arrays: Mapping[str, np.ndarray] | None = None) -> str:
    """The value of one field of a run (module doc for where it is read), as text; MISSING if nowhere."""
    key = name.replace(".", "_")
    if arrays is not None and key in arrays:
        if f"{key}_params" in arrays:  # the strategy's name, its resolved parameters beside it (JSON)
            try:
                params = json.loads(str(_text(arrays[f"{key}_params"])))
            except ValueError:
                params = None
            if isinstance(params, dict):
                return _text({**params, "name": _text(arrays[key])})
        return _text(arrays[key])
    for top in (name, key):  # run.json's top level, by either spelling (`benchmark_type`, `manifest_checksum`)
        if top in info and not isinstance(info[top], Mapping):
            return _text(info[top])
    config = info.get("config") or {}
    value = _config_get(config, name)
    if name == "detector" and value is MISSING:
        value = (info.get("detector") or {}).get("name", MISSING)
    if name == "benchmark.type" and value is MISSING:
        value = info.get("benchmark_type", MISSING)
    if name == "eval.normalize" and value in (MISSING, None):
        pipeline = field_value("eval.pipeline", info, arrays)
        value = "clip" if pipeline == "reference" else "backbone"  # what a null normalize meant
    if value is MISSING:
        return _text(DEFAULTS[name]) if name in DEFAULTS else MISSING
    return _text(value)


def run_fields(info: Mapping, arrays: Mapping[str, np.ndarray] | None = None) -> dict[str, str]:
    """Every VARIANT_FIELDS value of a run."""
    return {name: field_value(name, info, arrays) for name in VARIANT_FIELDS}


def _without(config: Mapping, dotted: Sequence[str], prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in dotted:
            continue
        out[key] = _without(value, dotted, f"{name}.") if isinstance(value, Mapping) else value
    return out


def configuration_key(info: Mapping, fields: Mapping[str, str], fallback: str) -> str:
    """What runs must share to be seeds of one configuration: the variant fields and the config minus the seed
    and OPERATIONAL_KEYS. A run without a recorded config (an AI-GenBench experiment) is its own configuration."""
    config = info.get("config") or {}
    if not config:
        return f"run:{fallback}"
    body = {"fields": dict(fields), "config": _without(config, OPERATIONAL_KEYS + RECORDED_AS_FIELDS)}
    return json.dumps(body, sort_keys=True, default=str)


def run_seed(info: Mapping):
    """The run's seed (config `seed`), or None."""
    return (info.get("config") or {}).get("seed")


_SEED = re.compile(r"seed-?\d+")


def configuration_name(names: Sequence[str], seeds: Sequence) -> str:
    """A row name for runs that are seeds of one configuration: the run name with its seed part as a set."""
    if len(names) == 1:
        return names[0]
    stems = {_SEED.sub("seed*", n) for n in names}
    if len(stems) == 1 and "seed*" in next(iter(stems)):
        listed = ",".join(str(s) for s in seeds)
        return next(iter(stems)).replace("seed*", f"seed{{{listed}}}")
    return f"{names[0]} (+{len(names) - 1} seeds)"


def group_label(fields: Mapping[str, str], group_by: Sequence[str]) -> str:
    """The label of a table when grouping, e.g. 'degradation.profile=fixed'; '' without grouping."""
    return ", ".join(f"{name}={fields[name]}" for name in group_by)
