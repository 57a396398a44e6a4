"""``camera_offline`` is raised only after ``offline_alert_after_s`` offline without a break.

The whole gateway in-process (:class:`GatewayService`, its :meth:`~GatewayService.run`
loop in a thread) with real parts: a tiny planted ONNX model run by onnxruntime, video
files read by OpenCV (a looped file that is deleted goes offline at its next wrap and
comes back when it is put in place again -- the reader's real reconnect path), a real
mosquitto on a free loopback port with a real subscriber, real SQLite files.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from edge.config import config_from_mapping
from edge.errors import ConfigError
from edge.service.gateway import GatewayService
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.running import running_gateway
from tests.service.test_alerts_removed import remembered
from tests.service.test_stall_and_alerts import (
    FAST,
    camera,
    still_video,
    write_people_model,
)

GW = "gw-flaky"
TOPIC = f"fl/{GW}/alerts"
DELAY = 4.0  # flaky's offline_alert_after_s


def offline_alerts(sub: Subscriber, camera_name: str) -> list[dict[str, Any]]:
    """The ``camera_offline`` alerts of ``camera_name`` received, in order (envelope
    ``time_ms`` copied into each)."""
    out = []
    for msg in sub.on_topic("/alerts"):
        body = msg.json()
        a = body["alert"]
        if a["kind"] == "camera_offline" and a["key"] == camera_name:
            out.append({**a, "time_ms": body["time_ms"]})
    return out


def put_video(path: Path) -> None:
    """Write the still video beside ``path`` and rename it into place, so the reader
    never opens a half-written file."""
    tmp = path.with_name("writing-" + path.name)
    still_video(tmp, frames=4)
    os.replace(tmp, path)


def camera_up(text: str, name: str) -> float:
    m = re.search(rf'^safety_edge_camera_up\{{camera="{name}"\}} (\S+)$', text, re.M)
    assert m is not None, text[:2000]
    return float(m.group(1))


def test_config_offline_alert_after_s() -> None:
    cam = camera("gate", "x.avi")
    assert config_from_mapping({"cameras": [cam]}).cameras[0].offline_alert_after_s == 60.0
    got = config_from_mapping({"cameras": [{**cam, "offline_alert_after_s": 0}]})
    assert got.cameras[0].offline_alert_after_s == 0.0
    for bad, words in ((-1, "greater than or equal to 0"), (86_401, "less than or equal")):
        with pytest.raises(ConfigError, match=r"cameras\.0\.offline_alert_after_s: .*" + words):
            config_from_mapping({"cameras": [{**cam, "offline_alert_after_s": bad}]})


def test_a_camera_is_alerted_only_when_offline_longer_than_its_delay(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``flaky`` (delay 4 s): its video is deleted and put back within about a second --
    ``/healthz`` and ``/metrics`` show it offline at once, but no alert is queued, even
    after the delay has passed. Deleted again and left out for longer than the delay:
    exactly one ``active`` alert, raised no earlier than the delay, remembered; put
    back: exactly one ``resolved``. ``now`` (delay 0, video missing): ``active`` at once,
    as before. ``patient`` (default 60 s, video missing): offline all along, never
    alerted during the test."""
    write_people_model(tmp_path / "models", "people")
    video = tmp_path / "flaky.avi"
    put_video(video)
    data = tmp_path / "data"
    fast = {**FAST, "backoff_max_s": 0.5}
    cfg = config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(data),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "fl"},
            "cameras": [
                camera("flaky", str(video), loop=True, offline_alert_after_s=DELAY, **fast),
                camera("now", str(tmp_path / "a.avi"), offline_alert_after_s=0, **fast),
                camera("patient", str(tmp_path / "b.avi"), **fast),
            ],
        }
    )
    service = GatewayService(config=cfg)

    def online(name: str) -> Any:
        return service.health()["cameras"][name]["online"]

    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="fl-1") as sub:
        with running_gateway(service) as gateway:
            assert wait(lambda: online("flaky") is True, 20, interval=0.05)
            # delay 0: raised at once, as before
            assert sub.wait_for(lambda: len(offline_alerts(sub, "now")) == 1, 10)

            # 1. a blip shorter than the delay: shown at once, never alerted
            video.unlink()
            assert wait(lambda: online("flaky") is False, 10, interval=0.05)
            t_off = time.monotonic()
            health = service.health()["cameras"]["flaky"]
            assert health["offline_alert"] is False and health["offline_for_s"] >= 0
            assert camera_up(service.metrics_text(), "flaky") == 0
            put_video(video)
            assert wait(lambda: online("flaky") is True, 10, interval=0.05)
            blip = time.monotonic() - t_off
            assert blip < DELAY - 1, f"blip of {blip:.1f} s: too slow to test the delay"
            assert "offline_for_s" not in service.health()["cameras"]["flaky"]
            time.sleep(t_off + DELAY + 1.5 - time.monotonic())  # past the delay
            assert offline_alerts(sub, "flaky") == []
            assert ("camera_offline", "flaky", "flaky", None) not in remembered(data)

            # 2. offline for longer than the delay: one active, then one resolved
            video.unlink()
            assert wait(lambda: online("flaky") is False, 10, interval=0.05)
            t_off_wall = time.time()
            assert sub.wait_for(lambda: len(offline_alerts(sub, "flaky")) >= 1, DELAY + 10)
            assert service.health()["cameras"]["flaky"]["offline_alert"] is True
            assert ("camera_offline", "flaky", "flaky", None) in remembered(data)
            time.sleep(2.0)  # more passes of run(): nothing more
            assert len(offline_alerts(sub, "flaky")) == 1
            put_video(video)
            assert wait(lambda: online("flaky") is True, 10, interval=0.05)
            assert sub.wait_for(lambda: len(offline_alerts(sub, "flaky")) >= 2, 10)
            assert ("camera_offline", "flaky", "flaky", None) not in remembered(data)

            patient = service.health()["cameras"]["patient"]
            assert patient["online"] is False and patient["offline_alert"] is False
            assert patient["offline_for_s"] >= 2 * DELAY
            assert camera_up(service.metrics_text(), "patient") == 0
        report = gateway.report
        time.sleep(0.5)  # anything late would be here by now
        flaky = offline_alerts(sub, "flaky")
        now = offline_alerts(sub, "now")
        patient_alerts = offline_alerts(sub, "patient")

    assert gateway.rc == [0]
    assert report["flushed"], report
    assert [a["state"] for a in flaky] == ["active", "resolved"], flaky
    active, resolved = flaky
    assert active["severity"] == "warning" and active["camera"] == "flaky"
    assert re.fullmatch(r"offline for \d+ s: .+", active["message"]), active
    assert active["time_ms"] / 1e3 >= t_off_wall + DELAY - 0.5, (active, t_off_wall)
    assert resolved["message"] == "receiving frames"
    assert [a["state"] for a in now] == ["active"], now
    assert "offline for" not in now[0]["message"]  # the source's reason, as before
    assert patient_alerts == []
