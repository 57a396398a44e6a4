"""Polling for tests: wait, with a deadline, until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait"]


def wait(pred: Callable[[], object], timeout: float = 10.0, *, interval: float = 0.02) -> bool:
    """Whether ``pred()`` became truthy within ``timeout`` seconds.

    Calls ``pred`` every ``interval`` seconds (monotonic clock) until it is truthy or the
    deadline passes, then once more, so a condition met just at the deadline still counts.
    Never raises on a timeout: callers ``assert wait(...)`` with their own message. Use a
    longer ``interval`` when ``pred`` is costly (an HTTP request to a gateway under test).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
