"""Run a block under another local time zone: the TZ environment variable, applied with
:func:`time.tzset`, so ``time.localtime``, naive ``datetime`` conversions and subprocesses
started inside the block all use it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["local_tz"]


@contextmanager
def local_tz(name: str) -> Iterator[None]:
    """``TZ=name`` (an IANA zone, e.g. ``"Europe/Berlin"``) for the block; the previous
    value (or its absence) is restored after, also on a failure. Not thread-safe: the
    whole process changes zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()
