"""The retained ``online`` status never announces an empty inventory while the gateway
starts: the publisher connects only once the models are loaded and the camera tasks
built (on a Jetson building TensorRT engines that used to be minutes of
``"cameras": []``).

Real parts: a real mosquitto on a free loopback port with a real subscriber (subscribed
before the gateway starts), tiny planted ONNX models run by onnxruntime (several, so
loading takes a while as it does on a gateway), a looped video read by OpenCV, real
SQLite files.
"""

from __future__ import annotations

from pathlib import Path

from edge.config import config_from_mapping
from edge.service.gateway import GatewayService
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.test_stall_and_alerts import camera, still_video, write_people_model

GW = "gw-inv"
CAMERAS = ("dock", "gate", "yard")


def test_no_online_status_without_the_configured_cameras(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    video = still_video(tmp_path / "still.avi")
    cams = []
    for i, name in enumerate(CAMERAS):
        write_people_model(tmp_path / "models", f"people{i}")
        cam = camera(name, str(video), loop=True, target_fps=5)
        cam["tasks"]["fence"]["model"] = f"people{i}"
        cams.append(cam)
    cfg = config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": None, "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "iv"},
            "cameras": cams,
        }
    )
    topic = f"iv/{GW}/status"
    with Subscriber(host=broker.host, port=broker.port, topics=[topic], client_id="s1") as sub:
        with GatewayService(config=cfg):
            assert wait(
                lambda: any(m.json()["state"] == "online" for m in sub.on_topic("/status")), 10
            )
        statuses = [m.json() for m in sub.on_topic("/status")]
    online = [s for s in statuses if s["state"] == "online"]
    assert online, statuses
    for s in online:  # the very first one included
        assert s["cameras"] == sorted(CAMERAS), s
        assert sorted(s["models"]) == ["people0", "people1", "people2"], s
        assert [t["task"] for t in s["tasks"]] == ["fence"] * 3, s
    assert statuses[-1]["state"] == "offline"
