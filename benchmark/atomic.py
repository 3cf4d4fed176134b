"""Atomic file writes: temp file in the same directory, fsync, rename (DESIGN §7).

A write that fails because the disk is full or read-only surfaces as an OSError with that errno and the file
named, whichever library wrote the bytes (safetensors and torch report such failures in their own exception
types), so the command line can say so in one line. `GENSHIFT_WRITE_FAULT=<ERRNO name>[:<file name part>]`
makes atomic writes fail that way (fault injection for tests where no small file system can be mounted).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

WRITE_FAULT_ENV = "GENSHIFT_WRITE_FAULT"
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
_DISK_WORDS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}


def _injected_fault(path: Path) -> None:
    spec = os.environ.get(WRITE_FAULT_ENV, "")
    if not spec:
        return
    name, _, part = spec.partition(":")
    code = getattr(errno, name, None)
    if code is not None and part in path.name:
        raise OSError(code, os.strerror(code), str(path))


def disk_error(exc: BaseException, path: Path) -> OSError | None:
    """The OSError (errno, file) behind a failed write that a library reported in its own exception type, or
    None when the failure is not the disk's. A message naming no cause counts as a full disk when the file
    system has no free block left (or is read-only)."""
    if isinstance(exc, OSError):
        return None
    text = str(exc)
    code = None
    found = re.search(r"os error (\d+)", text)  # Rust's std::io::Error (safetensors)
    if found and int(found.group(1)) in _DISK_ERRNOS:
        code = int(found.group(1))
    for words, value in _DISK_WORDS.items():
        if code is None and words in text:
            code = value
    if code is None:  # torch's writer says e.g. "unexpected pos ..." or "file write failed": ask the file system
        try:
            st = os.statvfs(path.parent)
        except OSError:
            return None
        code = errno.EROFS if st.f_flag & os.ST_RDONLY else errno.ENOSPC if st.f_bavail == 0 else None
    return OSError(code, os.strerror(code), str(path)) if code is not None else None


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    _injected_fault(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file being written, not its temporary name
        raise OSError(e.errno, e.strerror, str(path)) from e
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as e:
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, str(path)) from e  # a failed write() names no file: name it
        except Exception as e:
            disk = disk_error(e, path)
            if disk is None:
                raise
            raise disk from e
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj):
    """NaN/inf become null so the file is strict JSON (readers get None, never a bare NaN token)."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path | str, doc) -> None:
    """Write strict JSON atomically (NaN → null, non-JSON types via str)."""
    import json

    atomic_write_text(path, json.dumps(_json_safe(doc), indent=1, sort_keys=True, default=str, allow_nan=False))
