"""Hang detection of the in-process API's event loop (:class:`GatewayService`).

The API thread can be alive while a coroutine blocks its event loop (a synchronous call
inside an ``async def``, a deadlock) and every client times out. The app's
:class:`~edge.api.app.LoopHeartbeat` beats every second while the loop turns; a loop
without a beat for more than ``service.stall_timeout_s`` is a problem and ``run``
returns 1; an idle API keeps beating and is not.

Real parts: the whole gateway (a tiny planted ONNX model run by onnxruntime on a still
video read by OpenCV), uvicorn on a free loopback port, a unix datagram socket standing
in for systemd's ``NOTIFY_SOCKET``, real SQLite files. The blocked loop is a real one:
the test adds to the running app a route whose ``async def`` handler calls
``time.sleep`` until the test releases it, and calls it over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from edge.api.app import LoopHeartbeat, build_app
from edge.config import config_from_mapping
from edge.service.gateway import GatewayService
from edge.service.metrics import prometheus_text
from edge.service.notify import Notifier
from tests.mqtt.broker import free_port
from tests.polling import wait
from tests.service.gateway_proc import NotifySocket
from tests.service.test_stall_and_alerts import (
    FAST,
    camera,
    still_video,
    write_people_model,
)

STALL_S = 2.0  # service.stall_timeout_s: > 1 s (minimum) and > 2 x the camera's 0.5 s timeouts
AGE_RE = re.compile(r"^safety_edge_api_loop_age_seconds (\S+)$", re.M)
STUCK_RE = re.compile(r"API event loop stuck for (\d+) s \(no progress since (\S+Z)\)")


# -- the heartbeat alone ---------------------------------------------------------------------
def test_heartbeat_age_counts_from_the_start_until_the_first_beat() -> None:
    hb = LoopHeartbeat()
    assert hb.last is None
    assert hb.age(since=100.0, now=103.5) == 3.5  # no beat yet: from the start
    hb.beat()
    assert hb.last is not None
    assert hb.age(since=0.0, now=hb.last + 2.0) == 2.0  # from the beat, not the start
    assert hb.age(since=0.0, now=hb.last - 1.0) == 0.0  # never negative
    with pytest.raises(ValueError, match="interval_s"):
        LoopHeartbeat(interval_s=0)


def test_lifespan_runs_the_heartbeat_and_cancels_it_cleanly(tmp_path: Path) -> None:
    """The app's own lifespan (no server): the heartbeat task beats while the app runs,
    and after shutdown no task of the app is left on the loop."""
    cfg = config_from_mapping({"data_dir": str(tmp_path / "data")})
    app = build_app(cfg, detectors={"fence": None, "hardhat": None, "workwear": None})
    hb = app.state.loop_heartbeat
    assert isinstance(hb, LoopHeartbeat) and hb.last is None

    async def main() -> tuple[set[str], set[asyncio.Task[object]]]:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.05)
            names = {t.get_name() for t in asyncio.all_tasks()}
        return names, asyncio.all_tasks() - {asyncio.current_task()}

    names, left = asyncio.run(main())
    assert {"edge-loop-heartbeat", "edge-monitoring"} <= names
    assert hb.last is not None
    assert left == set(), left


def test_metric_only_with_an_api() -> None:
    text = prometheus_text([], tasks_up={}, api_loop_age_s=0.25)
    assert "# TYPE safety_edge_api_loop_age_seconds gauge" in text
    m = AGE_RE.search(text)
    assert m is not None and float(m.group(1)) == 0.25
    assert "safety_edge_api_loop_age_seconds" not in prometheus_text([], tasks_up={})


# -- a real gateway ----------------------------------------------------------------------------
@dataclass
class Running:
    service: GatewayService
    notify: NotifySocket
    stop: threading.Event
    rc: list[int]
    runner: threading.Thread

    @property
    def base(self) -> str:
        url = self.service.api_url
        assert url is not None
        return url


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Running]:
    """A started gateway (one camera, the API) with ``run`` supervising in a thread."""
    write_people_model(tmp_path / "models", "people")
    video = still_video(tmp_path / "still.avi")
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-api-stall",
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "api": {"host": "127.0.0.1", "port": free_port(), "workers": 1},
            "service": {
                "stall_timeout_s": STALL_S,
                "stop_timeout_s": 6,
                "flush_timeout_s": 1,
                "state_interval_s": 0.2,
            },
            "cameras": [camera("dock", str(video), loop=True, realtime=True, target_fps=5, **FAST)],
        }
    )
    notify = NotifySocket()
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"})
    service = GatewayService(config=cfg, notifier=notifier)
    stop = threading.Event()
    rc: list[int] = []
    runner = threading.Thread(target=lambda: rc.append(service.run(stop)), daemon=True)
    try:
        service.start()
        runner.start()
        yield Running(service=service, notify=notify, stop=stop, rc=rc, runner=runner)
    finally:
        stop.set()
        service.stop()
        runner.join(5)
        notify.close()


def test_an_idle_api_is_not_a_stall(gateway: Running) -> None:
    """Nobody calls the API for twice the stall timeout: the heartbeat keeps the loop's
    age fresh, so no problem, ``run`` goes on, the watchdog is pinged; ``/healthz``
    and ``/metrics`` answer with the loop's age."""
    service = gateway.service
    t0 = time.monotonic()
    while time.monotonic() < t0 + 2 * STALL_S:
        assert service.problems() == []
        time.sleep(0.1)
    assert gateway.runner.is_alive() and gateway.rc == []
    assert wait(lambda: gateway.notify.lines().count("WATCHDOG=1") >= 4, 10, interval=0.05)

    health = httpx.get(f"{gateway.base}/healthz", timeout=10).json()
    assert health["problems"] == [], health
    text = httpx.get(f"{gateway.base}/metrics", timeout=10).text
    assert "# HELP safety_edge_api_loop_age_seconds " in text
    assert "# TYPE safety_edge_api_loop_age_seconds gauge" in text
    m = AGE_RE.search(text)
    assert m is not None, text[-2000:]
    assert 0.0 <= float(m.group(1)) < STALL_S  # the loop answered this very request
    assert re.search(r'^safety_edge_camera_progress_age_seconds\{camera="dock"', text, re.M)


def test_a_blocked_api_loop_makes_run_exit_1(gateway: Running) -> None:
    """An ``async def`` handler calls ``time.sleep`` until released: the loop stops, a
    client times out, ``run`` returns 1 and says why (problems, sd_notify status); the
    stuck loop cannot answer ``/healthz`` itself, but the same health and metrics,
    read in-process, show it. Released, the loop beats again and stops cleanly."""
    service, app = gateway.service, gateway.service.app
    entered, release = threading.Event(), threading.Event()

    async def block(_request: Request) -> Response:
        entered.set()
        deadline = time.monotonic() + 60.0  # bounded, should the test die first
        while not release.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)  # synchronous sleep inside async def: the loop is blocked
        return PlainTextResponse("released")

    app.router.routes.insert(0, Route("/test/block-loop", block, methods=["GET"]))
    outcome: list[str] = []

    def client() -> None:
        try:
            httpx.get(f"{gateway.base}/test/block-loop", timeout=1.0)
            outcome.append("answered")
        except httpx.TimeoutException:
            outcome.append("timed out")

    caller = threading.Thread(target=client, daemon=True)
    try:
        assert service.problems() == []
        caller.start()
        assert entered.wait(10), "the blocking route was not reached"
        since = time.time()
        gateway.runner.join(30)
        assert gateway.rc == [1], "run() did not notice the stuck API loop"
        caller.join(10)
        assert outcome == ["timed out"]

        problems = service.problems()
        assert len(problems) == 1, problems
        m = STUCK_RE.fullmatch(problems[0])
        assert m is not None, problems[0]
        assert int(m.group(1)) >= STALL_S
        stamp = datetime.fromisoformat(m.group(2).replace("Z", "+00:00")).timestamp()
        assert since - 3 <= stamp <= since + 1  # the last beat, at most ~1 s before
        assert wait(
            lambda: any(
                line.startswith("STATUS=unhealthy: API event loop stuck for")
                for line in gateway.notify.lines()
            ),
            5,
            interval=0.05,
        ), gateway.notify.lines()
        with pytest.raises(httpx.TimeoutException):  # the stuck loop answers nobody
            httpx.get(f"{gateway.base}/healthz", timeout=1.0)
        health = service.health()  # what /healthz would say, read in-process
        assert health["status"] == "degraded"
        assert health["problems"][0].startswith("API event loop stuck for")
        age = AGE_RE.search(service.metrics_text())
        assert age is not None and float(age.group(1)) > STALL_S
    finally:
        release.set()

    assert wait(lambda: service.problems() == [], 15, interval=0.05), service.problems()
    assert httpx.get(f"{gateway.base}/healthz", timeout=10).json()["problems"] == []
    report = service.stop()
    assert report["api_stopped"] is True, report
