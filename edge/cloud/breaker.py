"""A circuit breaker for calls to the cloud: stop calling an endpoint that keeps failing.

States (:attr:`CircuitBreaker.state`)::

    closed  --K consecutive failures-->  open  --cooldown_s elapsed-->  half_open
    half_open --probe succeeds--> closed          half_open --probe fails--> open

- ``closed``: every call may go. A success resets the failure count.
- ``open``: no call goes; :meth:`CircuitBreaker.acquire` answers ``False`` at once.
- ``half_open``: the cool-down has passed; exactly one caller gets the probe, the others
  are refused until the probe's outcome is recorded.

What counts as a failure is the caller's decision (:mod:`edge.cloud.fallback` counts no
answer, 5xxx answers and the endpoint-level 4000/4010/4029 answers; see there).

Thread-safety: every method may be called from any thread (one lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker", "Ticket"]

BreakerState = Literal["closed", "open", "half_open"]
Ticket = Literal["call", "probe"]
"""What :meth:`CircuitBreaker.acquire` hands out: a normal call or the half-open probe."""


class CircuitBreaker:
    """Counts consecutive failures and opens after ``failure_threshold`` of them.

    Keyword-only. Holds no resources.

    Args:
        failure_threshold: consecutive failures that open the breaker (K >= 1).
        cooldown_s: seconds the breaker stays open before a half-open probe.
        clock: monotonic seconds (default :func:`time.monotonic`; tests pass their own).

    Use::

        ticket = breaker.acquire()
        if ticket is None:             # open, or another caller holds the probe
            ...                        # answer locally: breaker_open
        try:
            ok = call()
        except BaseException:
            breaker.release(ticket)    # no verdict (e.g. nothing was sent)
            raise
        breaker.record(ticket, success=ok)
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self._threshold = failure_threshold
        self._cooldown = float(cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_out = False
        self._opened_total = 0

    # -- state --------------------------------------------------------------------------

    def _state_locked(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (open and the cool-down has passed)."""
        with self._lock:
            return self._state_locked()

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def opened_total(self) -> int:
        """How many times the breaker went from closed or half-open to open."""
        with self._lock:
            return self._opened_total

    def retry_in_s(self) -> float:
        """Seconds until the half-open probe is allowed (0 when not open)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self._cooldown - self._clock())

    # -- the protocol -------------------------------------------------------------------

    def acquire(self) -> Ticket | None:
        """May a call go now? ``"call"`` in ``closed``; in ``half_open`` ``"probe"`` for the
        one caller that takes it (it must then :meth:`record` or :meth:`release`); else
        ``None``."""
        with self._lock:
            st = self._state_locked()
            if st == "closed":
                return "call"
            if st == "half_open" and not self._probe_out:
                self._probe_out = True
                return "probe"
            return None

    def record(self, ticket: Ticket, *, success: bool) -> None:
        """The outcome of an acquired call.

        A success closes the breaker and resets the count (whoever reports it: the
        endpoint answered). A failure counts; at the threshold a closed breaker opens;
        a failed probe re-opens it at once (a new cool-down). A failure of a plain call
        that started before the breaker opened does not restart the cool-down.
        """
        with self._lock:
            if ticket == "probe":
                self._probe_out = False
            if success:
                self._failures = 0
                self._opened_at = None
                return
            self._failures += 1
            if ticket == "probe" or (self._opened_at is None and self._failures >= self._threshold):
                self._opened_at = self._clock()
                self._opened_total += 1

    def release(self, ticket: Ticket) -> None:
        """An acquired call ended without a verdict (nothing was sent): give the probe back."""
        if ticket == "probe":
            with self._lock:
                self._probe_out = False
