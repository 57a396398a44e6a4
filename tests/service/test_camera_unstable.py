"""A camera that freezes shortly after each reconnect raises ``camera_unstable``.

Such a camera is shown online most of the time (it is declared offline only after
``read_timeout_s`` without a frame and comes back at the next connect), so the
``camera_offline`` alert, which needs ``offline_alert_after_s`` offline without a break,
never fires. The whole gateway in-process with real parts: a real MJPEG server on a free
loopback port that, per connection, sends 1 s of frames and then holds the connection
silent (the audit's flapping source), OpenCV reading it, a tiny planted ONNX model, a
real mosquitto with a real subscriber, real SQLite files. Then the server streams
steadily and the alert is resolved after a calm window.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.config import config_from_mapping
from edge.errors import ConfigError
from edge.service.gateway import GatewayService
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.running import running_gateway
from tests.service.test_stall_and_alerts import camera, write_people_model
from tests.stream.media import ScriptedMjpeg, mjpeg_part

GW = "gw-flap"
WINDOW = 8.0


class FlappingMjpeg(ScriptedMjpeg):
    """Per connection: ``burst_s`` of 10 fps JPEG frames, then silence while ``flapping``
    (the connection is held open); frames for ever once ``flapping`` is cleared."""

    def __init__(self, burst_s: float = 1.0) -> None:
        self.burst_s = burst_s
        self.flapping = threading.Event()
        self.flapping.set()
        ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
        assert ok
        self._jpg = buf.tobytes()
        super().__init__()

    def script(self, conn: socket.socket) -> None:
        t0 = time.monotonic()
        while not self.closed.is_set():
            if self.flapping.is_set() and time.monotonic() - t0 > self.burst_s:
                time.sleep(0.1)  # frozen: the connection stays open, silent
                continue
            conn.sendall(mjpeg_part(self._jpg))
            time.sleep(0.1)


def test_config_unstable_keys() -> None:
    c = config_from_mapping({"cameras": [camera("a", "x.avi")]}).cameras[0]
    assert (c.unstable_window_s, c.unstable_reconnects, c.unstable_offline_ratio) == (
        600.0,
        10,
        0.5,
    )
    off = camera("a", "x.avi", unstable_reconnects=None, unstable_offline_ratio=None)
    assert config_from_mapping({"cameras": [off]}).cameras[0].unstable_reconnects is None
    for bad in (
        {"unstable_window_s": 2},
        {"unstable_offline_ratio": 0},
        {"unstable_reconnects": 0},
    ):
        with pytest.raises(ConfigError):
            config_from_mapping({"cameras": [camera("a", "x.avi", **bad)]})


def alerts(sub: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [m.json()["alert"] for m in sub.on_topic("/alerts") if m.json()["alert"]["kind"] == kind]


def test_a_flapping_camera_raises_camera_unstable_and_resolves_when_stable(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    write_people_model(tmp_path / "models", "people")
    server = FlappingMjpeg()
    cfg = config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "fp"},
            "cameras": [
                camera(
                    "flap",
                    server.url,
                    read_timeout_s=1,
                    open_timeout_s=2,
                    backoff_max_s=0.5,
                    offline_alert_after_s=8,
                    target_fps=None,
                    unstable_window_s=WINDOW,
                    unstable_reconnects=3,
                )
            ],
        }
    )
    service = GatewayService(config=cfg)
    with Subscriber(
        host=broker.host, port=broker.port, topics=[f"fp/{GW}/#"], client_id="s"
    ) as sub:
        try:
            with running_gateway(service) as gateway:
                t0 = time.monotonic()
                raised = wait(lambda: len(alerts(sub, "camera_unstable")) >= 1, 25)
                assert raised, server.connections
                raised_after = time.monotonic() - t0
                a = alerts(sub, "camera_unstable")[0]
                assert a["state"] == "active" and a["key"] == "flap" and a["camera"] == "flap"
                assert a["reconnects"] >= 3 and a["window_s"] == WINDOW
                assert "reconnect(s)" in a["message"]
                h = service.health()["cameras"]["flap"]
                assert h["unstable"] is True
                assert service.health()["status"] == "degraded"
                assert alerts(sub, "camera_offline") == []  # never offline 8 s without a break
                # Stable from now on: resolved once a whole window is calm.
                server.flapping.clear()
                t1 = time.monotonic()
                assert wait(lambda: len(alerts(sub, "camera_unstable")) >= 2, 3 * WINDOW + 10)
                resolved_after = time.monotonic() - t1
                r = alerts(sub, "camera_unstable")[1]
                assert r["state"] == "resolved" and r["key"] == "flap"
                assert "unstable" not in service.health()["cameras"]["flap"]
                assert resolved_after >= WINDOW / 2, resolved_after
                print(
                    f"raised after {raised_after:.1f} s, resolved {resolved_after:.1f} s after "
                    f"the stream became stable; server connections {server.connections}"
                )
        finally:
            server.close()
    assert gateway.rc == [0]
    assert len(alerts(sub, "camera_unstable")) == 2
