"""Layered configuration: presets, detector presets, overrides, unknown keys rejected loudly."""

import pytest

from protocols.config import ConfigError, config_diff, config_hash, parse_override, resolve_config


def test_layers_and_overrides():
    base = resolve_config("default")
    assert base["dataset"] == "synthetic:default" and base["train"]["augmentation_factor"] == 4
    smoke = resolve_config("smoke", "RN50_tune", overrides=[parse_override("train.lr=0.5"),
                                                             parse_override("loggers=[csv, tensorboard]")])
    assert smoke["dataset"] == "synthetic:smoke"
    assert smoke["detector"] == "RN50_tune"
    assert smoke["train"]["lr"] == 0.5 and smoke["loggers"] == ["csv", "tensorboard"]
    ref = resolve_config("aigenbench")
    assert (ref["train"]["optimizer"], ref["train"]["lr"], ref["train"]["momentum"]) == ("sgd", 0.001, 0.9)
    assert (ref["train"]["weight_decay"], ref["train"]["grad_clip"]) == (1e-4, 1.0)
    assert ref["train"]["batch_size"] * ref["train"]["accumulate_grad_batches"] == 512  # copies per optimizer step


def test_unknown_key_names_the_source_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'lrr'.*did you mean train.lr"):
        resolve_config("smoke", overrides=[parse_override("train.lrr=1")])
    f = tmp_path / "mine.yaml"
    f.write_text("benchmark:\n  typ: continual\n")
    with pytest.raises(ConfigError, match="mine.yaml.*'typ'"):
        resolve_config("smoke", files=[f])
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.lr")


def test_hash_ignores_paths_and_diff_lists_keys():
    a = resolve_config("smoke")
    b = resolve_config("smoke", overrides=[{"runs_dir": "/elsewhere"}])
    c = resolve_config("smoke", overrides=[{"seed": 3}])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert config_diff(a, c) == ["seed: 0 != 3"]


def test_cache_switches_validate_and_say_when_pixel_stores_are_built():
    from protocols.config_model import builds_pixel_caches, cache_switches

    assert cache_switches({}) == {"eval_inputs": True, "train_inputs": "auto", "probe_features": True,
                                  "max_bytes": None, "verify": "sample", "chunk_mb": 64}
    with pytest.raises(ValueError, match=r"unknown config key 'eval_input' \(cache\.eval_input\); did you mean cache\.eval_inputs"):
        cache_switches({"cache": {"eval_input": False}})
    with pytest.raises(ValueError, match=r"cache\.train_inputs = 'never'.*expected one of auto, cached, per_window, stream, true, false"):
        cache_switches({"cache": {"train_inputs": "never"}})
    assert cache_switches({"cache": {"train_inputs": True}})["train_inputs"] == "cached"
    assert cache_switches({"cache": {"train_inputs": False}})["train_inputs"] == "stream"
    for given, want in ((None, None), (1234, 1234), ("500MB", 500_000_000), ("1.5GiB", 1610612736), ("2 tb", 2e12)):
        assert cache_switches({"cache": {"max_bytes": given}})["max_bytes"] == want
    for bad in ("lots", "12 parsecs", -1, True):
        with pytest.raises(ValueError, match=r"cache\.max_bytes.*byte count"):
            cache_switches({"cache": {"max_bytes": bad}})
    with pytest.raises(ValueError, match=r"cache\.verify = 'always'.*expected one of fast, sample, full"):
        cache_switches({"cache": {"verify": "always"}})
    off = {"eval_inputs": False, "train_inputs": False}
    assert not builds_pixel_caches({"cache": off})
    assert not builds_pixel_caches({"cache": off | {"probe_features": True}})
    assert not builds_pixel_caches({"cache": off | {"train_inputs": "stream"}})
    assert builds_pixel_caches({"cache": off | {"train_inputs": "per_window"}})
    assert builds_pixel_caches({"cache": off | {"train_inputs": True}})
    assert builds_pixel_caches({"cache": off | {"eval_inputs": True}})
