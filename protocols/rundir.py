"""Run directories: run.json, the per-window layout, a lock against two writers, config checks."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from pathlib import Path
from typing import Any

from common import run_dir as layout
from protocols.config import config_diff, config_hash, without_keys
from protocols.config_model import ConfigLike


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (other config, locked, damaged)."""


class RunDir:
    """`runs/<experiment>/` with run.json and window_<k>/ subdirectories (DESIGN §5)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def window(self, k: int) -> Path:
        return layout.window_dir(self.path, k)

    def is_done(self, k: int) -> bool:
        return layout.is_done(self.window(k))

    @property
    def run_json(self) -> Path:
        return layout.run_json_path(self.path)

    def lock(self) -> None:
        """Take an exclusive lock; a second process on the same run directory is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise RunDirError(
                f"{self.path} is in use by another genshift process (lock {self.path / layout.LOCK}); "
                "wait for it to finish or use another --experiment"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def remove_temporaries(self) -> list[Path]:
        """Delete temporary files left by a process killed mid-write (atomic writes' `.<name>.*.tmp`).

        Only called while holding the lock, so no live writer owns them."""
        found = [p for p in self.path.rglob(".*.tmp") if p.is_file()]
        for p in found:
            p.unlink()
        return found

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def read_run_json(self) -> dict[str, Any] | None:
        try:
            return layout.read_run_json(self.path)
        except layout.RunJsonError as e:
            raise RunDirError(f"{e}; move the directory away to start anew") from e

    def check_compatible(self, cfg: ConfigLike, manifest_checksum: str) -> None:
        """Refuse a directory made by another config or on another manifest, listing the differences."""
        old = self.read_run_json()
        if old is None:
            return
        problems = []
        if old.get("config_hash") != config_hash(cfg):
            # Only real differences count: equal configs whose hashes differ (the set of runtime keys that the
            # hash ignores changed with a genshift upgrade) are the same run.
            problems += config_diff(without_keys(old.get("config", {})), without_keys(cfg))
        if old.get("manifest_checksum") != manifest_checksum:
            problems.append(f"manifest_checksum: {old.get('manifest_checksum')} != {manifest_checksum}")
        if problems:
            raise RunDirError(
                f"{self.path} was made by another configuration:\n  "
                + "\n  ".join(problems)
                + "\nuse another --experiment, or --force-new to move the old directory aside and start anew"
            )

    def move_aside(self) -> Path:
        """Rename the directory to <name>.old-<timestamp> (finished work is never deleted)."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        self.path.rename(target)
        return target

    def write_run_json(self, doc: dict[str, Any]) -> None:
        layout.write_run_json(self.path, doc)
