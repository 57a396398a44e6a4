"""Console sessions: admin login, the session cookie, CSRF tokens and login throttling.

The console is for one administrator role. Logging in means presenting the gateway's
admin token (``api.admin_token`` or ``$SAFETY_EDGE_ADMIN_TOKEN``); without one the
console is off. A successful login creates a server-side session (in memory: sessions
end when the process restarts, which on a gateway is rare and harmless) identified by a
random 256-bit id in the ``se_session`` cookie:

- ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (never sent on requests
  started by another site), ``Path=/console``, ``Secure`` when the request came over
  HTTPS;
- idle timeout :data:`IDLE_TIMEOUT_S`, absolute lifetime :data:`MAX_AGE_S`;
- logout deletes the session on the server, so a copied cookie stops working.

CSRF: every session has a random token. Every state-changing request (all POSTs) must
carry it, in the ``csrf`` form field or the ``X-CSRF-Token`` header, and it is compared
in constant time; requests whose ``Origin`` names another host are refused as well. The
login form itself is protected the same way with a short-lived pre-session token
(double submit: cookie ``se_login`` plus the form field).

Login throttling: at most :data:`LOGIN_FAILURES` failed logins per client address per
:data:`LOGIN_WINDOW_S`; beyond that the address is refused (HTTP 429) until the window
passes, so the token cannot be guessed online.

Thread-safety: :class:`SessionStore` and :class:`LoginThrottle` take a lock; handlers
may run on the event loop or in threads.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "IDLE_TIMEOUT_S",
    "LOGIN_COOKIE",
    "LOGIN_FAILURES",
    "LOGIN_WINDOW_S",
    "MAX_AGE_S",
    "SESSION_COOKIE",
    "LoginThrottle",
    "Session",
    "SessionStore",
    "check_token",
    "same_token",
]

SESSION_COOKIE = "se_session"
LOGIN_COOKIE = "se_login"
IDLE_TIMEOUT_S = 2 * 3600.0
"""A session unused this long is gone."""
MAX_AGE_S = 12 * 3600.0
"""A session ends this long after login, used or not."""
MAX_SESSIONS = 64
"""Most live sessions; the least recently used one goes when a new login needs room."""
LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 60.0


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of two tokens (``False`` for a missing one)."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_token(given: str | None, admin_token: str | None) -> bool:
    """``True`` when ``given`` is the admin token (``False`` when the console is off)."""
    return admin_token is not None and same_token(given, admin_token)


@dataclass
class Session:
    """A logged-in browser. ``csrf`` goes into every form the session is shown."""

    sid: str
    csrf: str
    created: float
    last_seen: float
    client: str = ""
    flash: list[tuple[str, str]] = field(default_factory=list)
    """Messages (kind, text) shown once on the next page."""


@dataclass
class SessionStore:
    """Live sessions in memory, keyed by the cookie value.

    ``clock`` is ``time.monotonic`` (tests may pass another).
    """

    clock: Callable[[], float] = time.monotonic
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_age_s: float = MAX_AGE_S
    max_sessions: int = MAX_SESSIONS
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, *, client: str = "") -> Session:
        """A new session with fresh random id and CSRF token."""
        now = self.clock()
        s = Session(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
            client=client,
        )
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda x: x.last_seen)
                del self._sessions[oldest.sid]
            self._sessions[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session for a cookie value (its idle timer restarts), else ``None``."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if now - s.last_seen > self.idle_timeout_s or now - s.created > self.max_age_s:
                del self._sessions[sid]
                return None
            s.last_seen = now
            return s

    def delete(self, sid: str | None) -> None:
        """End a session (logout); unknown ids are ignored."""
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expire(self, now: float) -> None:
        dead = [
            k
            for k, s in self._sessions.items()
            if now - s.last_seen > self.idle_timeout_s or now - s.created > self.max_age_s
        ]
        for k in dead:
            del self._sessions[k]


@dataclass
class LoginThrottle:
    """Failed logins per client address in a sliding window (see the module docstring)."""

    failures: int = LOGIN_FAILURES
    window_s: float = LOGIN_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0.0: it may try now)."""
        now = self.clock()
        with self._lock:
            q = self._seen.get(client)
            if q is None:
                return 0.0
            while q and now - q[0] > self.window_s:
                q.popleft()
            if not q:
                del self._seen[client]
                return 0.0
            if len(q) >= self.failures:
                return max(0.0, self.window_s - (now - q[0]))
            return 0.0

    def failed(self, client: str) -> None:
        """Count one failed login."""
        now = self.clock()
        with self._lock:
            if len(self._seen) > 10_000:  # bounded memory under a spray of addresses
                self._seen.clear()
            self._seen.setdefault(client, deque(maxlen=self.failures)).append(now)

    def succeeded(self, client: str) -> None:
        """Forget the failures of ``client``."""
        with self._lock:
            self._seen.pop(client, None)
