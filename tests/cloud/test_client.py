"""The signing contract client: against a real gateway, against loopback servers that
misbehave (silent, non-JSON, REST statuses), and the answer parsers."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from edge.api.auth import compute_sign
from edge.cloud.client import (
    CloudError,
    ContractClient,
    Failure,
    FenceResult,
    HatResult,
    area_string,
    parse_fence_answer,
    parse_hat_answer,
    sign,
    signed_headers,
)
from tests.api.server_fixture import Server, jpeg_bytes, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("gw")) as server:
        yield server


# -- against the gateway ---------------------------------------------------------------------


def test_all_three_apis(srv: Server) -> None:
    app = srv.create_app("client-app", calls=10)
    with srv.client(app) as c:
        hat = c.hat_detect(jpeg_bytes())
        assert isinstance(hat, HatResult)
        assert [(i.classname, i.box) for i in hat.items] == [
            ("blue_hat", (15, 15, 25, 25)),
            ("no_hat", (15, 39, 25, 49)),
        ]
        wear = c.clothes_detect(jpeg_bytes())
        assert isinstance(wear, HatResult) and wear.items[0].classname == "blue"
        fence = c.fence([jpeg_bytes()], "20,30,60,30,60,60,20,60")
        assert isinstance(fence, FenceResult) and fence.items[0].target_num == 1
        loc = fence.items[0].location[0]
        assert (loc.left, loc.top, loc.width, loc.height) == (27, 30, 10, 20)
        bad = c.hat_detect(b"not an image")
        assert isinstance(bad, Failure) and bad.code == 4003 and not bad.ok


def test_wrong_secret_and_missing_grant(srv: Server) -> None:
    app = srv.create_app("client-b", grants=["hardhat"], calls=10)
    with ContractClient(
        base_url=srv.base_url,
        app_key=app.app_key,
        app_secret="0" * 32,
        service_codes=app.service_codes,
    ) as c:
        res = c.hat_detect(jpeg_bytes())
        assert isinstance(res, Failure) and res.code == 4010
        with pytest.raises(ValueError, match="no service code for the fence API"):
            c.fence([jpeg_bytes()], "0,0,1,0,1,1,0,1")


def test_close_is_idempotent(srv: Server) -> None:
    app = srv.create_app("client-c", calls=1)
    c = srv.client(app)
    c.close()
    c.close()


# -- transport failures -------------------------------------------------------------------------


def test_connection_refused_raises_cloud_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        ContractClient(
            base_url=f"http://127.0.0.1:{port}",
            app_key="k",
            app_secret="s",
            service_codes={"hardhat": "c"},
            timeout=2.0,
        ) as c,
        pytest.raises(CloudError) as ei,
    ):
        c.hat_detect(b"x")
    assert ei.value.kind == "connect"


def test_silent_server_times_out() -> None:
    """A loopback server that accepts and never answers: the read timeout fires."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        with ContractClient(
            base_url=f"http://127.0.0.1:{port}",
            app_key="k",
            app_secret="s",
            service_codes={"hardhat": "c"},
            timeout=0.5,
        ) as c:
            t0 = time.perf_counter()
            with pytest.raises(CloudError) as ei:
                c.hat_detect(b"x")
            assert ei.value.kind == "timeout"
            assert time.perf_counter() - t0 < 5
    finally:
        listener.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b"<html>proxy error</html>"
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        type(self).seen.append({**dict(self.headers), "__body": raw.decode(), "__path": self.path})
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def plain_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_non_json_answer_is_protocol_error(plain_server: tuple[str, type[_Handler]]) -> None:
    url, _h = plain_server
    with (
        ContractClient(
            base_url=url, app_key="k", app_secret="s", service_codes={"hardhat": "c"}
        ) as c,
        pytest.raises(CloudError) as ei,
    ):
        c.hat_detect(b"x")
    assert ei.value.kind == "protocol"


def test_rest_status_failure_is_parsed_and_request_is_signed_like_the_sample(
    plain_server: tuple[str, type[_Handler]],
) -> None:
    url, handler = plain_server
    handler.status = 401
    handler.body = json.dumps({"code": 4010, "message": "error", "details": "bad"}).encode()
    with ContractClient(
        base_url=url + "/prefix",
        app_key="key1",
        app_secret="secret1",
        service_codes={"fence": "abc"},
    ) as c:
        res = c.fence([b"\x01\x02"], [(0, 0), (10, 0), (10, 10), (0, 10)])
    assert res == Failure(code=4010, details="bad", message="error", http_status=401)
    (req,) = handler.seen
    path = "/prefix/v1/aiop/api/abc/ef-http/electron/fence"
    assert req["__path"] == path
    body = req["__body"]
    assert body == json.dumps({"image": ["AQI="], "area": "0,0,10,0,10,10,0,10"})
    assert req["Sign"] == compute_sign("key1", "secret1", req["Timestamp"], path, body.encode())
    assert len(req["Timestamp"]) == 13


def test_fence_sample_path_signing(plain_server: tuple[str, type[_Handler]]) -> None:
    url, handler = plain_server
    handler.body = json.dumps(
        {
            "code": 0,
            "message": {"success": 1, "fail": 0},
            "result": [{"target_num": 0, "location": []}],
        }
    ).encode()
    with ContractClient(
        base_url=url,
        app_key="k",
        app_secret="s",
        service_codes={"fence": "abc"},
        fence_sample_path=True,
    ) as c:
        res = c.fence([b"x"], "0,0,1,0,1,1,0,1")
    assert isinstance(res, FenceResult)
    (req,) = handler.seen
    assert req["__path"] == "/v1/aiop/api/abc/ef-http/electron/fence"
    signed = "/v1/aiop/api/abc/electron/fence"
    assert req["Sign"] == sign("k", "s", req["Timestamp"], signed, req["__body"])


# -- parsers --------------------------------------------------------------------------------------


def test_parse_hat_answer_shapes() -> None:
    ok = parse_hat_answer(
        {
            "code": 0,
            "message": "success",
            "data": [{"box": [1, 2, 3, 4], "classname": "red_hat", "score": 0.5}],
        }
    )
    assert isinstance(ok, HatResult) and ok.items[0].box == (1, 2, 3, 4)
    fail = parse_hat_answer({"code": 4001, "message": "error", "details": "no image"})
    assert fail == Failure(code=4001, details="no image")
    for bad in ([], {"msg": 1}, {"code": 0}, {"code": 0, "result": [{"box": [1]}]}):
        with pytest.raises(CloudError):
            parse_hat_answer(bad)


def test_parse_fence_answer_shapes() -> None:
    doc = {
        "code": 0,
        "message": {"success": 1, "fail": 1},
        "result": [
            {"target_num": 1, "location": [{"left": 1, "top": 2, "width": 3, "height": 4}]},
            {"target_num": 0, "location": [], "error": {"code": 4009, "details": "x"}},
        ],
    }
    res = parse_fence_answer(doc)
    assert isinstance(res, FenceResult) and (res.success, res.fail) == (1, 1)
    assert res.items[1].error_code == 4009
    assert parse_fence_answer({"code": 5001, "details": "x"}) == Failure(code=5001, details="x")
    with pytest.raises(CloudError):
        parse_fence_answer({"code": 0, "message": "success", "result": []})


def test_helpers() -> None:
    assert area_string("1,2") == "1,2"
    assert area_string([(0, 0.5), (3, 4)]) == "0,0.5,3,4"
    h = signed_headers(
        app_key="a", app_secret="b", path="/p", body="{}", timestamp_ms=1700000000000
    )
    assert h["Timestamp"] == "1700000000000"
    assert h["Sign"] == compute_sign("a", "b", "1700000000000", "/p", b"{}")
