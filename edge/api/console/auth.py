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

Login throttling: at most :data:`LOGIN_FAILURES` wrong admin tokens per client per
:data:`LOGIN_WINDOW_S`, counted together for the login form and the ``Authorization:
Bearer`` token of ``/console/api`` (one :class:`LoginThrottle` serves both); beyond that
the client is refused (HTTP 429 with ``Retry-After``) until the window passes, so the
token cannot be guessed online. A client is its IPv4 address, or the /64 prefix of its
IPv6 address (:func:`throttle_key`): a host picks any address in its /64 at will
(SLAAC, privacy addresses), so counting per IPv6 address would give it 2**64 budgets.
The price: hosts sharing a /64 share a budget, so one of them can hold off the others'
token checks for up to a window (logged-in sessions are not affected). The table holds
at most :data:`MAX_THROTTLED_CLIENTS` clients; when full, the one whose last failure is
oldest goes, so a spray of addresses cannot reset the clients being throttled now.

Token strength (:func:`admin_token_problem`): the documented placeholder
(:data:`PLACEHOLDER_ADMIN_TOKENS`) is refused (the console stays off, as with no token;
the gateway itself runs), a token shorter than :data:`MIN_ADMIN_TOKEN_CHARS` is
accepted with a warning in ``safety-edge config check``, the log and
``/console/api/status``.

Thread-safety: :class:`SessionStore` and :class:`LoginThrottle` take a lock; handlers
may run on the event loop or in threads.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "IDLE_TIMEOUT_S",
    "LOGIN_COOKIE",
    "LOGIN_FAILURES",
    "LOGIN_WINDOW_S",
    "MAX_AGE_S",
    "MAX_THROTTLED_CLIENTS",
    "MIN_ADMIN_TOKEN_CHARS",
    "PLACEHOLDER_ADMIN_TOKENS",
    "SESSION_COOKIE",
    "LoginThrottle",
    "Session",
    "SessionStore",
    "TokenProblem",
    "admin_token_problem",
    "check_token",
    "same_token",
    "throttle_key",
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
MAX_THROTTLED_CLIENTS = 10_000
"""Most clients the throttle remembers; beyond, the least recently failed one goes."""
MIN_ADMIN_TOKEN_CHARS = 16
"""Shorter admin tokens are warned about (``openssl rand -hex 24`` makes 48)."""
PLACEHOLDER_ADMIN_TOKENS = frozenset({"change-me", "changeme", "..."})
"""Tokens shown in examples (compared stripped, case-insensitive): refused."""

TokenProblem = tuple[Literal["placeholder", "weak"], str]


def admin_token_problem(token: str | None) -> TokenProblem | None:
    """What is wrong with an admin token, or ``None`` (also for no token: console off).

    ``("placeholder", why)``: a token from the documentation; the gateway must not accept
    it. ``("weak", why)``: shorter than :data:`MIN_ADMIN_TOKEN_CHARS`; accepted (an
    upgrade must not lock an installed gateway out) but reported.
    """
    if not token:
        return None
    if token.strip().lower() in PLACEHOLDER_ADMIN_TOKENS:
        return (
            "placeholder",
            f"the admin token is the documented placeholder {token.strip()!r}: the console "
            "and /console/api stay off until it is replaced by a random one "
            "(e.g. `openssl rand -hex 24`)",
        )
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        return (
            "weak",
            f"the admin token is only {len(token)} characters long; use at least "
            f"{MIN_ADMIN_TOKEN_CHARS} random ones (e.g. `openssl rand -hex 24`)",
        )
    return None


def throttle_key(client: str) -> str:
    """The throttle's name for a client address: IPv4 as is (also IPv4-mapped IPv6),
    IPv6 as its /64 network (``2001:db8:1:2::/64``), anything else unchanged."""
    try:
        addr = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return client
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


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
    """Failed admin-token checks per client in a sliding window (see the module docstring).

    ``client`` arguments are addresses; they are grouped by :func:`throttle_key`.
    """

    failures: int = LOGIN_FAILURES
    window_s: float = LOGIN_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    max_clients: int = MAX_THROTTLED_CLIENTS
    _seen: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0.0: it may try now)."""
        key = throttle_key(client)
        now = self.clock()
        with self._lock:
            q = self._seen.get(key)
            if q is None:
                return 0.0
            while q and now - q[0] > self.window_s:
                q.popleft()
            if not q:
                del self._seen[key]
                return 0.0
            if len(q) >= self.failures:
                return max(0.0, self.window_s - (now - q[0]))
            return 0.0

    def failed(self, client: str) -> None:
        """Count one failure; when the table is full, forget the least recently failed."""
        key = throttle_key(client)
        now = self.clock()
        with self._lock:
            q = self._seen.get(key)
            if q is None:
                q = self._seen[key] = deque(maxlen=self.failures)
            else:
                self._seen.move_to_end(key)
            q.append(now)
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget the failures of ``client``."""
        with self._lock:
            self._seen.pop(throttle_key(client), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
