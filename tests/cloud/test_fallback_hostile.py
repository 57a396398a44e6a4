"""The fallback against a hostile or misconfigured endpoint: a flood of a body (size
cap), an endless or dripping body (deadline between chunks, pool threads freed, close()
prompt), out-of-contract values in a well-formed answer (rejected before the merge), an
untrusted TLS certificate (``tls``, not retried), a private CA (``ca_file``) and the
warning for a clear-text base URL. Real servers on loopback (:mod:`tests.cloud.fault_server`,
real TLS with an ``openssl``-made PKI)."""

from __future__ import annotations

import logging
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cloud.client import MAX_ANSWER_BYTES, MAX_ANSWER_ITEMS
from edge.cloud.fallback import FallbackClient, HatReview
from edge.errors import ConfigError
from edge.types import Detections
from tests.cloud.fault_server import Action, FaultServer
from tests.cloud.test_fallback_faults import CLOUD_ITEM, EPS, IMAGE, LOCAL, config, review
from tests.mqtt.certs import Pki, make_pki


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer(app_key="key", secret="secret") as s:
        yield s


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _wait(cond: Any, timeout_s: float) -> float:
    """Seconds until ``cond()`` held (polled every 10 ms); ``inf`` when it never did."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.01)
    return float("inf")


# -- finding 1: the answer body is capped ---------------------------------------------------


def test_a_flooding_answer_is_cut_at_the_cap_and_memory_stays_flat(
    srv: FaultServer, tmp_path: Path
) -> None:
    size = 64 * 1024 * 1024
    srv.default = Action.flood(size=size)
    peak = [_rss_bytes()]
    base = peak[0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with FallbackClient(config=config(srv.base_url, deadline_s=10.0), data_dir=tmp_path) as fb:
            r = review(fb)
            failures = fb.metrics()["failures"]
    finally:
        done.set()
        sampler.join()
    assert r.outcome.status == "error" and r.items == LOCAL
    assert r.outcome.detail.startswith("protocol") and "over" in r.outcome.detail
    assert r.outcome.requests == 1, "a protocol error is not retried"
    assert failures == {"protocol": 1}
    rise = peak[0] - base
    assert rise < 16 * 1024 * 1024, f"RSS rose {rise / 2**20:.1f} MiB for a 64 MiB flood"
    # the client stopped reading: the server could not push much past the cap
    assert srv.flooded < MAX_ANSWER_BYTES + 16 * 1024 * 1024, srv.flooded


# -- finding 2: endless and dripping bodies end at the deadline -----------------------------


@pytest.mark.parametrize(
    "action",
    [Action.endless(interval_s=0.05), Action.drip(interval_s=0.3)],
    ids=["endless_chunked", "drip_every_0.3s"],
)
def test_an_endless_body_frees_the_pool_counts_for_the_breaker_and_close_is_prompt(
    srv: FaultServer, tmp_path: Path, action: Action
) -> None:
    srv.default = action
    cfg = config(srv.base_url, deadline_s=0.5, max_concurrent=2, max_retries=0, breaker_failures=3)
    fb = FallbackClient(config=cfg, data_dir=tmp_path)
    try:
        t0 = time.monotonic()
        r = review(fb)
        assert r.outcome.status == "timeout" and r.items == LOCAL
        assert time.monotonic() - t0 < 0.5 + EPS
        freed = _wait(lambda: fb.metrics()["inflight"] == 0, 3.0)
        assert freed < 1.0, f"the pool thread still reads the body {freed:.2f} s later"
        statuses = [review(fb).outcome.status for _ in range(3)]
        # never busy: each call gets a pool thread; 3 failures open the breaker
        assert statuses == ["timeout", "timeout", "breaker_open"], statuses
        assert fb.breaker.state == "open"
        assert srv.count == 3
        t0 = time.monotonic()
        closer = threading.Thread(target=fb.close, daemon=True)
        closer.start()
        closer.join(3.0)
        assert not closer.is_alive(), "close() blocked on a body that never ends"
        assert time.monotonic() - t0 < 1.0
    finally:
        srv.close()  # ends the body so a blocked close() (old code) can finish
        fb.close()


def test_close_stops_a_call_reading_an_endless_body(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.endless(interval_s=0.05)
    fb = FallbackClient(config=config(srv.base_url, deadline_s=30.0), data_dir=tmp_path)
    try:
        caller = threading.Thread(target=lambda: review(fb), daemon=True)
        caller.start()
        assert _wait(lambda: srv.count == 1, 5.0) < 5.0
        time.sleep(0.2)  # reading the body now
        t0 = time.monotonic()
        closer = threading.Thread(target=fb.close, daemon=True)
        closer.start()
        closer.join(3.0)
        assert not closer.is_alive(), "close() waits for the 30 s deadline"
        assert time.monotonic() - t0 < 1.0
        caller.join(3.0)
        assert not caller.is_alive()
    finally:
        srv.close()
        fb.close()


# -- finding 3: answers are validated before the merge --------------------------------------


def _hat(box: list[Any], score: Any = 0.9, classname: Any = "red_hat") -> dict[str, Any]:
    return {"box": box, "classname": classname, "score": score}


BAD_HAT_ANSWERS: dict[str, list[dict[str, Any]]] = {
    "nan_score": [_hat([15, 39, 25, 49], float("nan"))],
    "inf_score": [_hat([15, 39, 25, 49], float("inf"))],
    "negative_score": [_hat([15, 39, 25, 49], -7.5)],
    "score_above_1": [_hat([15, 39, 25, 49], 1.5)],
    "inverted_box": [_hat([49, 25, 39, 15])],
    "zero_height_box": [_hat([20, 39, 20, 49])],
    "nan_coordinate": [_hat([float("nan"), 1, 5, 5])],
    "huge_coordinate": [_hat([0, 0, 10**12, 10])],
    "long_classname": [_hat([15, 39, 25, 49], 0.9, "X" * 100_000)],
    "unknown_classname": [_hat([15, 39, 25, 49], 0.9, "banana")],
    "classname_object": [_hat([15, 39, 25, 49], 0.9, {"$gt": 1})],
    "too_many_items": [_hat([1, 1, 5, 5])] * (MAX_ANSWER_ITEMS + 1),
}


@pytest.mark.parametrize("name", sorted(BAD_HAT_ANSWERS))
def test_out_of_contract_hat_answers_are_rejected_and_the_local_result_stands(
    srv: FaultServer, tmp_path: Path, name: str
) -> None:
    srv.default = Action.hat_ok(BAD_HAT_ANSWERS[name])
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        r = review(fb)
        m = fb.metrics()
    assert r.outcome.status == "error", r.outcome
    assert r.outcome.detail.startswith("protocol"), r.outcome.detail
    assert len(r.outcome.detail) < 500
    assert r.items == LOCAL and r.sources == ["local", "local"]
    assert m["failures"] == {"protocol": 1} and srv.count == 1, "not retried"


def test_workwear_answers_must_use_workwear_classnames(srv: FaultServer, tmp_path: Path) -> None:
    local = [{"box": [15, 39, 25, 49], "classname": "blue", "score": 0.45}]
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        srv.default = Action.hat_ok([_hat([15, 39, 25, 49], 0.9, "red_hat")])
        r = fb.review_hat("workwear", image_bgr=IMAGE, local=local)  # type: ignore[arg-type]
        assert r.outcome.status == "error" and r.outcome.detail.startswith("protocol")
        srv.default = Action.hat_ok([_hat([15, 39, 25, 49], 0.9, "red")])
        r = fb.review_hat("workwear", image_bgr=IMAGE, local=local)  # type: ignore[arg-type]
        assert r.outcome.status == "cloud" and r.items[0]["classname"] == "red"


def test_a_valid_box_wholly_outside_the_image_is_dropped(srv: FaultServer, tmp_path: Path) -> None:
    srv.default = Action.hat_ok([_hat([70, 70, 80, 80]), CLOUD_ITEM])
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        r: HatReview = review(fb)
    assert r.outcome.status == "cloud"
    assert [it["box"] for it in r.items] == [CLOUD_ITEM["box"], LOCAL[0]["box"]]


FENCE_LOCAL = Detections(
    xyxy=np.array([[27, 30, 37, 50]], np.float32),
    scores=np.array([0.5], np.float32),
    class_ids=np.array([0], np.int32),
)
FENCE_POLY = np.array([[0, 0], [64, 0], [64, 64], [0, 64]], np.float64)


@pytest.mark.parametrize(
    "locations",
    [
        [{"left": 50, "top": 10, "width": -40, "height": 20}],
        [{"left": 50, "top": 10, "width": 10, "height": 0}],
        [{"left": float("nan"), "top": 10, "width": 10, "height": 10}],
        [{"left": 30, "top": 35, "width": 5, "height": 10}] * (MAX_ANSWER_ITEMS + 1),
    ],
    ids=["negative_width", "zero_height", "nan_left", "too_many_locations"],
)
def test_out_of_contract_fence_answers_are_rejected(
    srv: FaultServer, tmp_path: Path, locations: list[dict[str, Any]]
) -> None:
    srv.default = Action.fence_ok(locations)
    with FallbackClient(config=config(srv.base_url), data_dir=tmp_path) as fb:
        r = fb.review_fence(image_bgr=IMAGE, polygon=FENCE_POLY, local=FENCE_LOCAL)
    assert r.outcome.status == "error" and r.outcome.detail.startswith("protocol"), r.outcome
    assert r.sources == ["local"] and r.dets.xyxy.tolist() == FENCE_LOCAL.xyxy.tolist()


# -- findings 4 and 5: TLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_srv(pki: Pki) -> Iterator[FaultServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    with FaultServer(app_key="key", secret="secret", tls=ctx) as s:
        s.default = Action.hat_ok([CLOUD_ITEM])
        yield s


def test_an_untrusted_certificate_is_a_tls_error_and_not_retried(
    tls_srv: FaultServer, tmp_path: Path
) -> None:
    cfg = config(tls_srv.base_url, max_retries=2)
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        r = review(fb)
        m = fb.metrics()
    assert r.outcome.status == "error" and r.outcome.detail.startswith("tls"), r.outcome
    assert r.outcome.requests == 1, "a certificate failure is not transient: no retry"
    assert m["requests"] == 1 and m["retries"] == 0 and m["failures"] == {"tls": 1}


def test_a_private_ca_is_trusted_with_ca_file(
    tls_srv: FaultServer, pki: Pki, tmp_path: Path
) -> None:
    cfg = config(tls_srv.base_url, ca_file=str(pki.ca_cert))
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        r = review(fb)
    assert r.outcome.status == "cloud", r.outcome
    assert tls_srv.count == 1 and tls_srv.received[0].sign_ok
    # the wrong CA: still a tls failure
    cfg = config(tls_srv.base_url, ca_file=str(pki.other_ca_cert))
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        assert review(fb).outcome.detail.startswith("tls")


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = config("https://127.0.0.1:9", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="ca_file"):
        FallbackClient(config=cfg, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("base_url", "warned"),
    [
        ("http://203.0.113.7:8080", True),
        ("http://cloud.example.com", True),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
        ("https://203.0.113.7", False),
    ],
)
def test_clear_text_to_a_remote_host_is_warned_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, base_url: str, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="edge.cloud"):
        FallbackClient(config=config(base_url), data_dir=tmp_path).close()
    hits = [r for r in caplog.records if "unencrypted" in r.getMessage()]
    assert len(hits) == (1 if warned else 0), [r.getMessage() for r in caplog.records]
    if warned:
        assert hits[0].levelno == logging.WARNING
