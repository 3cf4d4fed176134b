"""The localization file format, `window_<k>/localization.npz`: its name, version, the one atomic write and the
one read (plain arrays only, version checked). `protocols.localization` builds the arrays (P(altered) maps
quantised to uint8, masks bit-packed, shapes, eval positions, sample ids, how the inputs were made);
`leaderboard.localization_view` reads them.

Version history: 1. `maps_u8`, `masks_packed`, `shapes`, `positions`, `sample_ids`, `inputs`, `schema_version`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_bytes
from common.safe_npz import read_npz

FILE_NAME = "localization.npz"
VERSION_KEY = "schema_version"
SCHEMA_VERSION = 1
REQUIRED_KEYS = ("maps_u8", "masks_packed", "shapes")


def write(window_dir: Path | str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `window_dir/localization.npz` atomically (compressed, no pickles), stamped with SCHEMA_VERSION."""
    path = Path(window_dir) / FILE_NAME
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing or VERSION_KEY in arrays:
        raise ValueError(f"{path}: localization arrays lack {missing} or set {VERSION_KEY} themselves")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, **{VERSION_KEY: np.int64(SCHEMA_VERSION)})
    atomic_write_bytes(path, buf.getvalue())
    return path


def read(path: Path | str) -> dict[str, np.ndarray]:
    """Every array of a localization file; a newer version than this genshift knows is refused in one line."""
    arrays = read_npz(path)
    if VERSION_KEY in arrays and int(arrays[VERSION_KEY]) > SCHEMA_VERSION:
        raise ValueError(f"{path}: localization schema_version {int(arrays[VERSION_KEY])} is newer than the newest "
                         f"this genshift reads ({SCHEMA_VERSION}); upgrade genshift to read it")
    return arrays
