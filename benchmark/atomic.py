"""Atomic file writes for the data package: re-exported from `common.atomic`, which owns them."""

from common.atomic import (  # noqa: F401
    WRITE_FAULT_ENV,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    disk_error,
)
