"""A misbehaving contract endpoint of the tests' own, on a free loopback port.

It counts and records every request (path, headers, body, whether the Sign is right for
the test secret) and answers each one with the next scripted :class:`Action`, or the
default action once the script is used up::

    with FaultServer(secret="s") as srv:
        srv.script(Action.code(5000), Action.code(5000), Action.hat_ok())
        ... point the fallback at srv.base_url ...
        assert srv.count == 3

Actions: a contract success (hard-hat/workwear items or fence locations), a contract
failure code (``5000``, ``4010``, ...), a delay before any of them, a dropped connection
(the request is read, then the socket is closed without an answer), and a slow drip
(headers, then one body byte every ``interval`` seconds, so per-read timeouts never
fire), an endless chunked body (one byte every ``interval`` seconds, forever) and a
flood (``size`` bytes of chunked body as fast as the socket takes them).
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.api.auth import compute_sign
from edge.closing import Closing


@dataclass(frozen=True)
class Action:
    """What the server does with one request."""

    kind: str  # "json" | "drop" | "drip" | "endless" | "flood"
    body: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0
    interval_s: float = 0.0
    size: int = 0

    @staticmethod
    def hat_ok(items: Sequence[dict[str, Any]] = (), *, delay_s: float = 0.0) -> Action:
        it = list(items)
        return Action(
            "json",
            {"code": 0, "message": "success", "result": it, "data": it},
            delay_s=delay_s,
        )

    @staticmethod
    def fence_ok(locations: Sequence[dict[str, int]] = (), *, delay_s: float = 0.0) -> Action:
        locs = list(locations)
        return Action(
            "json",
            {
                "code": 0,
                "message": {"success": 1, "fail": 0},
                "result": [{"target_num": len(locs), "location": locs}],
            },
            delay_s=delay_s,
        )

    @staticmethod
    def code(code: int, *, delay_s: float = 0.0) -> Action:
        return Action(
            "json",
            {"code": code, "message": "error", "details": f"fault server answers {code}"},
            delay_s=delay_s,
        )

    @staticmethod
    def drop(*, delay_s: float = 0.0) -> Action:
        return Action("drop", delay_s=delay_s)

    @staticmethod
    def drip(*, interval_s: float, delay_s: float = 0.0) -> Action:
        """A hard-hat success padded to ~250 bytes, sent one byte per ``interval_s``."""
        body = {"code": 0, "message": "success", "result": [], "data": [], "pad": "x" * 200}
        return Action("drip", body, delay_s=delay_s, interval_s=interval_s)

    @staticmethod
    def endless(*, interval_s: float) -> Action:
        """A chunked body of one space every ``interval_s``, never ending (until close)."""
        return Action("endless", interval_s=interval_s)

    @staticmethod
    def flood(*, size: int) -> Action:
        """``size`` bytes of chunked body (1 MiB chunks of ``1``), as fast as possible."""
        return Action("flood", size=size)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    sign_ok: bool


class FaultServer(Closing):
    """A threaded HTTP server on ``127.0.0.1:<free port>``; a context manager."""

    def __init__(
        self,
        *,
        app_key: str = "key",
        secret: str = "secret",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: a server context (certificate loaded) to serve https instead."""
        self.app_key = app_key
        self.secret = secret
        self._lock = threading.Lock()
        self._script: list[Action] = []
        self.default = Action.hat_ok()
        self.received: list[Received] = []
        self.flooded = 0
        """Body bytes written by ``flood`` actions (what the client let through)."""
        self._stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                action = outer._take(self.path, dict(self.headers.items()), body)
                if action.delay_s and outer._stop.wait(action.delay_s):
                    action = Action.drop()  # closing down: hang up, no answer
                if action.kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action.kind in ("endless", "flood"):
                    self._chunked(action)
                    return
                raw = json.dumps(action.body).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if action.kind == "drip":
                    self.close_connection = True
                    for i in range(len(raw)):
                        if outer._stop.wait(action.interval_s):
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        try:
                            self.wfile.write(raw[i : i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                self.wfile.write(raw)

            def _chunked(self, action: Action) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if action.kind == "endless":
                        while not outer._stop.wait(action.interval_s):
                            self.wfile.write(b"1\r\n \r\n")
                            self.wfile.flush()
                        return
                    chunk = b"1" * (1 << 20)
                    left = action.size
                    while left > 0 and not outer._stop.is_set():
                        part = chunk[: min(left, len(chunk))]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        left -= len(part)
                        outer.flooded += len(part)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:  # the client hung up: what the tests expect
                    return

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- script and record -----------------------------------------------------------------

    def script(self, *actions: Action) -> None:
        """Answer the next requests with ``actions`` in order (then :attr:`default`)."""
        with self._lock:
            self._script = list(actions)

    def _take(self, path: str, headers: dict[str, str], body: bytes) -> Action:
        lower = {k.lower(): v for k, v in headers.items()}
        want = compute_sign(self.app_key, self.secret, lower.get("timestamp", ""), path, body)
        ok = lower.get("appkey") == self.app_key and lower.get("sign") == want
        with self._lock:
            self.received.append(Received(time.monotonic(), path, lower, body, ok))
            return self._script.pop(0) if self._script else self.default

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.received)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
