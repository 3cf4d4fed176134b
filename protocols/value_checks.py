"""Checks of single config values that config validation (protocols/config_schema.py) and the test datasets'
own parser (protocols/test_datasets.py) share: a leaf module, so neither imports the other for them."""

from __future__ import annotations

import re

DEGRADATION_PROFILES = ("aigenbench-v1", "fixed")  # benchmark.degradations.PROFILES, without importing torch
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=@-]{0,199}")


def safe_name_problem(name: str) -> str | None:
    """Why `name` is not one safe path component (None when it is)."""
    if not EXPERIMENT_NAME.fullmatch(name):
        return ("expected one directory name: letters, digits and _ . , + = @ - (not starting with '.' or '-', "
                "no '/', at most 200 characters)")
    return None


def dataset_problem(spec: str) -> str | None:
    """Why `spec` is not a dataset spec (`benchmark.sources.parse_spec`), None when it is."""
    from benchmark.sources import SourceError, parse_spec

    try:
        parse_spec(spec)
    except SourceError as e:
        return str(e).partition(": ")[2] or str(e)
    return None
