"""Shared fixtures: offline hub, a session-wide cache directory, small synthetic manifests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the whole session so the smoke dataset is generated once."""
    return tmp_path_factory.mktemp("genshift-cache")
