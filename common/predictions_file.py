"""The predictions file format, `predictions.npz` (docs/design.md, runs on disk): its name, keys, version history,
the one atomic write (keys and dtypes checked first) and the one read (plain arrays only, version checked, older
versions migrated in memory). `protocols.predictions` builds the arrays; every reader opens files through `read`.

Version history (a reader accepts every version from 1 to SCHEMA_VERSION; a newer file is refused in one line):
1. the AI-GenBench-compatible keys (`fused_scores`, `fused_logits`, `fused_labels`, `fused_generator_ids`,
   `fused_identifiers`, `pairing`, `generator_id_to_name`, `windows_timeline`, `window`) plus `schema_version`,
   `manifest_checksum`, `protocol_version`, `benchmark_type`.
2. `run_identity`, `config_hash` (the leaderboard refuses a window of another run); optional video-track keys
   (`segment_*`, `frame_*`, `fused_compression`, `fused_video`, ...).
3. `cl_strategy`, `cl_strategy_params` (the continual-learning strategy; older files are naive fine-tuning); every
   variant field by its config name with dots as underscores (`eval_split`, `degradation_profile`,
   `degradation_base_seed`, `detector`, `train_selection`, ...); per-row source formats of image datasets
   (`fused_source_format`: jpeg | png | webp | other, `fused_jpeg_quality`: estimated quality, -1 if not JPEG);
   `threshold_*` (the operating threshold chosen on validation), `selection_*` (the policy that chose the weights),
   optional `validation_*` (the window's validation rows); test datasets' files (`kind` = "test").
4. the input pipeline (PIPELINE_KEYS) and, for images scored as several crops (five_crop), the crop-level arrays
   (CROP_KEYS). Files without them were scored by the native pipeline.

Migration of older files, in memory (`migrate`): a key added later that has one certain value for every older
file is filled in (`cl_strategy` = naive, `cl_strategy_params` = {} before version 3: strategies did not exist).
Every other added key is optional and its absence keeps the meaning the readers document (no run identity: not
checked; no pipeline: native, or what run.json records), so it is not invented.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.safe_npz import npz_keys, read_npz

FILE_NAME = "predictions.npz"
VERSION_KEY = "schema_version"
SCHEMA_VERSION = 4
PROTOCOL_VERSION = "genshift-1"  # changes when a change alters what a number means (run.json records it too)
KIND_TEST = "test"  # `kind` of a test dataset's file (window files have no `kind`)

# Keys every predictions file holds (a test dataset's too), and those a window's file adds.
ROW_KEYS = ("fused_scores", "fused_logits", "fused_labels", "fused_generator_ids", "fused_identifiers", "pairing")
COMMON_KEYS = (*ROW_KEYS, "generator_id_to_name", "window")
WINDOW_KEYS = ("windows_timeline",)
PIPELINE_KEYS = ("eval_pipeline", "eval_input", "eval_normalize", "input_size")
# One row per crop, in position order (a position's crops in scoring order; the reference's names):
# crop_scores (float32 P(fake) = sigmoid of crop_logits), crop_logits, crop_to_image_index (row of the image in
# the fused_* arrays), crop_identifiers / crop_labels / crop_generator_ids (those of the crop's image).
CROP_KEYS = ("crop_scores", "crop_logits", "crop_to_image_index", "crop_identifiers", "crop_labels",
             "crop_generator_ids")
# dtype kind of the keys with a fixed type ('f' float, 'i' integer, 'U' text) and whether it is a scalar.
DTYPES: dict[str, tuple[str, bool]] = {
    "fused_scores": ("f", False), "fused_logits": ("f", False), "fused_labels": ("i", False),
    "fused_generator_ids": ("i", False), "fused_identifiers": ("i", False), "pairing": ("i", False),
    "generator_id_to_name": ("U", False), "windows_timeline": ("U", False), "window": ("i", True),
    "manifest_checksum": ("U", True), "protocol_version": ("U", True), "benchmark_type": ("U", True),
    "run_identity": ("U", True), "config_hash": ("U", True), "cl_strategy": ("U", True),
    "cl_strategy_params": ("U", True), "eval_pipeline": ("U", True), "eval_input": ("U", True),
    "eval_normalize": ("U", True), "input_size": ("i", True), "kind": ("U", True),
    "crop_scores": ("f", False), "crop_logits": ("f", False), "crop_to_image_index": ("i", False),
    "crop_identifiers": ("i", False), "crop_labels": ("i", False), "crop_generator_ids": ("i", False),
}


class PredictionsFormatError(ValueError):
    """A predictions file (or the arrays meant for one) does not follow the format; the message names it."""


def _check_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Keys and dtypes of the arrays about to be written (a mistake is the writer's bug: refused before any byte)."""
    test = str(arrays.get("kind", "")) == KIND_TEST
    missing = [k for k in COMMON_KEYS + (() if test else WINDOW_KEYS) if k not in arrays]
    if missing:
        raise PredictionsFormatError(f"{path}: predictions lack the keys {missing}")
    if VERSION_KEY in arrays:
        raise PredictionsFormatError(f"{path}: {VERSION_KEY} is set by the format's owner, not by the writer")
    n = np.asarray(arrays["fused_scores"]).shape
    for key, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind == "O":
            raise PredictionsFormatError(f"{path}: key {key!r} holds Python objects; predictions are plain arrays")
        kind, scalar = DTYPES.get(key, (None, None))
        if kind is None:
            continue
        got = "i" if a.dtype.kind in "iu" else a.dtype.kind
        if got != kind or (a.ndim == 0) != scalar:
            want = ("a scalar" if scalar else "an array") + f" of kind {kind!r}"
            raise PredictionsFormatError(f"{path}: key {key!r} must be {want}, got {a.dtype} {a.shape}")
        if key in ROW_KEYS and a.shape != n:
            raise PredictionsFormatError(f"{path}: key {key!r} has shape {a.shape}, expected {n} like fused_scores")


def write(path: Path | str, arrays: Mapping[str, np.ndarray], *, schema_version: int = SCHEMA_VERSION,
          before_commit: Callable[[], None] | None = None) -> Path:
    """Write `arrays` as a predictions file atomically (temporary file, fsync, rename), stamped with
    `schema_version` (older versions only to make files as older genshift wrote them). `before_commit` runs after
    the bytes are written and before the rename (fault injection)."""
    path = Path(path)
    if not 1 <= int(schema_version) <= SCHEMA_VERSION:
        raise PredictionsFormatError(f"{path}: schema_version {schema_version} is not one of 1..{SCHEMA_VERSION}")
    _check_arrays(path, arrays)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{VERSION_KEY: np.int64(schema_version)})
        if before_commit is not None:
            before_commit()
    return path


def file_version(arrays: Mapping[str, np.ndarray], path: Path | str = "arrays") -> int:
    """The file's schema version (1 when it records none); a version newer than this genshift knows, or one that
    is not an integer scalar, is refused in one line naming the file."""
    if VERSION_KEY not in arrays:
        return 1
    raw = np.asarray(arrays[VERSION_KEY])
    if raw.shape != () or raw.dtype.kind not in "iu":
        raise PredictionsFormatError(f"{path}: {VERSION_KEY} must be an integer scalar, got {raw.dtype} {raw.shape}")
    version = int(raw)
    if version > SCHEMA_VERSION:
        raise PredictionsFormatError(f"{path}: predictions schema_version {version} is newer than the newest this "
                                     f"genshift reads ({SCHEMA_VERSION}); upgrade genshift to read it")
    if version < 1:
        raise PredictionsFormatError(f"{path}: predictions schema_version {version} is not a version (1..)")
    return version


def _to_v2(arrays: dict) -> dict:
    return arrays  # run_identity/config_hash absent: the run's identity is not checked, as for every v1 file


def _to_v3(arrays: dict) -> dict:
    arrays.setdefault("cl_strategy", np.array("naive"))  # no strategies before v3: naive fine-tuning
    arrays.setdefault("cl_strategy_params", np.array(json.dumps({})))
    return arrays


def _to_v4(arrays: dict) -> dict:
    return arrays  # no pipeline keys: native pipeline, or run.json's record (leaderboard.crops.pipeline_of)


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _to_v2, 2: _to_v3, 3: _to_v4}  # from version v to v + 1


def migrate(arrays: Mapping[str, np.ndarray], version: int) -> dict[str, np.ndarray]:
    """Arrays of a version-`version` file in the current version's shape (see the module docstring)."""
    out = dict(arrays)
    for v in range(version, SCHEMA_VERSION):
        out = MIGRATIONS[v](out)
    if version < SCHEMA_VERSION:
        out[VERSION_KEY] = np.int64(SCHEMA_VERSION)
    return out


def read(path: Path | str, pickled_keys: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Every array of a predictions file, read without unpickling anything (`common.safe_npz`), its version
    checked and older versions migrated to the current shape. Errors are ValueError naming the file."""
    arrays = read_npz(path, pickled_keys)
    return migrate(arrays, file_version(arrays, path))


def keys(path: Path | str) -> list[str]:
    """The keys stored in a predictions file (nothing is read)."""
    return npz_keys(path)


def is_genshift_file(stored_keys: Iterable[str]) -> bool:
    """Whether a file's keys are genshift's (an AI-GenBench file has no schema version)."""
    stored = set(stored_keys)
    return VERSION_KEY in stored and "fused_identifiers" in stored
