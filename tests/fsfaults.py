"""Test helpers for power-cut-safe writes (:mod:`edge.fsutil`): a recorder of which files
and folders were ``fsync``-ed, and a real "disk full" midway through a write.

A power cut cannot be simulated in a test; these check what can be checked: that the
right things were synced, in the right order, and what a failing write leaves behind.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["FsyncRecorder", "Synced", "file_size_limit"]


@dataclass(frozen=True)
class Synced:
    """One ``os.fsync`` call: the path of the synced descriptor (from ``/proc/self/fd``),
    and what the recorder's probe returned just before the sync."""

    path: Path
    probe: Any


class FsyncRecorder:
    """Replaces ``os.fsync`` (for the test, via ``monkeypatch``) with a wrapper that records
    the synced path and calls through to the real ``os.fsync``.

    Args:
        monkeypatch: the test's fixture (undoes the wrap after the test).
        probe: called before each sync, its result recorded (e.g. whether the final file
            exists yet, to check the data was synced before the rename).
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, probe: Callable[[], Any] = lambda: None
    ) -> None:
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc/self/fd to name synced descriptors (Linux)")
        self.calls: list[Synced] = []
        real = os.fsync

        def fsync(fd: Any) -> None:
            num = fd if isinstance(fd, int) else fd.fileno()
            self.calls.append(Synced(Path(os.readlink(f"/proc/self/fd/{num}")), probe()))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    @property
    def paths(self) -> list[Path]:
        return [c.path for c in self.calls]

    def clear(self) -> None:
        self.calls.clear()


@contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """A real write failure midway: within the block, a write that would make any file of
    this process larger than ``max_bytes`` writes up to the limit, then fails with
    ``EFBIG`` (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) -- what a full disk does to a
    write, short of filling one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
