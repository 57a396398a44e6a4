"""The HTTP/1.1 protocol the gateway's uvicorn serves with: uvicorn's h11 protocol plus
a request-header timeout and caps on open connections.

Gateways sit on an untrusted factory LAN with no reverse proxy in front. uvicorn 0.54's
h11 protocol has no timeout for reading a request's headers (its keep-alive timer is
cancelled by the first byte received, and is not armed at all on a new connection), and
no cap on open connections (``limit_concurrency`` answers 503 only once a request's
headers are complete). A client that opens connections and sends nothing, or sends
headers a byte at a time, could hold sockets until the process runs out of file
descriptors. :class:`GuardedH11Protocol` adds:

- **header timeout** (``api.header_timeout_s``): a timer armed when a connection opens
  and again when a response is complete, cancelled when the next request's headers are
  parsed. It is *not* reset by data, so trickling bytes does not extend it. On expiry the
  connection is closed without an answer. The body of a request, once its headers are
  in, is bounded by ``api.deadline_s`` in :mod:`edge.api.app`; a body still being sent
  after the answer (an early 4xxx/5000) is discarded and falls under this timer again.
- **connection caps** (``api.max_connections`` in total, ``api.max_connections_per_client``
  per client IP address): a connection over either cap is closed as soon as it is
  accepted (no answer: no request has been read). Refusals are logged through
  :class:`~edge.lograte.RateLimitedLog`: the first at once, then at most one line a
  minute with their count.

Headers themselves are bounded by h11's incomplete-event limit (16 KiB), so a pending
connection holds at most that much memory.

:func:`guarded_protocol` builds the subclass for one config; pass it as uvicorn's
``http=`` (both ``safety-edge serve`` and ``safety-edge run`` do). This pins the h11
implementation: ``http="auto"`` would pick httptools where it is installed, and these
guards would not apply.

Thread-safety: one protocol instance per connection, used only on the server's event
loop. The refusal log is per built class (per server).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from edge.config import ApiConfig
from edge.lograte import RateLimitedLog

__all__ = ["GuardedH11Protocol", "guarded_protocol"]

log = logging.getLogger("edge.api.http")

_REFUSAL_LOG_EVERY_S = 60.0


def _refusal_log() -> RateLimitedLog:
    return RateLimitedLog(log, interval_s=_REFUSAL_LOG_EVERY_S)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's :class:`H11Protocol` with a header timeout and connection caps.

    Use :func:`guarded_protocol`, which sets the class attributes for one config.
    """

    header_timeout_s: ClassVar[float] = 10.0
    """Seconds from connection open / end of the previous response to complete headers."""
    max_connections: ClassVar[int] = 256
    """Open connections in total; one more is closed when accepted."""
    max_connections_per_client: ClassVar[int] = 64
    """Open connections from one client IP address; one more is closed when accepted."""
    _refusals: ClassVar[RateLimitedLog] = _refusal_log()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timer: asyncio.TimerHandle | None = None

    # -- connection caps ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        why = self._over_cap()
        if why is not None:
            self._refuse(why)
            return
        self._arm_header_timer()

    def _over_cap(self) -> str | None:
        if len(self.connections) > self.max_connections:
            return f"{self.max_connections} connections open"
        host = self.client[0] if self.client else None
        if host is None:
            return None
        same = sum(1 for c in self.connections if _client_host(c) == host)
        if same > self.max_connections_per_client:
            return f"{self.max_connections_per_client} connections open from {host}"
        return None

    def _refuse(self, why: str) -> None:
        self._refusals.hit("refused a connection (cap reached: %s)", why)
        self.transport.close()

    # -- header timeout -----------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.debug(
                "closing a connection: no complete request headers in %g s", self.header_timeout_s
            )
            self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers were parsed
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        # Armed before the base class runs: it may parse a pipelined request at once,
        # whose headers then cancel the timer again (handle_events above).
        if not self.transport.is_closing():
            self._arm_header_timer()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def _client_host(protocol: object) -> str | None:
    client = getattr(protocol, "client", None)
    return str(client[0]) if client else None


def guarded_protocol(api: ApiConfig) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with ``api``'s ``header_timeout_s``,
    ``max_connections`` and ``max_connections_per_client`` (pass as uvicorn's ``http=``)."""
    attrs: dict[str, Any] = {
        "header_timeout_s": float(api.header_timeout_s),
        "max_connections": int(api.max_connections),
        "max_connections_per_client": int(api.max_connections_per_client),
        "_refusals": _refusal_log(),
    }
    return type("GatewayH11Protocol", (GuardedH11Protocol,), attrs)
