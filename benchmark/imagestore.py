"""Where a sample's image bytes live: a file under the manifest root, or a row of an HF Arrow dataset.

A `Sample.path` is either a relative/absolute file path, or a row reference ``hf-row:<split>/<row>``
into the `datasets.save_to_disk` directory that is the manifest root (the `aigenbench:` source). Rows
are read on demand from the memory-mapped Arrow files; each process opens the dataset lazily (DataLoader
and process-pool workers included), so no image is held in memory beyond the one being read.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from benchmark.images import ImageReadError, load_rgb

ROW_SCHEME = "hf-row:"
_lock = threading.Lock()
_open: dict[tuple[int, str], dict] = {}  # (pid, dataset dir) -> {split: arrow-formatted image column}


def row_ref(split: str, row: int) -> str:
    """The `Sample.path` of row `row` of HF split `split`."""
    return f"{ROW_SCHEME}{split}/{int(row)}"


def is_row_ref(path: str) -> bool:
    return str(path).startswith(ROW_SCHEME)


def parse_row_ref(path: str) -> tuple[str, int]:
    """(HF split, row index) of a row reference; errors name the reference."""
    body = str(path)[len(ROW_SCHEME) :]
    split, sep, row = body.rpartition("/")
    if not is_row_ref(path) or not sep or not split or not row.isdigit():
        raise ValueError(f"malformed row reference {path!r}; expected '{ROW_SCHEME}<split>/<row>'")
    return split, int(row)


def register_large_image_feature() -> None:
    """Let `datasets` open releases whose image column is AI-GenBench's custom `LargeImage` type.

    The final release casts images to the standard `Image` feature, but intermediate builds keep
    `LargeImage` (an `Image` with large_binary/large_string storage). We only read raw bytes, so a
    type with the same storage is enough.
    """
    from datasets.features import features as F

    if "LargeImage" in F._FEATURE_TYPES:
        return
    from dataclasses import dataclass, field
    from typing import Any, ClassVar

    import pyarrow as pa
    from datasets.features import Image

    @dataclass
    class LargeImage(Image):
        pa_type: ClassVar[Any] = pa.struct({"bytes": pa.large_binary(), "path": pa.large_string()})
        _type: str = field(default="LargeImage", init=False, repr=False)

    with warnings.catch_warnings():  # 'register_feature is experimental'
        warnings.simplefilter("ignore", UserWarning)
        F.register_feature(LargeImage, "LargeImage")


def open_dataset_dict(root: Path | str):
    """`datasets.load_from_disk(root)`, with a loud error when it is not a saved DatasetDict."""
    import datasets

    register_large_image_feature()
    root = Path(root)
    if not (root / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{root}: not a datasets.save_to_disk DatasetDict (no dataset_dict.json); point "
            "aigenbench:PATH at the folder that holds dataset_dict.json, train/ and validation/"
        )
    dd = datasets.load_from_disk(str(root))
    if not isinstance(dd, datasets.DatasetDict):
        raise ValueError(f"{root}: expected a DatasetDict with splits train/validation, got {type(dd).__name__}")
    return dd


def _image_column(root: Path, split: str):
    key = (os.getpid(), str(root))
    with _lock:
        splits = _open.get(key)
        if splits is None:
            dd = open_dataset_dict(root)
            splits = {s: dd[s].select_columns(["image"]).with_format("arrow") for s in dd}
            _open[key] = splits
    if split not in splits:
        raise KeyError(f"{root}: dataset has no split {split!r} (has {sorted(splits)})")
    return splits[split]


def read_row_bytes(root: Path | str, split: str, row: int) -> bytes:
    """Encoded image bytes of one row (the stored file: PNG, JPEG, ...)."""
    root = Path(root)
    col = _image_column(root, split)
    if not 0 <= row < len(col):
        raise IndexError(f"{root}: row {row} outside split {split!r} of {len(col)} rows")
    cell = col[row].column("image")[0].as_py()
    if cell is None:
        raise ImageReadError(f"{root}: {split} row {row} has no image (null cell)")
    if cell.get("bytes") is not None:
        return cell["bytes"]
    path = cell.get("path")
    if path:  # a row that names a file instead of holding bytes: only a file inside the dataset is read
        file = Path(path) if Path(path).is_absolute() else root / path
        real = Path(os.path.realpath(file))
        if not real.is_relative_to(Path(os.path.realpath(root))):
            raise ImageReadError(f"{root}: {split} row {row} names the file {path!r}, which leads outside the dataset "
                                 f"({real}); genshift reads only files inside it")
        if real.is_file():
            return real.read_bytes()
    raise ImageReadError(f"{root}: {split} row {row} stores no bytes and its path {path!r} does not exist")


def read_bytes(root: Path | str, path: str) -> bytes:
    """Encoded bytes of a sample's image (file or Arrow row)."""
    if is_row_ref(path):
        split, row = parse_row_ref(path)
        return read_row_bytes(root, split, row)
    p = Path(path)
    return (p if p.is_absolute() else Path(root) / p).read_bytes()


def read_image(root: Path | str, path: str) -> np.ndarray:
    """Decode a sample's image to uint8 HWC RGB (EXIF orientation applied), file or Arrow row."""
    if not is_row_ref(path):
        p = Path(path)
        return load_rgb(p if p.is_absolute() else Path(root) / p)
    data = read_bytes(root, path)
    try:
        return load_rgb(io.BytesIO(data))
    except ImageReadError as e:
        raise ImageReadError(f"cannot decode image {path} of {root}: {e.__cause__ or e}") from e


def describe(root: Path | str, path: str) -> str:
    """Human-readable location of a sample's image, for messages."""
    if is_row_ref(path):
        split, row = parse_row_ref(path)
        return f"{root} [{split} row {row}]"
    p = Path(path)
    return str(p if p.is_absolute() else Path(root) / p)


def read_checked(root: Path | str, path: str, expected_sha: str) -> tuple[bytes | None, str, list[tuple[str, str, str]]]:
    """`genshift data check`'s first step for any sample file: (bytes or None, their sha256 or "", problems as
    (kind, severity, message)): `unreadable` when it cannot be read, `changed` when its bytes no longer match
    the manifest's sha256."""
    where = describe(root, path)
    try:
        data = read_bytes(root, path)
    except Exception as e:  # noqa: BLE001 - every read failure is reported, none stops the check
        return None, "", [("unreadable", "error", f"{where}: cannot read: {e}")]
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha and sha != expected_sha:
        return data, sha, [("changed", "error", f"{where}: bytes changed since the manifest was built "
                                                "(sha256 mismatch); rebuild the manifest (clear its cache)")]
    return data, sha, []


def forget_open_datasets() -> None:
    """Drop this process's open Arrow datasets (tests; after the files were rewritten)."""
    with _lock:
        _open.clear()
