"""Overload from the LAN on a real gateway (uvicorn in a subprocess, raw sockets).

- Body budget (``api.max_inflight_body_bytes``, per-key share and
  ``api.max_body_reads_per_key``): connections that declare large bodies and send all but
  the last byte -- with an AppKey and service code only, no secret needed -- are read
  only while they fit; the rest get 5000 "gateway busy" at once, the server's RSS stays
  bounded by the budget, and once they close the budget is free again.
- Header timeout (``api.header_timeout_s``): a connection that sends nothing, partial
  headers or headers a byte at a time is closed; so is one that idles in partial headers
  after an answer. A keep-alive client spacing requests below the timeout is unaffected.
  A trickled body is answered "deadline exceeded" at ``api.deadline_s`` and then closed.
- Connection caps (``api.max_connections``, ``api.max_connections_per_client``): one
  connection over a cap is closed when accepted.

Distinct loopback source addresses (127.0.x.y) stand for distinct LAN clients.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.api.store import AppRecord
from tests.api.server_fixture import Server, b64, jpeg_bytes, provider_headers, start_server
from tests.polling import wait

MIB = 1024 * 1024
IMG = b64(jpeg_bytes())
BUDGET = 16 * MIB
FENCE_LIMIT = 8 * MIB
BODY = 6 * MIB  # one fits the per-key share (8 MiB), two from different keys the budget
DEADLINE_S = 4.0


# -- raw HTTP ---------------------------------------------------------------------------


def _connect(srv: Server, source: str = "127.0.0.1") -> socket.socket:
    port = int(srv.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(srv: Server, api: str, app: AppRecord, length: int) -> bytes:
    """Request line + signed headers for a body of ``length`` bytes (never completed: the
    Sign is over an empty body; it is checked only after the whole body is read)."""
    path = srv.path(api, app)
    h = provider_headers(app.app_key, app.app_secret, path, b"")
    lines = [f"POST {path} HTTP/1.1", "Host: gw", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, object]]:
    """Read one HTTP/1.1 answer (status, JSON body)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(x.split(":")[1]) for x in lines[1:] if x.lower().startswith("content-len"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return status, json.loads(rest[:length])


def _closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), ``None`` if still open."""
    t0 = time.monotonic()
    end = t0 + timeout
    while True:
        if _readable(sock, max(end - time.monotonic(), 0.0)):
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - t0
            except ConnectionResetError:
                return time.monotonic() - t0
        if time.monotonic() >= end:
            return None


def _push(sock: socket.socket, size: int) -> tuple[dict[str, object] | None, float]:
    """Send a declared body of ``size`` bytes but its last byte, stopping at an early
    answer; returns (answer or ``None``, seconds from start to the answer)."""
    t0 = time.monotonic()
    sent, piece = 0, b"x" * (256 * 1024)
    while sent < size - 1:
        if _readable(sock, 0):
            break
        n = min(len(piece), size - 1 - sent)
        sock.sendall(piece[:n])
        sent += n
    if not _readable(sock, 0.3):
        return None, time.monotonic() - t0
    status, doc = _response(sock)
    assert status == 200
    return doc, time.monotonic() - t0


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _held(srv: Server) -> int:
    text = srv.http.get(srv.base_url + "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("safety_edge_body_bytes_held "))
    return int(line.split()[1])


# -- budget + connection caps -----------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(
        tmp_path_factory.mktemp("gw-budget"),
        api={
            "max_fence_body_bytes": FENCE_LIMIT,
            "max_image_bytes": 1 * MIB,
            "max_inflight_body_bytes": BUDGET,
            "max_body_reads_per_key": 3,
            "deadline_s": DEADLINE_S,
            "header_timeout_s": 5.0,
            "max_connections": 10,
            "max_connections_per_client": 4,
            "workers": 1,
            "queue_size": 4,
        },
    ) as server:
        yield server


def test_held_bodies_beyond_the_budget_are_busy_and_memory_stays_bounded(srv: Server) -> None:
    keys = [srv.create_app(f"flood-{i}") for i in range(8)]
    bystander = srv.create_app("bystander")
    assert srv.contract(srv.post("hardhat", bystander, {"image": IMG}))["code"] == 0
    rss0 = _rss_bytes(srv.process.pid)
    held: list[socket.socket] = []
    answers: dict[str, tuple[dict[str, object], float]] = {}
    try:
        for i, app in enumerate(keys):  # each key from its own address, two connections
            for n in ("a", "b"):
                sock = _connect(srv, f"127.0.1.{i + 1}")
                sock.sendall(_head(srv, "fence", app, BODY))
                doc, seconds = _push(sock, BODY)
                if doc is None:
                    held.append(sock)
                else:
                    answers[f"{i}{n}"] = (doc, seconds)
                    sock.close()
        # Read: key 0's and key 1's first bodies; key 0's second is over its share (8 MiB),
        # every later one over the budget (16 MiB).
        assert len(held) == 2, sorted(answers)
        assert set(answers) == {f"{i}{n}" for i in range(8) for n in "ab"} - {"0a", "1a"}
        for name, (doc, seconds) in answers.items():
            assert doc["code"] == 5000 and str(doc["details"]).startswith("gateway busy"), doc
            assert seconds < 2.0, (name, seconds)
        assert "share" in str(answers["0b"][0]["details"])  # key 0's second body
        assert "of 16.0 MiB" in str(answers["2a"][0]["details"])  # the whole budget
        assert _held(srv) == 2 * BODY
        # 16 bodies of 6 MiB were offered (96 MiB); at most the budget is buffered.
        grown = _rss_bytes(srv.process.pid) - rss0
        assert grown < 2 * BUDGET + 24 * MIB, grown / MIB
        # Small requests of other keys still fit beside the held bodies.
        assert srv.contract(srv.post("hardhat", bystander, {"image": IMG}))["code"] == 0
    finally:
        for sock in held:
            sock.close()
    # The held bodies' clients are gone: their reservations are released.
    assert wait(lambda: _held(srv) == 0, timeout=5.0), _held(srv)
    assert (
        srv.contract(srv.post("fence", bystander, {"image": [IMG], "area": "0,0,63,0,63,63,0,63"}))[
            "code"
        ]
        == 0
    )
    sock = _connect(srv, "127.0.1.1")
    try:
        sock.sendall(_head(srv, "fence", keys[2], BODY))
        assert _push(sock, BODY)[0] is None  # a body that was busy before is read now
    finally:
        sock.close()
    assert "Traceback" not in srv.log()


def test_one_key_cannot_read_more_bodies_than_its_cap(srv: Server) -> None:
    greedy, other = srv.create_app("greedy"), srv.create_app("other")
    socks: list[socket.socket] = []
    try:
        for _ in range(3):
            sock = _connect(srv, "127.0.3.1")
            socks.append(sock)
            sock.sendall(_head(srv, "fence", greedy, 4096) + b"{")
        assert not any(_readable(s, 0.3) for s in socks)
        extra = _connect(srv, "127.0.3.2")
        socks.append(extra)
        extra.sendall(_head(srv, "fence", greedy, 4096) + b"{")
        status, doc = _response(extra, timeout=2.0)
        assert status == 200 and doc["code"] == 5000, doc
        assert "already has 3 request bodies in progress (limit 3)" in str(doc["details"])
        ok = _connect(srv, "127.0.3.2")
        socks.append(ok)
        ok.sendall(_head(srv, "fence", other, 4096) + b"{")
        assert not _readable(ok, 0.3)  # another key is read
    finally:
        for sock in socks:
            sock.close()
    assert wait(lambda: _held(srv) == 0, timeout=5.0)


def test_connections_over_a_cap_are_closed_at_once(srv: Server) -> None:
    # Drop the fixture's pooled keep-alive connection so the server's count is exact.
    srv.http.close()
    srv.http = httpx.Client(timeout=30.0)
    time.sleep(0.3)
    socks: list[socket.socket] = []
    try:
        socks += [_connect(srv, "127.0.2.1") for _ in range(4)]
        fifth = _connect(srv, "127.0.2.1")
        assert _closed_within(fifth, 1.0) is not None  # per client: 4
        socks += [_connect(srv, "127.0.2.2") for _ in range(4)]
        socks += [_connect(srv, "127.0.2.3") for _ in range(2)]  # 10 in all
        eleventh = _connect(srv, "127.0.2.4")
        assert _closed_within(eleventh, 1.0) is not None  # in total: 10
        assert all(_closed_within(s, 0.05) is None for s in socks)  # the others stay
    finally:
        for sock in socks:
            sock.close()
    assert wait(lambda: srv.health()["status"] == "ok", timeout=5.0, interval=0.1)


# -- timeouts ---------------------------------------------------------------------------

HEADER_TIMEOUT_S = 1.0
SHORT_DEADLINE_S = 1.5


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(
        tmp_path_factory.mktemp("gw-timeouts"),
        api={"header_timeout_s": HEADER_TIMEOUT_S, "deadline_s": SHORT_DEADLINE_S},
    ) as server:
        yield server


def test_silent_partial_and_trickled_headers_are_closed(quick: Server) -> None:
    silent = _connect(quick, "127.0.4.1")
    partial = _connect(quick, "127.0.4.1")
    partial.sendall(b"POST /v1/aiop/api/x/SafeHat/base/hat_detect HTTP/1.1\r\nHost: gw\r\n")
    trickle = _connect(quick, "127.0.4.1")
    trickle.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: ")
    t0 = time.monotonic()
    closed: dict[str, float] = {}
    socks = {"silent": silent, "partial": partial, "trickle": trickle}
    try:
        while len(closed) < 3 and time.monotonic() - t0 < HEADER_TIMEOUT_S + 3.0:
            if "trickle" not in closed:
                with contextlib.suppress(OSError):  # one header byte every 0.1 s
                    trickle.send(b"a")
            for name, sock in socks.items():
                if name not in closed and _closed_within(sock, 0.0) is not None:
                    closed[name] = time.monotonic() - t0
            time.sleep(0.1)
    finally:
        for sock in socks.values():
            sock.close()
    assert set(closed) == set(socks), closed
    for name, seconds in closed.items():
        assert HEADER_TIMEOUT_S - 0.2 < seconds < HEADER_TIMEOUT_S + 1.5, (name, seconds)


def test_partial_headers_after_an_answer_are_timed_too(quick: Server) -> None:
    sock = _connect(quick, "127.0.4.2")
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        status, doc = _response(sock)
        assert status == 200 and doc["status"] == "ok"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")  # no blank line
        seconds = _closed_within(sock, HEADER_TIMEOUT_S + 1.5)
        assert seconds is not None and seconds > HEADER_TIMEOUT_S - 0.3, seconds
    finally:
        sock.close()


def test_keep_alive_client_spacing_requests_below_the_timeout_works(quick: Server) -> None:
    app = quick.create_app("keepalive")
    path = quick.path("hardhat", app)
    port = int(quick.base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=("127.0.4.3", 0)
    )
    try:
        local = None
        for i in range(4):
            body = json.dumps({"image": IMG, "i": i}).encode()
            conn.request(
                "POST", path, body, provider_headers(app.app_key, app.app_secret, path, body)
            )
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["code"] == 0
            assert conn.sock is not None
            name = conn.sock.getsockname()
            assert local is None or name == local  # the same connection every time
            local = name
            time.sleep(HEADER_TIMEOUT_S * 0.6)
    finally:
        conn.close()


def test_trickled_body_gets_deadline_then_the_connection_is_closed(quick: Server) -> None:
    app = quick.create_app("trickler")
    sock = _connect(quick, "127.0.4.4")
    try:
        t0 = time.monotonic()
        sock.sendall(_head(quick, "hardhat", app, 4096) + b'{"image": "')
        answer: dict[str, object] | None = None
        answered = 0.0
        closed_after: float | None = None
        while time.monotonic() - t0 < SHORT_DEADLINE_S + HEADER_TIMEOUT_S + 3.0:
            with contextlib.suppress(OSError):  # one body byte every 0.1 s
                sock.send(b"A")
            if answer is None and _readable(sock, 0):
                status, answer = _response(sock)
                assert status == 200
                answered = time.monotonic() - t0
            elif answer is not None and _closed_within(sock, 0.0) is not None:
                closed_after = time.monotonic() - t0 - answered
                break
            time.sleep(0.1)
        assert answer is not None
        assert answer["code"] == 5000 and "deadline exceeded" in str(answer["details"])
        assert SHORT_DEADLINE_S - 0.2 < answered < SHORT_DEADLINE_S + 1.5, answered
        # The rest of the body is discarded; the header timer closes the connection.
        assert closed_after is not None and closed_after < HEADER_TIMEOUT_S + 1.5
    finally:
        sock.close()
