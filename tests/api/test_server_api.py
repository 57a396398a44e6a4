"""The three contract APIs on a real uvicorn gateway: success shapes and every code.

One server (subprocess, real SQLite file, tiny real ONNX models) serves the module.
Each error case names the contract code and a word its ``details`` must contain.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from edge.api.store import AppRecord
from tests.api.server_fixture import (
    Server,
    b64,
    image_bytes,
    jpeg_bytes,
    provider_headers,
    start_server,
)

MIB = 1024 * 1024
FULL_AREA = "0,0,63,0,63,63,0,63"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("gw")
    with start_server(root, api={"max_fence_body_bytes": 2 * MIB}) as server:
        yield server


@pytest.fixture(scope="module")
def app(srv: Server) -> AppRecord:
    return srv.create_app("main-app")


# -- success ---------------------------------------------------------------------------------


def test_hat_detect_success(srv: Server, app: AppRecord) -> None:
    doc = srv.contract(srv.post("hardhat", app, {"image": b64(jpeg_bytes())}))
    assert doc["code"] == 0 and doc["message"] == "success"
    assert doc["result"] == doc["data"]
    items = doc["result"]
    assert [i["classname"] for i in items] == ["blue_hat", "no_hat"]
    assert items[0]["box"] == [15, 15, 25, 25]  # top, left, bottom, right
    assert items[1]["box"] == [15, 39, 25, 49]
    assert items[0]["score"] == pytest.approx(0.9, abs=1e-3)
    assert all(isinstance(v, int) for i in items for v in i["box"])


@pytest.mark.parametrize("fmt", [".png", ".bmp", ".jpg"])
def test_hat_accepts_png_jpg_bmp_and_data_prefix(srv: Server, app: AppRecord, fmt: str) -> None:
    data = image_bytes(128, 128, fmt=fmt)
    doc = srv.contract(srv.post("hardhat", app, {"image": f"data:image/x;base64,{b64(data)}"}))
    assert doc["code"] == 0
    # A 128x128 image maps the 64x64 model boxes at scale 2.
    assert doc["result"][0]["box"] == [30, 30, 50, 50]


def test_clothes_detect_success(srv: Server, app: AppRecord) -> None:
    doc = srv.contract(srv.post("workwear", app, {"image": b64(jpeg_bytes())}))
    assert doc["code"] == 0
    assert [(i["classname"], i["box"]) for i in doc["result"]] == [("blue", [12, 22, 52, 42])]


def test_fence_success_counts_targets_inside(srv: Server, app: AppRecord) -> None:
    small = "20,30,60,30,60,60,20,60"  # holds the person's feet (32, 50), not the car's
    doc = srv.contract(
        srv.post("fence", app, {"image": [b64(jpeg_bytes())] * 2, "area": FULL_AREA})
    )
    assert doc["code"] == 0
    assert doc["message"] == {"success": 2, "fail": 0}
    assert [r["target_num"] for r in doc["result"]] == [2, 2]
    doc = srv.contract(srv.post("fence", app, {"image": [b64(jpeg_bytes())], "area": small}))
    assert doc["result"] == [
        {"target_num": 1, "location": [{"left": 27, "top": 30, "width": 10, "height": 20}]}
    ]


def test_fence_failed_image_inside_batch(srv: Server, app: AppRecord) -> None:
    body = {"image": [b64(jpeg_bytes()), b64(b"not an image"), ""], "area": FULL_AREA}
    doc = srv.contract(srv.post("fence", app, body))
    assert doc["code"] == 0
    assert doc["message"] == {"success": 1, "fail": 2}
    ok, bad, empty = doc["result"]
    assert ok["target_num"] == 2
    assert bad == {
        "target_num": 0,
        "location": [],
        "error": {"code": 4009, "details": bad["error"]["details"]},
    }
    assert "image[1]" in bad["error"]["details"]
    assert empty["error"]["code"] == 4008


def test_fence_area_outside_one_image_fails_that_image(srv: Server, app: AppRecord) -> None:
    area = "0,0,100,0,100,100,0,100"  # fits 128x128, not 64x64
    body = {"image": [b64(jpeg_bytes(128, 128)), b64(jpeg_bytes(64, 64))], "area": area}
    doc = srv.contract(srv.post("fence", app, body))
    assert doc["message"] == {"success": 1, "fail": 1}
    assert doc["result"][1]["error"]["code"] == 4013


# -- every error code ------------------------------------------------------------------------

Case = Callable[[Server, AppRecord], httpx.Response]


def raw(api: str, body: bytes, **kw: Any) -> Case:
    return lambda s, a: s.post(api, a, body, **kw)


def obj(api: str, value: Any) -> Case:
    return lambda s, a: s.post(api, a, json.dumps(value).encode())


def other_api_code(api: str, other: str) -> Case:
    """The app's service code of ``other`` on the path of ``api``."""
    return lambda s, a: s.post(api, a, b"{}", path=s.path(api, code=a.service_codes[other]))


def unknown_code(api: str) -> Case:
    return lambda s, a: s.post(api, a, b"{}", path=s.path(api, code="zzzzzzzzzzzzzzzz"))


def method(api: str, m: str) -> Case:
    return lambda s, a: s.post(api, a, b"", method=m)


def read_http_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    length = int(m[1]) if m else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def big_declared(api: str, n: int) -> Case:
    """Content-Length says ``n`` bytes; only a few are sent (raw socket, since HTTP
    clients refuse to lie). The server must answer from the header alone."""

    def run(s: Server, a: AppRecord) -> httpx.Response:
        p = s.path(api, a)
        h = provider_headers(a.app_key, a.app_secret, p, b"x")
        host, port = s.base_url.removeprefix("http://").split(":")
        head = f"POST {p} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {n}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode() + b"{" * 100)
            status, body = read_http_response(sock)
        return httpx.Response(status, content=body)

    return run


def streamed(api: str, n: int) -> Case:
    """A chunked body of ``n`` bytes (no Content-Length): the limit applies while reading."""

    def run(s: Server, a: AppRecord) -> httpx.Response:
        p = s.path(api, a)
        payload = b'{"image": "' + b"A" * n + b'"}'
        h = provider_headers(a.app_key, a.app_secret, p, payload)

        def gen() -> Iterator[bytes]:
            for i in range(0, len(payload), 65536):
                yield payload[i : i + 65536]

        try:
            return s.http.post(s.base_url + p, content=gen(), headers=h, timeout=30)
        except httpx.HTTPError as exc:  # server may close while we still send
            pytest.fail(f"no answer: {exc!r}")

    return run


PNG_10K = b64(
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00'\x10\x00\x00'\x10\x08\x02\x00\x00\x00"
    b"\x00\x00\x00\x00"
)
IMG = b64(jpeg_bytes())

HAT_CASES: list[tuple[str, Case, int, str]] = []
for _api in ("hardhat", "workwear"):
    _other = "fence"
    HAT_CASES += [
        (f"{_api}-4000-unknown-code", unknown_code(_api), 4000, "service code"),
        (f"{_api}-4000-other-api-code", other_api_code(_api, _other), 4000, "fence"),
        (f"{_api}-4001-no-key", obj(_api, {"img": IMG}), 4001, "'image'"),
        (f"{_api}-4001-not-string", obj(_api, {"image": 5}), 4001, "string"),
        (f"{_api}-4001-empty-string", obj(_api, {"image": ""}), 4001, "empty"),
        (f"{_api}-4002-decoded", obj(_api, {"image": b64(b"\0" * (5 * MIB + 1))}), 4002, "limit"),
        (f"{_api}-4002-declared", big_declared(_api, 20 * MIB), 4002, "limit"),
        (f"{_api}-4002-streamed", streamed(_api, 9 * MIB), 4002, "limit"),
        (f"{_api}-4003-base64", obj(_api, {"image": "@@@@"}), 4003, "base64"),
        (f"{_api}-4003-not-image", obj(_api, {"image": b64(b"hello")}), 4003, "image"),
        (f"{_api}-4003-10000px", obj(_api, {"image": PNG_10K}), 4003, "10000x10000"),
        (f"{_api}-4004-get", method(_api, "GET"), 4004, "POST"),
        (f"{_api}-4004-put", method(_api, "PUT"), 4004, "POST"),
        (f"{_api}-4004-delete", method(_api, "DELETE"), 4004, "POST"),
        (f"{_api}-4005-empty", raw(_api, b""), 4005, "empty"),
        (f"{_api}-4006-not-json", raw(_api, b"{image:"), 4006, "JSON"),
        (f"{_api}-4006-array", obj(_api, [IMG]), 4006, "object"),
        (f"{_api}-4006-utf8", raw(_api, b'{"image": "\xff"}'), 4006, "UTF-8"),
    ]

FENCE_CASES: list[tuple[str, Case, int, str]] = [
    ("4000-unknown-code", unknown_code("fence"), 4000, "service code"),
    ("4000-other-api-code", other_api_code("fence", "hardhat"), 4000, "hardhat"),
    ("4001-get", method("fence", "GET"), 4001, "POST"),
    ("4001-patch", method("fence", "PATCH"), 4001, "POST"),
    ("4002-declared", big_declared("fence", 60 * MIB), 4002, "limit"),
    ("4002-streamed", streamed("fence", 3 * MIB), 4002, "limit"),
    ("4003-not-json", raw("fence", b'{"image": ['), 4003, "JSON"),
    ("4003-nan", raw("fence", b'{"image": [NaN], "area": "1"}'), 4003, "NaN"),
    ("4004-array", obj("fence", []), 4004, "object"),
    ("4004-empty", raw("fence", b""), 4004, "empty"),
    ("4005-missing", obj("fence", {"image": [IMG]}), 4005, "'area'"),
    ("4005-extra", obj("fence", {"image": [IMG], "area": FULL_AREA, "x": 1}), 4005, "'x'"),
    ("4006-not-list", obj("fence", {"image": IMG, "area": FULL_AREA}), 4006, "list"),
    ("4007-empty-list", obj("fence", {"image": [], "area": FULL_AREA}), 4007, "0 entries"),
    ("4007-33", obj("fence", {"image": [IMG] * 33, "area": FULL_AREA}), 4007, "33"),
    ("4008-empty", obj("fence", {"image": [""], "area": FULL_AREA}), 4008, "image[0]"),
    ("4008-null", obj("fence", {"image": [None], "area": FULL_AREA}), 4008, "image[0]"),
    ("4009-garbage", obj("fence", {"image": ["!!"], "area": FULL_AREA}), 4009, "base64"),
    ("4009-not-image", obj("fence", {"image": [b64(b"xx")], "area": FULL_AREA}), 4009, "png"),
    (
        "4009-bmp",
        obj("fence", {"image": [b64(image_bytes(fmt=".bmp"))], "area": FULL_AREA}),
        4009,
        "bmp",
    ),
    ("4009-10000px", obj("fence", {"image": [PNG_10K], "area": FULL_AREA}), 4009, "10000x10000"),
    ("4011-number", obj("fence", {"image": [IMG], "area": 12}), 4011, "string"),
    ("4011-list", obj("fence", {"image": [IMG], "area": [0, 0, 1, 1]}), 4011, "string"),
    ("4012-odd", obj("fence", {"image": [IMG], "area": "0,0,10,0,10"}), 4012, "area"),
    ("4012-3pts", obj("fence", {"image": [IMG], "area": "0,0,10,0,10,10"}), 4012, "area"),
    ("4012-10pts", obj("fence", {"image": [IMG], "area": ",".join(["1,1"] * 10)}), 4012, "area"),
    ("4012-words", obj("fence", {"image": [IMG], "area": "a,b,c,d,e,f,g,h"}), 4012, "area"),
    ("4012-bowtie", obj("fence", {"image": [IMG], "area": "0,0,10,10,10,0,0,10"}), 4012, "area"),
    ("4012-nan", obj("fence", {"image": [IMG], "area": "0,0,nan,0,10,10,0,10"}), 4012, "area"),
    ("4012-inf", obj("fence", {"image": [IMG], "area": "0,0,inf,0,10,10,0,10"}), 4012, "area"),
    (
        "4013-outside",
        obj("fence", {"image": [IMG], "area": "0,0,640,0,640,480,0,480"}),
        4013,
        "image[0]",
    ),
]


@pytest.mark.parametrize(
    ("case", "want", "word"), [c[1:] for c in HAT_CASES], ids=[c[0] for c in HAT_CASES]
)
def test_hat_and_workwear_codes(
    srv: Server, app: AppRecord, case: Case, want: int, word: str
) -> None:
    doc = srv.contract(case(srv, app))
    assert doc["code"] == want, doc
    assert word in doc["details"], doc


@pytest.mark.parametrize(
    ("case", "want", "word"), [c[1:] for c in FENCE_CASES], ids=[c[0] for c in FENCE_CASES]
)
def test_fence_codes(srv: Server, app: AppRecord, case: Case, want: int, word: str) -> None:
    doc = srv.contract(case(srv, app))
    assert doc["code"] == want, doc
    assert word in doc["details"], doc


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1/aiop/api/",
        "/v1/aiop/api/abc/SafeHat/base/hat_detect/",
        "/v1/aiop/api/abc/SafeHat/base/other",
        "/v1/aiop/api/abc/def/electron/fence",
        "/v2/aiop/api/abc/ef-http/electron/fence",
    ],
)
@pytest.mark.parametrize("m", ["POST", "GET", "DELETE"])
def test_unknown_paths_answer_4000(srv: Server, path: str, m: str) -> None:
    doc = srv.contract(srv.http.request(m, srv.base_url + path, content=b"{}"))
    assert doc["code"] == 4000
    assert "unknown path" in doc["details"]


def test_head_on_api_path_is_not_post(srv: Server, app: AppRecord) -> None:
    r = srv.http.head(srv.base_url + srv.path("hardhat", app))
    assert r.status_code == 200


def test_quota_zero_is_4029_and_grants_are_checked(srv: Server) -> None:
    poor = srv.create_app("poor-app", calls=None)
    for api, body in (
        ("hardhat", {"image": IMG}),
        ("workwear", {"image": IMG}),
        ("fence", {"image": [IMG], "area": FULL_AREA}),
    ):
        doc = srv.contract(srv.post(api, poor, body))
        assert doc["code"] == 4029, doc
        assert "package" in doc["details"]


def test_client_error_does_not_consume_quota(srv: Server) -> None:
    a = srv.create_app("frugal", calls=3)
    for _ in range(5):
        assert srv.contract(srv.post("hardhat", a, {"image": "@@"}))["code"] == 4003
        assert (
            srv.contract(srv.post("fence", a, {"image": [""], "area": FULL_AREA}))["code"] == 4008
        )
    with srv.store() as st:
        assert st.remaining(app_key=a.app_key, api="hardhat") == 3
        assert st.remaining(app_key=a.app_key, api="fence") == 3
    assert srv.contract(srv.post("hardhat", a, {"image": IMG}))["code"] == 0
    with srv.store() as st:
        assert st.remaining(app_key=a.app_key, api="hardhat") == 2


def test_client_gone_mid_body(srv: Server, app: AppRecord) -> None:
    p = srv.path("fence", app)
    h = provider_headers(app.app_key, app.app_secret, p, b"x")
    host, port = srv.base_url.removeprefix("http://").split(":")
    head = f"POST {p} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"image": [')
    srv.wait_for(
        lambda: (
            "safety_edge_client_disconnects_total 1" in srv.http.get(srv.base_url + "/metrics").text
        )
    )
    assert srv.health()["status"] == "ok"


def test_server_still_healthy(srv: Server, app: AppRecord) -> None:
    assert srv.health()["status"] == "ok"
    assert srv.contract(srv.post("hardhat", app, {"image": IMG}))["code"] == 0
    assert "Traceback" not in srv.log()
    metrics = srv.http.get(srv.base_url + "/metrics").text
    assert "safety_edge_unhandled_errors_total 0" in metrics
