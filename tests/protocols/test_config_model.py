"""The typed, frozen config: one field per schema key and base.yaml default, enums for the enum-valued keys, a
typo in any of them refused with every valid value listed, and the config hash (the run's identity) unchanged."""

import dataclasses
import os
import subprocess
import sys
import time
import typing
from enum import StrEnum
from pathlib import Path

import pytest

from benchmark.formats import DegradationProfile
from benchmark.windows_plan import BenchmarkKind
from protocols.config import (
    CONFIG_DIR,
    ConfigError,
    _read_yaml,
    config_hash,
    resolve_config,
)
from protocols.config_model import RunConfig, resolve_run_config, run_config
from protocols.config_schema import SCHEMA, key_spec

# config_hash of the presets as computed on main before the typed config (a run made there resumes here).
PINNED_HASHES = {"default": "d029fe5500066e54", "smoke": "93824f9f0822d79b", "video": "9256deb405a58670",
                 "aigenbench": "b7bc4ce48906903e", "forgetting": "14e66afea62d054f", "lrnet": "07023f8d720ee002"}


@pytest.mark.parametrize("preset", sorted(PINNED_HASHES))
def test_preset_hashes_are_those_of_the_untyped_config(preset):
    rc = resolve_run_config(preset)
    assert config_hash(rc) == config_hash(rc.to_dict()) == config_hash(resolve_config(preset))
    assert config_hash(rc) == PINNED_HASHES[preset]


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and not (key_spec(prefix + k) is not None and key_spec(prefix + k).type is dict):
            yield from _leaves(v, prefix + k + ".")
        else:
            yield prefix + k


def _model_keys(cls=RunConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        if dataclasses.is_dataclass(hints[f.name]) and hints[f.name].__module__ == RunConfig.__module__:
            yield from _model_keys(hints[f.name], prefix + f.name + ".")
        else:
            yield prefix + f.name


def test_model_schema_and_base_yaml_name_the_same_keys():
    base = set(_leaves(_read_yaml(CONFIG_DIR / "base.yaml"))) - {"cl_strategy.name"}
    model = set(_model_keys())
    # where the model differs from the mapping, by design: cl_strategy is {name, params}; degradation.profile is
    # split into the chain, the re-encoding quality and the spelling that keys the caches
    model -= {"cl_strategy.name", "cl_strategy.params", "degradation.reencode_quality", "degradation.spec"}
    assert model == base
    listed = {k for k in SCHEMA if not k.endswith(".*")} - {"cl_strategy.name"}
    assert listed <= base, listed - base


def test_base_yaml_defaults_fit_the_model_types():
    rc = resolve_run_config("default")
    defaults = _read_yaml(CONFIG_DIR / "base.yaml")
    assert isinstance(rc.train.precision, StrEnum) and rc.train.precision == defaults["train"]["precision"]
    assert rc.benchmark.type.kind is BenchmarkKind(defaults["benchmark"]["type"])
    assert rc.degradation.profile is DegradationProfile(defaults["degradation"]["profile"])
    assert rc.degradation.base_seed == defaults["degradation"]["base_seed"]
    assert rc.to_dict()["train"] == {**defaults["train"], "augmentation_factor": 4} | {
        k: v for k, v in resolve_config("default")["train"].items()}
    for section in ("data", "eval", "sequence", "wandb"):
        typed = getattr(rc, section)
        for key, value in resolve_config("default")[section].items():
            assert getattr(typed, key) == value, f"{section}.{key}"


def test_the_typed_config_is_frozen_and_its_mapping_a_copy():
    rc = resolve_run_config("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rc.seed = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        rc.train.lr = 1.0
    with pytest.raises(TypeError):
        rc.cl_strategy.params["x"] = 1
    d = rc.to_dict()
    d["seed"] = 99
    assert rc.to_dict()["seed"] == rc.seed == 0
    assert run_config(rc) is rc and run_config(rc.to_dict()) == rc


def test_a_mapping_built_in_python_is_completed_with_base_yaml_defaults():
    rc = run_config({"seed": 3, "train": {"selection": "best"}})
    assert rc.seed == 3 and rc.train.selection == "best" and rc.train.patience == 2
    assert rc.degradation.base_seed == 4321 and rc.train.augmentation_base_seed == 4321
    with pytest.raises(ConfigError, match="train.selection = 'bets'.*did you mean best"):
        run_config({"train": {"selection": "bets"}})


def test_degradation_profile_and_benchmark_type_carry_their_properties():
    rc = resolve_run_config("smoke", overrides=[{"degradation": {"profile": "fixed+reencode90"},
                                                 "benchmark": {"type": "replay:0.25"}}])
    assert rc.degradation.profile is DegradationProfile.FIXED and rc.degradation.profile.repairs_reference
    assert rc.degradation.reencode_quality == 90 and rc.degradation.spec == "fixed+reencode90"
    assert not DegradationProfile.AIGENBENCH_V1.repairs_reference
    assert rc.benchmark.kind is BenchmarkKind.REPLAY and rc.benchmark.type.replay_fraction == 0.25
    assert str(rc.benchmark.type) == "replay:0.25"


def _enum_keys():
    """(dotted key, valid values, a typo) for every enum-valued key of the schema, plus the registries."""
    out = []
    for key, spec in SCHEMA.items():
        strings = [c for c in spec.choices if isinstance(c, str)]
        if strings:
            out.append((key, strings, strings[0][:-1] + "x" + strings[0][-1]))
    out.append(("benchmark.type", ["cumulative", "continual", "replay:<r>", "full"], "cumulativ"))
    out.append(("degradation.profile", ["aigenbench-v1", "fixed"], "aigenbench-v2"))
    out.append(("cl_strategy.name", ["naive", "replay", "ewc", "mas", "lwf", "der++"], "ewcc"))
    out.append(("loggers", ["csv", "tensorboard", "wandb"], ["csvv"]))
    return out


ENUM_KEYS = _enum_keys()


def _override(dotted, value):
    out = cur = {}
    *parents, last = dotted.split(".")
    for p in parents:
        cur = cur.setdefault(p, {})
    cur[last] = value
    return out


@pytest.mark.parametrize(("key", "valid", "typo"), ENUM_KEYS, ids=[k for k, _, _ in ENUM_KEYS])
def test_a_typo_in_any_enum_key_fails_listing_every_valid_value(key, valid, typo):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        resolve_run_config("smoke", overrides=[_override(key, typo)])
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert "\n" not in msg and key in msg and repr(typo) in msg
    for v in valid:
        assert v in msg, (v, msg)
    assert "did you mean" in msg or "closest" in msg


def test_every_enum_key_of_the_model_is_covered():
    covered = {k for k, _, _ in ENUM_KEYS}
    hints_of = {}

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            h = hints[f.name]
            if dataclasses.is_dataclass(h) and h.__module__ == RunConfig.__module__:
                walk(h, prefix + f.name + ".")
            else:
                hints_of[prefix + f.name] = BenchmarkKind if f.name == "type" else h

    walk(RunConfig)
    enum_fields = {k for k, h in hints_of.items()
                   if any(isinstance(a, type) and issubclass(a, StrEnum) for a in (h, *typing.get_args(h)))
                   or any(isinstance(a, type) and issubclass(a, StrEnum)
                          for arg in typing.get_args(h) for a in typing.get_args(arg))}
    assert enum_fields - {"degradation.profile"} <= covered, enum_fields - covered
    assert {"benchmark.type", "train.precision", "eval.precision", "eval.pipeline", "train.selection",
            "strategy", "cl_strategy.name", "degradation.profile"} <= covered


def test_unknown_detector_fails_with_the_closest_names():
    from detectors.registry import UnknownDetectorError

    with pytest.raises(UnknownDetectorError, match="smallcnn_tune"):
        resolve_run_config("smoke", "smallcnn_tun")


def test_cli_typo_fails_before_the_dataset_is_touched(tmp_path):
    """`genshift run` on a dataset that does not exist: the config typo is what it reports, in one line."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    missing = tmp_path / "nonexistent"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "protocols", "run", "--dataset", f"folder:{missing}",
                        "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                        "--set", "degradation.profile=typo", "--no-progress"],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    wall = time.perf_counter() - t0
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genshift: error: ")
    assert "degradation.profile" in lines[0] and "aigenbench-v1" in lines[0] and "fixed" in lines[0]
    assert "nonexistent" not in lines[0]  # the dataset was never looked at
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
    assert wall < 20  # interpreter start-up included, on a loaded shared machine; the check itself is < 1 s


def test_library_defaults_agree_with_base_yaml():
    """Functions callable outside a run keep a default for their seed or limit: each is the base.yaml default."""
    import inspect

    from benchmark import reference_train_augment
    from benchmark.datacheck import DEFAULT_MIN_SIDE
    from benchmark.formats import DEFAULT_BASE_SEED
    from benchmark.windows_plan import own_window_sets

    base = _read_yaml(CONFIG_DIR / "base.yaml")
    assert base["degradation"]["base_seed"] == DEFAULT_BASE_SEED
    assert base["degradation"]["profile"] == DegradationProfile.AIGENBENCH_V1
    assert base["train"]["augmentation_base_seed"] == reference_train_augment.DEFAULT_BASE_SEED
    assert base["data"]["min_side"] == DEFAULT_MIN_SIDE
    assert base["benchmark"]["real_sampling_seed"] == inspect.signature(own_window_sets).parameters["real_seed"].default


def _hint_of(dotted):
    cls, *parents, last = (RunConfig, *dotted.split("."))
    for p in parents:
        cls = typing.get_type_hints(cls)[p]
    return typing.get_type_hints(cls)[last]


def test_the_model_types_agree_with_the_schema_table():
    """Each key's field: an enum whose values are exactly the table's string choices; nullable where the table
    allows null; the plain type of the table's otherwise."""
    skip = {"cl_strategy.name", "benchmark.type", "degradation.profile"}  # registry / parsed forms, tested above
    for key, spec in SCHEMA.items():
        if key.endswith(".*") or key in skip:
            continue
        hint = _hint_of(key)
        args = typing.get_args(hint) or (hint,)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, StrEnum)]
        enums += [b for a in args for b in typing.get_args(a) if isinstance(b, type) and issubclass(b, StrEnum)]
        strings = tuple(c for c in spec.choices if isinstance(c, str))
        if strings and key != "train.channels_last":
            assert enums and tuple(enums[0]) == strings, key
        elif spec.items:
            assert enums and tuple(enums[0]) == spec.items, key
        assert (type(None) in args) == spec.nullable, key
        if spec.type in (int, float, bool, str) and not strings:
            assert spec.type in args or (spec.type is int and float in args), key


def test_the_typed_config_crosses_a_process_boundary():
    """A RunConfig pickles (spawned processes, datasets sent to workers) and comes back equal, hash included."""
    import pickle

    rc = resolve_run_config("smoke", overrides=[{"cl_strategy": {"name": "ewc", "lambda": 0.4}, "seed": 3}])
    back = pickle.loads(pickle.dumps(rc))
    assert back == rc and back.to_dict() == rc.to_dict() and config_hash(back) == config_hash(rc)
    assert back.cl_strategy.params["lambda"] == 0.4 and back.seed == 3
