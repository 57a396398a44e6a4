"""The bounded worker pool and the per-request deadline on a real gateway.

Every model carries a chain of 512x512 MatMuls (a real onnxruntime workload of about a
second or more, longer on slower machines), one worker and one queue slot:

- request A runs, B waits in the queue, C finds the pool full and is answered 5000
  "busy" at once;
- A and B get 5000 "deadline exceeded" after ``deadline_s``, long before the model
  finishes; B never started, so only A drew quota.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.server_fixture import Server, b64, jpeg_bytes, start_server

IMG = b64(jpeg_bytes())
DEADLINE_S = 0.8
MATMULS = 1200


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(
        tmp_path_factory.mktemp("gw"),
        api={"workers": 1, "queue_size": 1, "deadline_s": DEADLINE_S},
        slow_matmuls=MATMULS,
    ) as server:
        yield server


def test_busy_answers_at_once_and_deadline_bounds_the_wait(srv: Server) -> None:
    app = srv.create_app("load-app", calls=100)
    results: dict[str, tuple[dict[str, object], float]] = {}

    def call(name: str) -> None:
        t0 = time.perf_counter()
        r = srv.post("hardhat", app, json.dumps({"image": IMG, "n": name}).encode())
        results[name] = (r.json(), time.perf_counter() - t0)

    a = threading.Thread(target=call, args=("A",))
    a.start()
    srv.wait_for(lambda: srv.health()["inflight"] == 1)
    b = threading.Thread(target=call, args=("B",))
    b.start()
    srv.wait_for(lambda: srv.health()["inflight"] == 2)
    t0 = time.perf_counter()
    c = srv.post("hardhat", app, json.dumps({"image": IMG, "n": "C"}).encode())
    busy_s = time.perf_counter() - t0
    doc = srv.contract(c)
    assert doc["code"] == 5000 and "busy" in doc["details"], doc
    assert busy_s < 0.5, busy_s
    a.join(timeout=30)
    b.join(timeout=30)
    for name in ("A", "B"):
        body, elapsed = results[name]
        assert body["code"] == 5000 and "deadline exceeded" in str(body["details"]), body
        assert elapsed < DEADLINE_S + 1.0, (name, elapsed)
    # The abandoned job still holds its worker until the model returns; then the pool
    # drains (B was cancelled before it started).
    srv.wait_for(lambda: srv.health()["inflight"] == 0, timeout=60)
    with srv.store() as st:
        (pkg,) = st.quota(app.app_key, api="hardhat")
    assert pkg.used == 1  # A drew quota before inference; B and C did not
    text = srv.http.get(srv.base_url + "/metrics").text
    assert "safety_edge_busy_rejections_total 1" in text
    assert "safety_edge_deadline_exceeded_total 2" in text


def test_client_errors_never_wait_for_the_pool(srv: Server) -> None:
    """Validation happens before the pool: a bad request is answered at once, busy or not."""
    app = srv.create_app("load-bad", calls=10)
    t0 = time.perf_counter()
    doc = srv.contract(srv.post("hardhat", app, {"image": "@@"}))
    assert doc["code"] == 4003
    assert time.perf_counter() - t0 < 0.5
    r = srv.http.get(srv.base_url + "/healthz", timeout=httpx.Timeout(2.0))
    assert r.status_code == 200
