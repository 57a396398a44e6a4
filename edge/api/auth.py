"""Request signing as the cloud contract defines it, the Timestamp window and replay cache.

``Sign = lowercase hex MD5(AppKey + AppSecret + Timestamp + Path + Body)`` where Path is
the URL path as received (no scheme, host or query) and Body the exact body bytes.

The checks, in order, each failing with a :class:`AuthError` whose ``check`` names it
(the details never contain the secret or the expected sign):

1. ``missing_header``: ``AppKey``, ``Timestamp`` or ``Sign`` absent or empty.
2. ``malformed``: Timestamp is not 13 digits, Sign is not 32 hex characters.
3. ``timestamp``: Timestamp more than ``skew_s`` seconds away from the gateway clock.
4. ``unknown_app`` / ``disabled_app`` / ``not_owner`` (decided by the caller, which owns
   the store: see :mod:`edge.api.app`).
5. ``bad_sign``: the MD5 differs (constant-time comparison).
6. ``replayed``: the same (AppKey, Timestamp, Sign) was accepted before inside the window
   (a request refused without being served is forgotten again: :meth:`ReplayCache.discard`).

The sign is computed incrementally while the body streams in (:class:`SignHasher`), so
verifying costs no second pass over a 50 MB body.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from edge.errors import EdgeError

__all__ = [
    "AuthCheck",
    "AuthError",
    "Credentials",
    "ReplayCache",
    "SignHasher",
    "compute_sign",
    "parse_credentials",
]

AuthCheck = Literal[
    "missing_header",
    "malformed",
    "timestamp",
    "unknown_app",
    "disabled_app",
    "not_owner",
    "bad_sign",
    "replayed",
    "replay_cache_full",
]

_TS_RE = re.compile(r"^[0-9]{13}$")
_SIGN_RE = re.compile(r"^[0-9a-fA-F]{32}$")


class AuthError(EdgeError):
    """Authentication failed (extension code 4010); ``check`` names the failed check."""

    code = 4010

    def __init__(self, check: AuthCheck, details: str) -> None:
        super().__init__(details)
        self.check: AuthCheck = check


def compute_sign(app_key: str, app_secret: str, timestamp: str, path: str, body: bytes) -> str:
    """The contract's Sign: lowercase hex MD5 of AppKey+AppSecret+Timestamp+Path+Body."""
    h = hashlib.md5(usedforsecurity=False)
    h.update((app_key + app_secret + timestamp + path).encode("utf-8"))
    h.update(body)
    return h.hexdigest()


@dataclass(frozen=True)
class Credentials:
    """The three auth headers, syntax-checked. ``sign`` is lowercased; ``timestamp_ms`` int."""

    app_key: str
    timestamp: str
    sign: str

    @property
    def timestamp_ms(self) -> int:
        return int(self.timestamp)


def parse_credentials(headers: Mapping[str, str]) -> Credentials:
    """Read ``AppKey``/``Timestamp``/``Sign`` (case-insensitive mapping) and check syntax."""
    values = {}
    for name in ("AppKey", "Timestamp", "Sign"):
        v = headers.get(name)
        if v is None or not v.strip():
            raise AuthError("missing_header", f"missing header {name}")
        values[name] = v.strip()
    if len(values["AppKey"]) > 128:
        raise AuthError("malformed", "header AppKey is longer than 128 characters")
    if not _TS_RE.match(values["Timestamp"]):
        raise AuthError("malformed", "header Timestamp must be 13 digits (Unix time in ms)")
    if not _SIGN_RE.match(values["Sign"]):
        raise AuthError("malformed", "header Sign must be 32 hexadecimal characters (MD5)")
    return Credentials(values["AppKey"], values["Timestamp"], values["Sign"].lower())


def check_timestamp(creds: Credentials, *, skew_s: float, now_ms: int | None = None) -> None:
    """Raise ``timestamp`` when the Timestamp is more than ``skew_s`` from the clock."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    delta_s = (creds.timestamp_ms - now) / 1000.0
    if abs(delta_s) > skew_s:
        when = "ahead of" if delta_s > 0 else "behind"
        raise AuthError(
            "timestamp",
            f"Timestamp is {abs(delta_s):.0f} s {when} the gateway clock "
            f"(allowed skew {skew_s:.0f} s)",
        )


class SignHasher:
    """Incremental Sign over one or more candidate paths, fed with the body as it streams.

    Args:
        app_key, app_secret, timestamp: the request's credentials and the app's secret.
        paths: the signed paths accepted (the received path, plus optionally the
            provider sample's fence variant).
    """

    def __init__(
        self, *, app_key: str, app_secret: str, timestamp: str, paths: Iterable[str]
    ) -> None:
        self._hashers = []
        for path in dict.fromkeys(paths):
            h = hashlib.md5(usedforsecurity=False)
            h.update((app_key + app_secret + timestamp + path).encode("utf-8"))
            self._hashers.append(h)
        if not self._hashers:
            raise ValueError("at least one path is needed")

    def update(self, chunk: bytes) -> None:
        for h in self._hashers:
            h.update(chunk)

    def verify(self, sign: str) -> None:
        """Raise ``bad_sign`` unless ``sign`` (lowercase hex) matches one candidate.

        Every candidate is compared (constant time each) so timing does not say which.
        """
        given = sign.lower().encode("ascii")
        ok = False
        for h in self._hashers:
            ok |= hmac.compare_digest(h.hexdigest().encode("ascii"), given)
        if not ok:
            raise AuthError(
                "bad_sign",
                "Sign does not match MD5(AppKey + AppSecret + Timestamp + Path + Body) "
                "for the path and body received",
            )


class ReplayCache:
    """Remembers accepted (AppKey, Timestamp, Sign) while their Timestamp could pass the window.

    An entry for Timestamp ``t`` accepted at wall-clock time ``w`` is held until both

    - the wall clock has passed ``t + skew`` (before that the Timestamp check could accept a
      replay; after a backward clock step, e.g. NTP correcting a fast clock by 2 h, this
      is 2 h later: the entries of the last window before the step stay that long, since a
      replay sent when the wall clock comes back to ``t`` would pass the Timestamp check),
      and
    - ``t + skew - w`` has passed on the monotonic clock (a forward step followed by a
      correction back, e.g. a bad NTP answer, would otherwise forget an entry whose
      Timestamp is back inside the window a moment later).

    So memory is bounded by the accepted request rate times the window, plus at most one
    window's worth of entries per backward step. ``max_entries`` caps it further: when
    full, the request is refused with ``replay_cache_full`` rather than forgetting entries
    that still protect (fail closed). Thread-safe.
    """

    def __init__(self, *, window_s: float, max_entries: int = 1_000_000) -> None:
        self._window_ms = int(window_s * 1000)
        self._max = max_entries
        # key -> the sequence number of its live heap entry (an entry left behind by
        # discard() and a later re-add must not forget the new one when it expires)
        self._seen: dict[tuple[str, str, str], int] = {}
        # (wall-clock deadline ms, monotonic deadline ms, seq, key), ordered by wall deadline
        self._heap: list[tuple[int, int, int, tuple[str, str, str]]] = []
        self._seq = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now_ms: int, mono_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] < now_ms:
            if heap[0][1] >= mono_ms:
                # Not yet held for its window in real time (the wall clock stepped forward):
                # keep it, and the entries behind it, a little longer (at most 2 windows).
                break
            _, _, seq, key = heapq.heappop(heap)
            if self._seen.get(key) == seq:
                del self._seen[key]

    def check_and_add(
        self, creds: Credentials, *, now_ms: int | None = None, mono_ms: int | None = None
    ) -> None:
        """Raise ``replayed`` if seen inside the window; otherwise remember it.

        ``now_ms``: the wall clock (Unix ms), ``mono_ms``: a monotonic clock (ms); both
        default to the system's (tests inject theirs).
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        mono = time.monotonic_ns() // 1_000_000 if mono_ms is None else mono_ms
        key = (creds.app_key, creds.timestamp, creds.sign.lower())
        with self._lock:
            self._expire(now, mono)
            if key in self._seen:
                raise AuthError(
                    "replayed",
                    "request replayed: this AppKey, Timestamp and Sign were already accepted "
                    "(send a fresh Timestamp)",
                )
            if len(self._seen) >= self._max:
                raise AuthError(
                    "replay_cache_full",
                    "too many requests inside the replay window; retry shortly",
                )
            self._seq += 1
            self._seen[key] = self._seq
            deadline = creds.timestamp_ms + self._window_ms
            held_ms = min(max(deadline - now, 0), 2 * self._window_ms)
            heapq.heappush(self._heap, (deadline, mono + held_ms, self._seq, key))

    def discard(self, creds: Credentials) -> bool:
        """Forget an accepted (AppKey, Timestamp, Sign) so the identical request may be sent
        again: for a request the gateway refused without serving it (busy, deadline, a
        failure before the model ran). Returns whether it was remembered. Thread-safe; the
        heap entry stays until it expires and then forgets nothing newer.
        """
        key = (creds.app_key, creds.timestamp, creds.sign.lower())
        with self._lock:
            return self._seen.pop(key, None) is not None
