"""Reading .npz files without ever running code from them.

genshift's own files hold plain arrays only and are read with `allow_pickle=False`. AI-GenBench's files store
two name arrays (`windows_timeline`, `generator_id_to_name`) as pickled object arrays when windows have unequal
sizes; those two keys, and only those, are unpickled here by an unpickler that can build nothing but numpy
arrays of plain Python values: numpy's array reconstruction (under its numpy 1 and numpy 2 module names),
`numpy.ndarray`, `numpy.dtype` and the builtins str, int, float, bool, list, tuple and dict. Any other object
a pickle asks for is refused with the file and key named, before anything is called.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own _reconstruct, whatever its module is called
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1.x name
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2.x name
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{("builtins", t.__name__): t for t in (str, int, float, bool, list, tuple, dict)},
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for an object outside the allowlist; nothing it names was called."""


class _AllowlistUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come from ALLOWED_GLOBALS only (no import, no other callable)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"persistent id {pid!r}")


def check_npz_file(path: Path) -> None:
    """Refuse, with a plain message, a file that is missing, empty or not a zip archive (before numpy sees it:
    numpy would try to unpickle a non-zip file and answer with advice to allow pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not an .npz archive")
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in ZIP_SIGNATURES:
        raise ValueError(f"{path}: not an .npz archive ({size} bytes, no zip signature); genshift reads "
                         "predictions from .npz archives of plain arrays only")


def _read_object_array(zf: zipfile.ZipFile, member: str, path: Path, key: str) -> np.ndarray:
    """An object array member (`.npy` with a pickled body) through the allowlist unpickler."""
    with zf.open(member) as raw:
        f = io.BufferedReader(raw)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{path}: key {key!r} has .npy format {version}, not 1.0 or 2.0")
        if not dtype.hasobject:
            raise ValueError(f"{path}: key {key!r} is not readable as plain data")
        try:
            arr = _AllowlistUnpickler(f).load()
        except UnsafePickleError as e:
            raise ValueError(f"{path}: key {key!r} holds a pickled {e}, which genshift never loads (allowed: numpy "
                             "arrays of str, int, float, bool, list, tuple, dict); the file is refused") from None
        except Exception as e:  # noqa: BLE001 - a damaged pickle: say so, whatever the unpickler raised
            raise ValueError(f"{path}: key {key!r} is a damaged pickle ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise ValueError(f"{path}: key {key!r} does not unpickle to a {tuple(shape)} array "
                         f"(got {type(arr).__name__})")
    return arr


def read_npz(path: Path | str, pickled_keys: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an .npz; `pickled_keys` may be object arrays (read through the allowlist unpickler), any
    other key holding objects is refused. Errors are ValueError naming the file and key."""
    path = Path(path)
    check_npz_file(path)
    pickled_keys = set(pickled_keys)
    out: dict[str, np.ndarray] = {}
    try:
        npz = np.load(path, allow_pickle=False)
        with npz, zipfile.ZipFile(path) as zf:
            for key in npz.files:
                try:
                    out[key] = npz[key]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise ValueError(f"{path}: key {key!r} is corrupt ({e})") from None
                    if key not in pickled_keys:
                        raise ValueError(f"{path}: key {key!r} holds Python objects (a pickle); genshift reads "
                                         "plain arrays only and never unpickles this key") from None
                    member = f"{key}.npy" if f"{key}.npy" in zf.namelist() else key
                    out[key] = _read_object_array(zf, member, path, key)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    return out


def npz_keys(path: Path | str) -> list[str]:
    """The keys of an .npz archive (nothing is read)."""
    path = Path(path)
    check_npz_file(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return list(npz.files)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
