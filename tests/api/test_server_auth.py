"""Authentication on a real gateway: every 4010 check, replay, skew, provider-sample
compatibility (requests + hashlib + json.dumps), the fence sample-path option, REST
statuses and an unauthenticated unmetered gateway."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edge.api.store import AppRecord
from tests.api.server_fixture import Server, b64, jpeg_bytes, provider_headers, start_server

IMG = b64(jpeg_bytes())
FULL_AREA = "0,0,63,0,63,63,0,63"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("gw")) as server:
        yield server


@pytest.fixture(scope="module")
def app(srv: Server) -> AppRecord:
    return srv.create_app("auth-app")


def now_ms() -> str:
    return str(int(time.time() * 1000))


def send(srv: Server, path: str, body: bytes, headers: dict[str, str]) -> dict[str, object]:
    return srv.contract(srv.http.post(srv.base_url + path, content=body, headers=headers))


def test_provider_sample_style_request_succeeds(srv: Server, app: AppRecord) -> None:
    """Exactly what the provider's Python sample does: requests, hashlib, json.dumps."""
    params = {"image": base64.b64encode(jpeg_bytes()).decode()}
    body = json.dumps(params)
    timestamp = str(round(time.time() * 1000))
    path = f"/v1/aiop/api/{app.service_codes['hardhat']}/SafeHat/base/hat_detect"
    sign = hashlib.md5(
        (app.app_key + app.app_secret + timestamp + path + body).encode("utf-8")
    ).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "AppKey": app.app_key,
        "Timestamp": timestamp,
        "Sign": sign,
    }
    r = requests.post(srv.base_url + path, data=body, headers=headers, timeout=30)
    assert r.status_code == 200
    doc = r.json()
    assert doc["code"] == 0 and doc["result"][0]["classname"] == "blue_hat"


def test_provider_sample_style_fence(srv: Server, app: AppRecord) -> None:
    body = json.dumps({"image": [IMG, IMG], "area": FULL_AREA})
    timestamp = str(int(time.time() * 1000))
    path = f"/v1/aiop/api/{app.service_codes['fence']}/ef-http/electron/fence"
    sign = hashlib.md5(
        (app.app_key + app.app_secret + timestamp + path + body).encode()
    ).hexdigest()
    r = requests.post(
        srv.base_url + path,
        data=body,
        headers={
            "Content-Type": "application/json",
            "AppKey": app.app_key,
            "Timestamp": timestamp,
            "Sign": sign,
        },
        timeout=30,
    )
    doc = r.json()
    assert doc["code"] == 0 and doc["message"] == {"success": 2, "fail": 0}


@pytest.mark.parametrize("drop", ["AppKey", "Timestamp", "Sign"])
def test_missing_header(srv: Server, app: AppRecord, drop: str) -> None:
    path = srv.path("hardhat", app)
    body = json.dumps({"image": IMG}).encode()
    h = provider_headers(app.app_key, app.app_secret, path, body)
    del h[drop]
    doc = send(srv, path, body, h)
    assert doc["code"] == 4010 and f"missing header {drop}" in str(doc["details"])


@pytest.mark.parametrize(
    ("header", "value", "word"),
    [
        ("Timestamp", "12345", "13 digits"),
        ("Timestamp", str(int(time.time())), "13 digits"),
        ("Sign", "xyz", "32 hexadecimal"),
    ],
)
def test_malformed_header(srv: Server, app: AppRecord, header: str, value: str, word: str) -> None:
    path = srv.path("hardhat", app)
    body = b"{}"
    h = provider_headers(app.app_key, app.app_secret, path, body)
    h[header] = value
    doc = send(srv, path, body, h)
    assert doc["code"] == 4010 and word in str(doc["details"])


@pytest.mark.parametrize(("offset_s", "word"), [(-400, "behind"), (400, "ahead")])
def test_timestamp_outside_window(srv: Server, app: AppRecord, offset_s: int, word: str) -> None:
    ts = str(int(time.time() * 1000) + offset_s * 1000)
    doc = srv.contract(srv.post("hardhat", app, {"image": IMG}, ts=ts))
    assert doc["code"] == 4010 and word in str(doc["details"])


def test_timestamp_inside_window_ok(srv: Server, app: AppRecord) -> None:
    ts = str(int(time.time() * 1000) - 200_000)
    assert srv.contract(srv.post("hardhat", app, {"image": IMG}, ts=ts))["code"] == 0


def test_unknown_appkey(srv: Server, app: AppRecord) -> None:
    path = srv.path("hardhat", app)
    h = provider_headers("f" * 24, app.app_secret, path, b"{}")
    doc = send(srv, path, b"{}", h)
    assert doc == {"code": 4010, "message": "error", "details": "unknown AppKey"}


def test_bad_sign_does_not_leak(srv: Server, app: AppRecord) -> None:
    path = srv.path("hardhat", app)
    body = json.dumps({"image": IMG}).encode()
    h = provider_headers(app.app_key, "wrong-secret", path, body)
    r = srv.http.post(srv.base_url + path, content=body, headers=h)
    doc = srv.contract(r)
    assert doc["code"] == 4010 and "Sign does not match" in str(doc["details"])
    expected = provider_headers(app.app_key, app.app_secret, path, body, h["Timestamp"])["Sign"]
    assert app.app_secret not in r.text and expected not in r.text


def test_sign_covers_body_and_path(srv: Server, app: AppRecord) -> None:
    path = srv.path("hardhat", app)
    body = json.dumps({"image": IMG}).encode()
    h = provider_headers(app.app_key, app.app_secret, path, body)
    doc = send(srv, path, body + b" ", h)  # body changed after signing
    assert doc["code"] == 4010
    # Sign over the workwear path, sent to the hardhat path of the same app.
    other = srv.path("workwear", app)
    h = provider_headers(app.app_key, app.app_secret, other, body)
    assert send(srv, path, body, h)["code"] == 4010


def test_replay_rejected(srv: Server, app: AppRecord) -> None:
    path = srv.path("hardhat", app)
    body = json.dumps({"image": IMG}).encode()
    h = provider_headers(app.app_key, app.app_secret, path, body)
    assert send(srv, path, body, h)["code"] == 0
    doc = send(srv, path, body, h)
    assert doc["code"] == 4010 and "replayed" in str(doc["details"])
    h2 = dict(h, Sign=h["Sign"].upper())
    assert send(srv, path, body, h2)["code"] == 4010


def test_disabled_app_and_rotated_secret(srv: Server) -> None:
    a = srv.create_app("short-lived")
    assert srv.contract(srv.post("hardhat", a, {"image": IMG}))["code"] == 0
    with srv.store() as st:
        rotated = st.rotate_secret(a.app_key)
    doc = srv.contract(srv.post("hardhat", a, {"image": IMG}))
    assert doc["code"] == 4010 and "Sign" in str(doc["details"])
    assert srv.contract(srv.post("hardhat", rotated, {"image": IMG}))["code"] == 0
    with srv.store() as st:
        st.disable_app(a.app_key)
    doc = srv.contract(srv.post("hardhat", rotated, {"image": IMG}))
    assert doc["code"] == 4010 and "disabled" in str(doc["details"])


def test_service_code_of_another_app(srv: Server, app: AppRecord) -> None:
    other = srv.create_app("other-app")
    doc = srv.contract(srv.post("hardhat", app, {"image": IMG}, path=srv.path("hardhat", other)))
    assert doc["code"] == 4010 and "not granted to this AppKey" in str(doc["details"])


def test_fence_sample_path_refused_by_default(srv: Server, app: AppRecord) -> None:
    sample = f"/v1/aiop/api/{app.service_codes['fence']}/electron/fence"
    doc = srv.contract(
        srv.post("fence", app, {"image": [IMG], "area": FULL_AREA}, sign_path=sample)
    )
    assert doc["code"] == 4010


def test_client_library_against_server(srv: Server, app: AppRecord) -> None:
    with srv.client(app) as c:
        hat = c.hat_detect(jpeg_bytes())
        assert hat.ok and [i.classname for i in hat.items] == ["blue_hat", "no_hat"]
        assert hat.items[0].box == (15, 15, 25, 25)
        wear = c.clothes_detect(jpeg_bytes())
        assert wear.ok and wear.items[0].classname == "blue"
        fence = c.fence([jpeg_bytes(), b"junk"], [(0, 0), (63, 0), (63, 63), (0, 63)])
        assert fence.ok and (fence.success, fence.fail) == (1, 1)
        assert fence.items[0].target_num == 2 and fence.items[1].error_code == 4009
        bad = c.fence([b"junk"], FULL_AREA)
        assert not bad.ok and bad.code == 4009


# -- options (their own servers) ---------------------------------------------------------------


def test_accept_fence_sample_path_option(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"accept_fence_sample_path": True}) as s:
        a = s.create_app("sample-fence")
        with s.client(a, fence_sample_path=True) as c:
            res = c.fence([jpeg_bytes()], FULL_AREA)
            assert res.ok, res
        with s.client(a) as c:  # the real path still works
            assert c.fence([jpeg_bytes()], FULL_AREA).ok
        # The option applies to the fence API only.
        sample = f"/v1/aiop/api/{a.service_codes['hardhat']}/electron/fence"
        doc = s.contract(s.post("hardhat", a, {"image": IMG}, sign_path=sample))
        assert doc["code"] == 4010


def test_rest_status_option_and_unmetered_no_auth(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"rest_status": True, "auth": False, "metered": False}) as s:
        # No auth, no quota: any service code on a known path works.
        url = s.base_url + s.path("hardhat", code="anything")
        r = s.http.post(url, content=json.dumps({"image": IMG}))
        assert r.status_code == 200 and r.json()["code"] == 0
        r = s.http.get(url)
        assert r.status_code == 405 and r.json()["code"] == 4004
        r = s.http.post(url, content=b"")
        assert r.status_code == 400 and r.json()["code"] == 4005
        r = s.http.post(s.base_url + "/nope", content=b"")
        assert r.status_code == 404 and r.json()["code"] == 4000
        r = s.http.post(url, content=json.dumps({"image": "A" * (8 * 1024 * 1024)}))
        assert r.status_code == 413 and r.json()["code"] == 4002


def test_rest_status_auth_and_quota(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"rest_status": True}) as s:
        a = s.create_app("rest-app", calls=1)
        assert s.post("hardhat", a, {"image": IMG}).status_code == 200
        r = s.post("hardhat", a, {"image": IMG})
        assert r.status_code == 429 and r.json()["code"] == 4029
        r = s.post("hardhat", a, {"image": IMG}, ts="1000000000000")
        assert r.status_code == 401 and r.json()["code"] == 4010
