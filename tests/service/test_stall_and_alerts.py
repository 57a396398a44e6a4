"""Unattended operation of the whole gateway in-process (:class:`GatewayService`):

- hang detection: a camera whose pipeline thread is alive but stuck is a problem
  (``run`` returns 1, ``/healthz`` and ``/metrics`` show it, the sd_notify status says
  it), while cameras that are offline and reconnecting are not;
- availability alerts: ``task_unavailable`` / ``camera_unavailable`` raised by one start
  are resolved by the next start once the model is there.

Real parts: tiny planted ONNX models run by onnxruntime, a still video read by OpenCV,
uvicorn on a free loopback port, a unix datagram socket standing in for systemd's
``NOTIFY_SOCKET``, a real mosquitto and a real subscriber, real SQLite files. The stall
is a real one too: the test takes the camera detector's own lock (the one
``Detector.detect_with_timings`` takes after ``session.run`` to record its timings), so
the camera thread blocks inside the real detector the way a deadlock would; nothing is
replaced.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from edge.config import config_from_mapping
from edge.errors import ConfigError
from edge.service.gateway import GatewayService
from edge.service.notify import Notifier
from tests.mqtt.broker import MosquittoBroker, free_port
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output
from tests.service.gateway_proc import NotifySocket

SIZE = 416
PERSON = (100.0, 60.0, 180.0, 380.0)  # its anchor (bottom centre) is outside CORNER
CORNER = [[0.8, 0.0], [1.0, 0.0], [1.0, 0.2]]
FAST = {"open_timeout_s": 0.5, "read_timeout_s": 0.5}  # 2 x 0.5 < stall_timeout_s


def write_people_model(models: Path, name: str) -> None:
    x1, y1, x2, y2 = PERSON
    box = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    model = planted_model({"output0": yolov8_output([box], [[0.9]])})
    write_model_and_manifest(models, model, name=name, class_names=["person"])


def still_video(path: Path, frames: int = 8) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (SIZE, SIZE))
    for _ in range(frames):
        vw.write(np.full((SIZE, SIZE, 3), 128, np.uint8))
    vw.release()
    return path


def camera(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": source,
        "tasks": {"fence": {"zones": [{"name": "corner", "polygon": CORNER}]}},
        **extra,
    }


# -- config ---------------------------------------------------------------------------------
def test_stall_timeout_config() -> None:
    cams = [camera("dock", "x.avi", open_timeout_s=10, read_timeout_s=30)]
    assert config_from_mapping({}).service.stall_timeout_s == 120.0
    ok = config_from_mapping({"cameras": cams, "service": {"stall_timeout_s": 61}})
    assert ok.service.stall_timeout_s == 61
    off = config_from_mapping({"cameras": cams, "service": {"stall_timeout_s": None}})
    assert off.service.stall_timeout_s is None
    # a disabled camera's timeouts do not matter
    idle = [{**cams[0], "enabled": False}]
    assert config_from_mapping({"cameras": idle, "service": {"stall_timeout_s": 5}})
    for service, cameras, words in (
        ({"stall_timeout_s": 0.5}, [], "service.stall_timeout_s: Input should be greater"),
        ({"stall_timeout_s": 0}, [], "service.stall_timeout_s"),
        ({"stall_timeout_s": 7200}, [], "service.stall_timeout_s: Input should be less"),
        ({"stall_timeout_s": 60}, cams, "more than twice the longest open/read timeout"),
        ({}, [camera("d", "x.avi", read_timeout_s=70)], "camera 'd' (70 s)"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            config_from_mapping({"cameras": cameras, "service": service})


# -- hang detection --------------------------------------------------------------------------
def test_a_stuck_camera_makes_run_exit_1_offline_cameras_do_not(tmp_path: Path) -> None:
    """Phase 1 (3 s, twice the stall timeout): a missing video file and an RTSP camera
    on a closed port are offline and reconnecting -- no problem, the watchdog is pinged.
    Phase 2: the dock camera's thread blocks inside its detector; within the timeout
    plus a tick it is reported (log/sd_notify status, /healthz, /metrics) and ``run``
    returns 1. ``stop`` then gives up on that thread within its bound."""
    write_people_model(tmp_path / "models", "people")
    video = still_video(tmp_path / "still.avi")
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-stall",
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "api": {"host": "127.0.0.1", "port": free_port(), "workers": 1},
            "service": {
                "stall_timeout_s": 1.5,
                "stop_timeout_s": 4,
                "flush_timeout_s": 1,
                "state_interval_s": 0.2,
            },
            "cameras": [
                camera("dock", str(video), loop=True, realtime=True, target_fps=10, **FAST),
                camera("gone", str(tmp_path / "no-such.avi"), backoff_max_s=2, **FAST),
                camera("ipcam", f"rtsp://127.0.0.1:{free_port()}/live", backoff_max_s=2, **FAST),
            ],
        }
    )
    notify = NotifySocket()
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"})
    service = GatewayService(config=cfg, notifier=notifier)
    stop = threading.Event()
    rc: list[int] = []
    runner = threading.Thread(target=lambda: rc.append(service.run(stop)), daemon=True)
    lock: threading.Lock | None = None
    try:
        service.start()
        dock = service.cameras["dock"].pipeline
        assert dock is not None
        runner.start()
        assert wait(lambda: dock.metrics()["frames_processed"] >= 2, 20, interval=0.05)
        t1 = time.monotonic()
        while time.monotonic() < t1 + 3.0:
            assert service.problems() == []
            time.sleep(0.1)
        assert runner.is_alive()
        for name in ("gone", "ipcam"):
            m = service.cameras[name].pipeline.metrics()  # type: ignore[union-attr]
            assert m["online"] is False and m["reconnects"] >= 1, m
        assert notify.lines().count("WATCHDOG=1") >= 4

        lock = service.detectors["people"]._lock
        lock.acquire()
        since = time.time()
        runner.join(15)
        if runner.is_alive():
            stop.set()
            runner.join(5)
        assert rc == [1], "run() did not notice the stuck camera"

        problems = service.problems()
        assert len(problems) == 1, problems
        m = re.fullmatch(
            r"camera dock: pipeline stalled for (\d+) s \(no progress since "
            r"(\S+Z); stuck: the camera loop\)",
            problems[0],
        )
        assert m is not None, problems[0]
        assert int(m.group(1)) >= 1
        stamp = datetime.fromisoformat(m.group(2).replace("Z", "+00:00")).timestamp()
        assert since - 2 <= stamp <= since + 1
        # the datagram is sent before run() returns; the socket's reader thread may not
        # have taken it in yet
        assert wait(
            lambda: any(
                line.startswith("STATUS=unhealthy: camera dock: pipeline stalled for")
                for line in notify.lines()
            ),
            5,
            interval=0.05,
        ), notify.lines()
        base = service.api_url
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        assert health["status"] == "degraded"
        assert len(health["problems"]) == 1
        assert health["problems"][0].startswith("camera dock: pipeline stalled for")
        assert health["cameras"]["dock"]["progress_age_s"]["loop"] >= 1.5
        assert health["cameras"]["dock"]["progress_age_s"]["reader"] < 1.0
        assert health["cameras"]["gone"]["progress_age_s"]["loop"] < 1.0
        text = httpx.get(f"{base}/metrics", timeout=10).text
        age = re.search(
            r'^safety_edge_camera_progress_age_seconds\{camera="dock",thread="loop"\} (\S+)$',
            text,
            re.M,
        )
        assert age is not None and float(age.group(1)) >= 1.5, text[-2000:]

        report = service.stop()  # the dock thread is still stuck
        assert report["pipelines_stopped"] is False
        assert report["seconds"] < 4 + 1
    finally:
        if lock is not None and lock.locked():
            lock.release()
        stop.set()
        service.stop()
        notify.close()
    assert dock.wait(5)  # released: the thread ends


# -- availability alerts ---------------------------------------------------------------------
def start_and_stop(cfg: Any) -> None:
    service = GatewayService(config=cfg)
    service.start()
    try:
        dock = service.cameras["dock"].pipeline
        assert dock is not None
        assert wait(lambda: dock.metrics()["frames_processed"] >= 1, 20, interval=0.05)
    finally:
        report = service.stop()
    assert report["flushed"], report


def availability(sub: Subscriber, start: int = 0) -> list[tuple[str, str, str, str]]:
    """(kind, key, state, message) of the availability alerts received, in order."""
    out = []
    for msg in sub.on_topic("/alerts")[start:]:
        a = msg.json()["alert"]
        if a["kind"] in ("task_unavailable", "camera_unavailable"):
            out.append((a["kind"], a["key"], a["state"], a["message"]))
    return out


def test_unavailable_alerts_resolve_once_the_model_is_installed(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """First start: camera ``gate`` names a model that is not installed -> its task and
    the camera are raised (``active``); the rest -- including a disabled camera -- are
    published ``resolved``. The model is installed; the second start resolves both."""
    models = tmp_path / "models"
    write_people_model(models, "people")
    video = str(still_video(tmp_path / "still.avi"))
    gate = camera("gate", video, loop=True)
    gate["tasks"]["fence"]["model"] = "gatecam"
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-alerts",
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(models),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "al"},
            "cameras": [
                camera("dock", video, loop=True),
                gate,
                camera("spare", video, enabled=False),
            ],
        }
    )
    with Subscriber(
        host=broker.host, port=broker.port, topics=["al/gw-alerts/alerts"], client_id="al-sub"
    ) as sub:
        start_and_stop(cfg)
        assert sub.wait_for(lambda: len(availability(sub)) >= 6, 10)
        first = availability(sub)
        seen = len(sub.on_topic("/alerts"))

        write_people_model(models, "gatecam")
        start_and_stop(cfg)
        assert sub.wait_for(lambda: len(availability(sub, seen)) >= 6, 10)
        second = availability(sub, seen)

    states = {(k, key): state for k, key, state, _ in first}
    assert len(first) == 6 and states == {
        ("task_unavailable", "dock/fence"): "resolved",
        ("task_unavailable", "gate/fence"): "active",
        ("task_unavailable", "spare/fence"): "resolved",
        ("camera_unavailable", "dock"): "resolved",
        ("camera_unavailable", "gate"): "active",
        ("camera_unavailable", "spare"): "resolved",
    }, first
    why = {(k, key): msg for k, key, _, msg in first}
    assert "gatecam" in why[("task_unavailable", "gate/fence")]
    assert why[("camera_unavailable", "gate")] == "no task can run"
    assert why[("camera_unavailable", "spare")] == "disabled in the config"
    # second start: everything resolved, the two raised by the first start included
    assert len(second) == 6 and {(k, key) for k, key, _, _ in second} == set(states)
    assert {state for _, _, state, _ in second} == {"resolved"}, second
    assert dict(((k, key), msg) for k, key, _, msg in second)[("camera_unavailable", "gate")] == (
        "running fence"
    )
