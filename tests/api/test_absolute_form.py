"""Absolute-form request targets (RFC 9112 3.2.2: a server MUST accept them).

``POST http://host:port/v1/... HTTP/1.1`` -- what a client configured with an HTTP proxy
sends, and what some embedded HTTP stacks send always. uvicorn's h11 protocol passes the
whole target as the path; the gateway strips ``scheme://authority`` before routing and
before the Sign check (which covers the path only), so it is answered like origin-form.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.server_fixture import Server, b64, jpeg_bytes, provider_headers, start_server

IMG = b64(jpeg_bytes())


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("gw")) as server:
        yield server


def _raw(srv: Server, line: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    """Send one HTTP/1.1 request with ``line`` as its request line; (status, JSON body)."""
    port = int(srv.base_url.rsplit(":", 1)[1])
    head = [line, "Host: gw.example", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
        buf = b""
        while chunk := sock.recv(65536):
            buf += chunk
    status_line, _, rest = buf.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


@pytest.mark.parametrize(
    ("scheme", "name"), [("http", "abs-http"), ("https", "abs-https"), ("HTTP", "abs-upper")]
)
def test_absolute_form_signed_post_is_served(srv: Server, scheme: str, name: str) -> None:
    app = srv.create_app(name, grants=("hardhat",), calls=10)
    path = srv.path("hardhat", app)
    body = json.dumps({"image": IMG}).encode()
    h = provider_headers(app.app_key, app.app_secret, path, body)
    port = int(srv.base_url.rsplit(":", 1)[1])
    status, doc = _raw(srv, f"POST {scheme}://127.0.0.1:{port}{path} HTTP/1.1", h, body)
    assert status == 200 and doc["code"] == 0, (status, doc)


def test_absolute_form_signed_with_the_full_url_is_refused(srv: Server) -> None:
    """The Sign covers the path only (no scheme or host), as for origin-form."""
    app = srv.create_app("abs-badsign", grants=("hardhat",), calls=10)
    port = int(srv.base_url.rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{port}{srv.path('hardhat', app)}"
    body = json.dumps({"image": IMG}).encode()
    h = provider_headers(app.app_key, app.app_secret, url, body)
    status, doc = _raw(srv, f"POST {url} HTTP/1.1", h, body)
    assert status == 200 and doc["code"] == 4010, (status, doc)


def test_absolute_form_without_a_path_is_an_unknown_path(srv: Server) -> None:
    port = int(srv.base_url.rsplit(":", 1)[1])
    status, doc = _raw(srv, f"POST http://127.0.0.1:{port} HTTP/1.1", {}, b"{}")
    assert status == 200 and doc["code"] == 4000, (status, doc)
