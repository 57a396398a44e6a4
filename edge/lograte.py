"""Rate-limited logging of a recurring condition (a refusal that repeats for days).

:class:`RateLimitedLog` logs the first occurrence at once, then at most one line per
``interval_s``: the latest occurrence's message with how many occurrences the line stands
for. Every occurrence is counted in exactly one line (a line without a count stands for
one), so the counts in the log add up to the number of occurrences. Nothing is logged
without a new occurrence unless :meth:`RateLimitedLog.flush` is called: call it now and
then (a loop tick) so the last suppressed ones are reported within about ``interval_s``,
and with ``force=True`` at the end.

Thread-safe; the logger is called outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """One line for the first occurrence, then at most one summary line per ``interval_s``.

    Args:
        logger: where the lines go.
        interval_s: least time between two lines (> 0), seconds of ``clock``.
        level: the level of every line (default ``WARNING``).
        clock: seconds, monotonic (default :func:`time.monotonic`).

    A summary line is the latest message followed by
    ``" [N like this in the last T s, this one included]"``, where ``N`` counts the
    occurrences since the previous line and ``T`` is the time since it.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = 60.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.logger = logger
        self.interval_s = interval_s
        self.level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._last_line: float | None = None  # clock() at the last line
        self._pending = 0  # occurrences since the last line
        self._latest: tuple[str, tuple[object, ...]] = ("", ())

    @property
    def pending(self) -> int:
        """Occurrences not yet in any line."""
        return self._pending

    def hit(self, msg: str, *args: object) -> bool:
        """Note one occurrence (``msg % args``, lazy as in :mod:`logging`); logs it now if
        it is the first or ``interval_s`` has passed since the last line. Returns whether
        a line was logged."""
        with self._lock:
            now = self._clock()
            self._pending += 1
            self._latest = (msg, args)
            last = self._last_line
            if last is not None and now - last < self.interval_s:
                return False
            n, self._pending, self._last_line = self._pending, 0, now
        self._emit(msg, args, n, 0.0 if last is None else now - last)
        return True

    def flush(self, *, force: bool = False) -> bool:
        """Log the occurrences not yet in a line, if any, once ``interval_s`` has passed
        since the last line (at once with ``force``). Returns whether a line was logged."""
        with self._lock:
            if not self._pending:
                return False
            now = self._clock()
            last = self._last_line
            if not force and last is not None and now - last < self.interval_s:
                return False
            n, self._pending, self._last_line = self._pending, 0, now
            msg, args = self._latest
        self._emit(msg, args, n, 0.0 if last is None else now - last)
        return True

    def _emit(self, msg: str, args: tuple[object, ...], n: int, since_s: float) -> None:
        # stacklevel: the record names the caller of hit()/flush(), not this module
        if n == 1:
            self.logger.log(self.level, msg, *args, stacklevel=3)
        else:
            self.logger.log(
                self.level,
                msg + " [%d like this in the last %.0f s, this one included]",
                *args,
                n,
                since_s,
                stacklevel=3,
            )
