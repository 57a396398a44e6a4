"""The fallback against a misbehaving endpoint (:mod:`tests.cloud.fault_server`): which
failures are retried and how often, the circuit breaker's transitions, the deadline
against slow and dripping servers, the concurrency cap, and the daily budget across a
re-created client. Every request the server receives is counted and its Sign checked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cloud.fallback import FallbackClient, HatReview, prometheus_text
from edge.config import FallbackConfig
from edge.tasks.hardhat import ResultItem
from edge.types import Detections
from tests.api.server_fixture import free_port, jpeg_bytes
from tests.cloud.fault_server import Action, FaultServer

IMAGE = np.full((64, 64, 3), (200, 80, 20), np.uint8)
SURE: ResultItem = {"box": [15, 15, 25, 25], "classname": "blue_hat", "score": 0.9}
UNSURE: ResultItem = {"box": [15, 39, 25, 49], "classname": "no_hat", "score": 0.45}
LOCAL = [SURE, UNSURE]
CLOUD_ITEM = {"box": [15, 39, 25, 49], "classname": "red_hat", "score": 0.95}
EPS = 0.3
"""Scheduling slack on a loaded 2-core machine, seconds."""


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer(app_key="key", secret="secret") as s:
        yield s


def config(base_url: str, **kw: Any) -> FallbackConfig:
    base: dict[str, Any] = {
        "enabled": True,
        "base_url": base_url,
        "app_key": "key",
        "app_secret": "secret",
        "service_codes": {"hardhat": "hc", "workwear": "wc", "fence": "fc"},
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
        "deadline_s": 3.0,
        "breaker_failures": 100,
        "daily_budget": None,
    }
    base.update(kw)
    return FallbackConfig.model_validate(base)


def review(fb: FallbackClient, **kw: Any) -> HatReview:
    return fb.review_hat("hardhat", image_bgr=IMAGE, local=LOCAL, image_file=jpeg_bytes(), **kw)


# -- answers and signing -------------------------------------------------------------------


def test_cloud_answer_is_merged_and_the_request_is_signed(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.hat_ok([CLOUD_ITEM, {**SURE, "score": 0.99}])
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        r = review(fb)
    assert r.outcome.status == "cloud" and r.outcome.used and r.outcome.requests == 1
    assert r.items == [
        {"box": [15, 39, 25, 49], "classname": "red_hat", "score": 0.95},
        SURE,
    ]
    assert r.sources == ["cloud", "local"]
    (req,) = srv.received
    assert req.sign_ok, "Sign must be md5(AppKey+AppSecret+Timestamp+Path+Body)"
    assert req.path == "/v1/aiop/api/hc/SafeHat/base/hat_detect"
    assert req.body.startswith(b'{"image": "/9j/'), "the original JPEG, as json.dumps builds it"


def test_no_uncertain_box_sends_nothing(srv: FaultServer, tmp_path: Path) -> None:
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        r = fb.review_hat("hardhat", image_bgr=IMAGE, local=[SURE])
        assert r.outcome.status == "not_needed" and r.items == [SURE]
        # an API without a service code never asks
        fb2 = config(srv.base_url, service_codes={"fence": "fc"})
        with FallbackClient(config=fb2, data_dir=tmp_path / "2") as only_fence:
            r2 = only_fence.review_hat("hardhat", image_bgr=IMAGE, local=LOCAL)
            assert r2.outcome.status == "not_needed" and r2.items == LOCAL
        assert fb.metrics()["outcomes"]["not_needed"] == 1
    assert srv.count == 0


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [5000, 5001])
def test_5000_and_5001_are_retried_max_retries_times(
    srv: FaultServer, tmp_path: Path, code: int
) -> None:
    srv.default = Action.code(code)
    with FallbackClient(config=config(srv.base_url, max_retries=3), data_dir=tmp_path) as fb:
        r = review(fb)
        m = fb.metrics()
    assert srv.count == 4, "1 request + 3 retries"
    assert all(q.sign_ok for q in srv.received)
    assert len({q.headers["timestamp"] + q.headers["sign"] for q in srv.received}) >= 1
    assert r.outcome.status == "error" and r.outcome.detail.startswith(f"{code}:")
    assert r.items == LOCAL and r.sources == ["local", "local"]
    assert m["requests"] == 4 and m["retries"] == 3 and m["failures"] == {str(code): 4}
    assert m["breaker"]["consecutive_failures"] == 1, "one logical call, one breaker failure"


@pytest.mark.parametrize("code", [4010, 4029, 4003, 4000])
def test_4xxx_answers_are_never_retried(srv: FaultServer, tmp_path: Path, code: int) -> None:
    srv.default = Action.code(code)
    with FallbackClient(config=config(srv.base_url, max_retries=5), data_dir=tmp_path) as fb:
        r = review(fb)
        m = fb.metrics()
    assert srv.count == 1
    assert r.outcome.status == "error" and r.outcome.detail.startswith(f"{code}:")
    assert r.items == LOCAL
    # 4000/4010/4029 say the endpoint is unusable; 4003 is about this image only
    assert m["breaker"]["consecutive_failures"] == (0 if code == 4003 else 1)


def test_dropped_connections_are_retried_until_an_answer(srv: FaultServer, tmp_path: Path) -> None:
    srv.script(Action.drop(), Action.code(5000), Action.hat_ok([CLOUD_ITEM]))
    with FallbackClient(config=config(srv.base_url, max_retries=2), data_dir=tmp_path) as fb:
        r = review(fb)
        m = fb.metrics()
    assert srv.count == 3
    assert r.outcome.status == "cloud" and r.outcome.requests == 3
    assert r.sources == ["cloud", "local"]
    assert m["failures"] == {"5000": 1, "transport": 1} and m["retries"] == 2


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with FallbackClient(config=config(url, max_retries=2), data_dir=tmp_path) as fb:
        r = review(fb)
        m = fb.metrics()
    assert r.outcome.status == "error" and r.outcome.detail.startswith("connect:")
    assert r.outcome.requests == 3 and m["failures"] == {"connect": 3}
    assert r.items == LOCAL


def test_non_contract_answer_is_not_retried(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action("json", {"hello": "world"})
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        r = review(fb)
        assert fb.metrics()["failures"] == {"protocol": 1}
    assert srv.count == 1 and r.outcome.status == "error"


def test_backoff_is_jittered_and_capped(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.code(5000)
    cfg = config(srv.base_url, max_retries=4, backoff_base_s=0.2, backoff_max_s=0.25)
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        t0 = time.monotonic()
        review(fb)
        took = time.monotonic() - t0
    gaps = np.diff([q.at for q in srv.received])
    assert srv.count == 5
    assert (gaps < 0.25 + EPS).all(), gaps
    assert took < 4 * 0.25 + 1.0
    assert len({round(float(g), 3) for g in gaps}) > 1, "jitter: not the same sleep each time"


# -- circuit breaker -------------------------------------------------------------------------


def test_breaker_closed_open_half_open_closed(srv: FaultServer, tmp_path: Path) -> None:
    cfg = config(srv.base_url, breaker_failures=2, breaker_cooldown_s=0.5, max_retries=2)
    srv.default = Action.code(4010)
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        assert fb.breaker.state == "closed"
        review(fb)
        assert fb.breaker.state == "closed"
        review(fb)
        assert fb.breaker.state == "open" and srv.count == 2
        for _ in range(5):
            r = review(fb)
            assert r.outcome.status == "breaker_open" and r.items == LOCAL
        assert srv.count == 2, "no request while open"
        time.sleep(0.5)
        assert fb.breaker.state == "half_open"
        # a failing probe: one request, no retry even for 5000, open again
        srv.default = Action.code(5000)
        assert review(fb).outcome.status == "error"
        assert srv.count == 3 and fb.breaker.state == "open"
        assert review(fb).outcome.status == "breaker_open" and srv.count == 3
        time.sleep(0.5)
        # a slow probe holds the half-open slot: others answer breaker_open meanwhile
        srv.default = Action.hat_ok([CLOUD_ITEM], delay_s=0.4)
        probe: list[HatReview] = []
        t = threading.Thread(target=lambda: probe.append(review(fb)))
        t.start()
        deadline = time.monotonic() + 5
        while srv.count < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert review(fb).outcome.status == "breaker_open"
        t.join()
        assert probe[0].outcome.status == "cloud"
        assert fb.breaker.state == "closed" and srv.count == 4
        assert review(fb).outcome.status == "cloud"
        m = fb.metrics()
        assert m["breaker"] == {"state": "closed", "consecutive_failures": 0, "opened_total": 2}
        assert m["outcomes"]["breaker_open"] == 7
        text = prometheus_text(m)
        assert "safety_edge_fallback_breaker_state 0" in text
        assert "safety_edge_fallback_breaker_opened_total 2" in text
        assert 'safety_edge_fallback_outcomes_total{status="breaker_open"} 7' in text


# -- deadline ---------------------------------------------------------------------------------


def test_slow_server_returns_local_result_within_deadline(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.hat_ok([CLOUD_ITEM], delay_s=5.0)
    with FallbackClient(config=config(srv.base_url, deadline_s=0.5), data_dir=tmp_path) as fb:
        t0 = time.monotonic()
        r = review(fb)
        took = time.monotonic() - t0
        assert r.outcome.status == "timeout" and r.items == LOCAL
        assert 0.45 <= took < 0.5 + EPS, took
        # the caller's own remaining time is tighter than deadline_s
        t0 = time.monotonic()
        r = review(fb, timeout_s=0.2)
        took = time.monotonic() - t0
        assert r.outcome.status in ("timeout", "busy") and took < 0.2 + EPS, took
        # no time left at all: nothing is sent
        before = srv.count
        r = review(fb, timeout_s=0.0)
        assert r.outcome.status == "timeout" and srv.count == before
        assert fb.metrics()["failures"].get("deadline", 0) >= 1
    assert srv.count <= 2, "a timeout is not retried"


def test_dripping_server_cannot_hold_the_caller(srv: FaultServer, tmp_path: Path) -> None:
    """Each byte arrives before the read timeout, so httpx alone would wait ~10 s."""
    srv.default = Action.drip(interval_s=0.1)
    with FallbackClient(config=config(srv.base_url, deadline_s=0.6), data_dir=tmp_path) as fb:
        t0 = time.monotonic()
        r = review(fb)
        took = time.monotonic() - t0
        assert r.outcome.status == "timeout" and r.items == LOCAL
        assert took < 0.6 + EPS, took
        srv.close()  # ends the drip so close() below does not wait for it


def test_concurrency_cap_answers_busy_at_once(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.hat_ok([CLOUD_ITEM], delay_s=0.6)
    with FallbackClient(config=config(srv.base_url, max_concurrent=1), data_dir=tmp_path) as fb:
        first: list[HatReview] = []
        t = threading.Thread(target=lambda: first.append(review(fb)))
        t.start()
        deadline = time.monotonic() + 5
        while srv.count < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        r = review(fb)
        assert r.outcome.status == "busy" and time.monotonic() - t0 < 0.1 + EPS
        t.join()
        assert first[0].outcome.status == "cloud"
        assert fb.breaker.state == "closed" and fb.breaker.consecutive_failures == 0
    assert srv.count == 1


# -- budget ---------------------------------------------------------------------------------


def test_budget_stops_requests_and_survives_a_restart(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.hat_ok([CLOUD_ITEM])
    cfg = config(srv.base_url, daily_budget=3)
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        statuses = [review(fb).outcome.status for _ in range(5)]
        m = fb.metrics()
    assert statuses == ["cloud"] * 3 + ["budget_exhausted"] * 2
    assert srv.count == 3
    assert m["budget"]["used"] == 3 and m["budget"]["limit"] == 3
    assert m["breaker"]["state"] == "closed", "an exhausted budget is not the endpoint's fault"
    with FallbackClient(config=cfg, data_dir=tmp_path) as again:
        r = review(again)
        assert r.outcome.status == "budget_exhausted" and r.items == LOCAL
        assert again.metrics()["budget"]["used"] == 3
    assert srv.count == 3, "no request after a restart on the same day"


def test_retries_draw_from_the_budget(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.code(5000)
    cfg = config(srv.base_url, daily_budget=2, max_retries=5)
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        r = review(fb)
    assert srv.count == 2
    assert r.outcome.status == "budget_exhausted" and r.outcome.requests == 2


# -- fence and model failure --------------------------------------------------------------


def test_fence_failure_item_and_local_model_failure(srv: FaultServer, tmp_path: Path) -> None:
    poly = np.array([[20, 30], [60, 30], [60, 60], [20, 60]], np.float64)
    local = Detections(
        xyxy=np.array([[27, 30, 37, 50]], np.float32),
        scores=np.array([0.5], np.float32),
        class_ids=np.array([0], np.int32),
    )
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        srv.default = Action(
            "json",
            {
                "code": 0,
                "message": {"success": 0, "fail": 1},
                "result": [
                    {"target_num": 0, "location": [], "error": {"code": 4009, "details": "x"}}
                ],
            },
        )
        r = fb.review_fence(image_bgr=IMAGE, polygon=poly, local=local)
        assert r.outcome.status == "error" and r.outcome.detail.startswith("4009")
        assert r.sources == ["local"] and len(r.dets) == 1
        # the local model failed: the cloud's answer is the whole result
        srv.default = Action.fence_ok([{"left": 30, "top": 35, "width": 10, "height": 20}])
        r = fb.review_fence(image_bgr=IMAGE, polygon=poly, local=None)
        assert r.outcome.used and r.sources == ["cloud"]
        assert r.locations(with_source=True) == [
            {"left": 30, "top": 35, "width": 10, "height": 20, "source": "cloud"}
        ]
        req = srv.received[-1]
        assert req.sign_ok and req.path == "/v1/aiop/api/fc/ef-http/electron/fence"
        assert b'"area": "20,30,60,30,60,60,20,60"' in req.body
        # a failed local model with the cloud down: no result at all
        srv.default = Action.code(4010)
        r = fb.review_fence(image_bgr=IMAGE, polygon=poly, local=None)
        assert not r.outcome.used and len(r.dets) == 0


def test_model_failure_fallback_can_be_switched_off(srv: FaultServer, tmp_path: Path) -> None:
    cfg = config(srv.base_url, on_model_error=False)
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        r = fb.review_hat("workwear", image_bgr=IMAGE, local=None)
        assert r.outcome.status == "not_needed" and r.items == []
    assert srv.count == 0


def test_close_is_idempotent_and_refuses_later_calls(srv: FaultServer, tmp_path: Path) -> None:
    fb = FallbackClient(config=config(srv.base_url), data_dir=tmp_path)
    fb.close()
    fb.close()
    r = review(fb)
    assert r.outcome.status == "error" and r.items == LOCAL and srv.count == 0


def test_codes_outside_the_contract_share_one_failure_series(
    srv: FaultServer, tmp_path: Path
) -> None:
    """The failure counter's label comes from the endpoint's answer: a proxy answering a new
    number each time must not add a dict entry and a /metrics series per request (30,000
    series a month at the default daily budget). Contract codes keep their own label."""
    srv.script(*(Action.code(6000 + k) for k in range(20)), Action.code(4003))
    with FallbackClient(config=config(srv.base_url, max_retries=0), data_dir=tmp_path) as fb:
        for _ in range(21):
            review(fb)
        m = fb.metrics()
    assert srv.count == 21
    assert m["failures"] == {"other_code": 20, "4003": 1}
    assert prometheus_text(m).count("safety_edge_fallback_failures_total{") == 2
