"""Time-ordered unique ids for events and alerts (ULID layout, no dependency).

An id is 128 bits: a 48-bit Unix time in milliseconds followed by 80 random bits,
written as 26 characters of Crockford base32 (``0-9A-Z`` without ``I L O U``). Ids sort
as strings in creation order; within one generator they are strictly increasing even
inside one millisecond or when the wall clock steps back (the random part is then
incremented instead of redrawn, as the ULID "monotonic" variant does). Across processes
and gateways they are unique with overwhelming probability (80 random bits per ms).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

__all__ = ["EventIdGenerator", "event_id_time_ms", "is_event_id", "new_event_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_RAND_BITS = 80
_RAND_MAX = (1 << _RAND_BITS) - 1
_TIME_MAX = (1 << 48) - 1


def _encode(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


class EventIdGenerator:
    """Thread-safe, strictly increasing ULID-style ids.

    Args:
        clock_ms: wall clock in integer milliseconds (default ``time.time_ns() // 1e6``).
        random_bytes: returns ``n`` random bytes (default ``os.urandom``).
    """

    def __init__(
        self,
        *,
        clock_ms: Callable[[], int] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def __call__(self) -> str:
        now = self._clock_ms()
        with self._lock:
            if now > self._last_ms:
                ms, rand = now, int.from_bytes(self._random_bytes(10), "big")
            else:  # same millisecond or clock went back: stay monotonic
                ms, rand = self._last_ms, self._last_rand + 1
                if rand > _RAND_MAX:
                    ms, rand = ms + 1, 0
            self._last_ms, self._last_rand = ms, rand
        if ms > _TIME_MAX:
            raise ValueError(f"time {ms} ms does not fit in 48 bits")
        return _encode((ms << _RAND_BITS) | rand)


_default_lock = threading.Lock()
_default: EventIdGenerator | None = None


def new_event_id() -> str:
    """A new id from the process-wide generator (created on first use)."""
    global _default
    gen = _default
    if gen is None:
        with _default_lock:
            if _default is None:
                _default = EventIdGenerator()
            gen = _default
    return gen()


def is_event_id(text: str) -> bool:
    """True if ``text`` is 26 Crockford base32 characters starting with 0-7."""
    return len(text) == 26 and text[0] in "01234567" and all(c in _DECODE for c in text)


def event_id_time_ms(event_id: str) -> int:
    """The millisecond timestamp an id was made at; ``ValueError`` if it is not an id."""
    if not is_event_id(event_id):
        raise ValueError(f"not an event id: {event_id!r}")
    value = 0
    for c in event_id:
        value = (value << 5) | _DECODE[c]
    return value >> _RAND_BITS
