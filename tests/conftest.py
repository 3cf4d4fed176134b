"""Shared fixtures: offline hub, a session-wide cache directory, small synthetic manifests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from helpers import SMALL_RUN_FLAGS


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the whole session so the smoke dataset is generated once."""
    return tmp_path_factory.mktemp("genshift-cache")




@pytest.fixture(scope="session")
def small_reference(tmp_path_factory, cache_dir):
    """reference(detector, seed) → run directory of an uninterrupted local run (made once per session)."""
    from protocols.cli import main

    runs = tmp_path_factory.mktemp("reference-runs")
    made: dict = {}

    def reference(detector: str = "smallcnn_tune", seed: int = 0, *extra: str):
        key = (detector, seed, extra)
        if key not in made:
            exp = f"{detector}-s{seed}-{len(made)}"
            assert main(["run", *SMALL_RUN_FLAGS, "--detector", detector, "--seed", str(seed), "--runs-dir", str(runs),
                         "--cache-dir", str(cache_dir), "--experiment", exp, *extra]) == 0
            made[key] = runs / exp
        return made[key]

    return reference
