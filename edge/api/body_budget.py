"""How many request-body bytes the API's requests in flight may hold, in total and per
AppKey.

The Sign covers the body, so a request can only be authenticated after its body is read;
the AppKey and service code travel in clear. Without a bound, anyone who has seen one
request could open many connections declaring large bodies, send all but the last byte
and hold each for ``api.deadline_s`` -- the server buffers them all. A
:class:`BodyBudget` is reserved before a body is read (from ``Content-Length`` up front
when present, else chunk by chunk) and released when the request is answered, so the
bytes buffered for bodies -- and what validation derives from them (the JSON text and
decoded images: about 2x to 3x the body at the peak) -- stay bounded. Over the budget
the request is answered ``5000`` "gateway busy" without reading the body.

One AppKey may hold at most half the budget (but at least the largest body limit, so a
request of that size can always be read when the gateway is otherwise idle) and at most
``per_key_reads`` bodies at once, so one key -- whose holder need not know its secret --
cannot take the whole budget from the others.

Thread-safety: every method may be called from any thread (one lock); in the gateway all
calls come from the event loop.
"""

from __future__ import annotations

import threading

from edge.closing import Closing

__all__ = ["BodyBudget", "BodyLease", "BudgetFull"]

_MIB = 1024 * 1024


class BudgetFull(Exception):
    """The reservation would go over a cap; ``details`` says which (for the answer)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


def _mib(n: int) -> str:
    return f"{n / _MIB:.1f} MiB" if n >= _MIB else f"{n} bytes"


class BodyBudget:
    """Bytes of request bodies held by requests in flight.

    Args:
        total_bytes: the budget for all requests together (>= 1).
        per_key_bytes: the most one key may hold (1..total_bytes).
        per_key_reads: the most leases one key may hold at once (>= 1).
    """

    def __init__(self, *, total_bytes: int, per_key_bytes: int, per_key_reads: int) -> None:
        if total_bytes < 1 or not 1 <= per_key_bytes <= total_bytes or per_key_reads < 1:
            raise ValueError(
                f"need total_bytes >= 1, 1 <= per_key_bytes <= total_bytes, per_key_reads "
                f">= 1; got {total_bytes}, {per_key_bytes}, {per_key_reads}"
            )
        self.total_bytes = total_bytes
        self.per_key_bytes = per_key_bytes
        self.per_key_reads = per_key_reads
        self._lock = threading.Lock()
        self._held = 0
        self._by_key: dict[str, list[int]] = {}  # key -> [leases, bytes]

    @property
    def held(self) -> int:
        """Bytes reserved now (all keys)."""
        return self._held

    @property
    def leases(self) -> int:
        """Leases open now (all keys)."""
        with self._lock:
            return sum(v[0] for v in self._by_key.values())

    def lease(self, key: str | None) -> BodyLease:
        """Open a lease (no bytes yet) for one request of ``key`` (``None``: requests
        without an AppKey, which share one key).

        Raises:
            BudgetFull: ``key`` already holds ``per_key_reads`` leases.
        """
        k = key or ""
        with self._lock:
            entry = self._by_key.setdefault(k, [0, 0])
            if entry[0] >= self.per_key_reads:
                raise BudgetFull(
                    f"this AppKey already has {entry[0]} request bodies in progress "
                    f"(limit {self.per_key_reads})"
                )
            entry[0] += 1
        return BodyLease(self, k)

    def _reserve(self, key: str, n: int) -> None:
        with self._lock:
            entry = self._by_key[key]
            if entry[1] + n > self.per_key_bytes:
                raise BudgetFull(
                    f"this AppKey's request bodies in progress hold {_mib(entry[1])} of its "
                    f"{_mib(self.per_key_bytes)} share; {_mib(n)} more do not fit"
                )
            if self._held + n > self.total_bytes:
                raise BudgetFull(
                    f"request bodies in progress hold {_mib(self._held)} of "
                    f"{_mib(self.total_bytes)}; {_mib(n)} more do not fit"
                )
            entry[1] += n
            self._held += n

    def _release(self, key: str, n: int) -> None:
        with self._lock:
            entry = self._by_key[key]
            entry[0] -= 1
            entry[1] -= n
            self._held -= n
            if entry[0] == 0:
                del self._by_key[key]


class BodyLease(Closing):
    """One request's share of a :class:`BodyBudget`; :meth:`release` is idempotent.

    Use as a context manager or call :meth:`release` in a ``finally``.
    """

    def __init__(self, budget: BodyBudget, key: str) -> None:
        self._budget = budget
        self._key = key
        self.reserved = 0
        """Bytes this lease holds."""
        self._released = False

    def ensure(self, total: int) -> None:
        """Hold at least ``total`` bytes (reserves the difference; no-op when held).

        Raises:
            BudgetFull: the key's share or the whole budget has no room; what the lease
                held before stays held.
            RuntimeError: the lease was released.
        """
        if self._released:
            raise RuntimeError("lease already released")
        more = total - self.reserved
        if more > 0:
            self._budget._reserve(self._key, more)
            self.reserved = total

    def release(self) -> None:
        """Give back the bytes and the lease (idempotent)."""
        if not self._released:
            self._released = True
            self._budget._release(self._key, self.reserved)

    close = release  # the ``with`` protocol of :class:`~edge.closing.Closing`
