"""A damaged MQTT outbox does not stop the gateway from starting.

Before: :class:`~edge.mqtt.publisher.Publisher` is built at gateway start and its outbox
scanned every row, so a file the SD card had garbled raised ``OutboxError`` out of
:meth:`GatewayService.start`; systemd gave up after ten restarts and the site had no
cameras until someone came. Now the file is moved aside and the gateway runs.

Real parts: the whole gateway in-process (a tiny planted ONNX model run by onnxruntime,
a still video read by OpenCV), a real mosquitto on a free loopback port with a real
subscriber, real SQLite files.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import config_from_mapping
from edge.service.gateway import OUTBOX_FILENAME, GatewayService
from tests.mqtt.broker import MOSQUITTO, MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.test_stall_and_alerts import camera, still_video, write_people_model

GW = "gw-outbox-dmg"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (make deps)")
    (tmp_path / "broker").mkdir()
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


def test_a_garbled_outbox_is_moved_aside_and_the_gateway_runs(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Random bytes in ``outbox.sqlite3``: the gateway starts, its camera runs, the
    alerts it publishes at start reach the broker, the ``mqtt_outbox_corrupt`` alert and
    ``safety_edge_mqtt_outbox_corrupt_total 1`` tell operators, one error line names the
    moved-aside file, and the garbage is kept there byte for byte."""
    caplog.set_level(logging.INFO)
    write_people_model(tmp_path / "models", "people")
    video = str(still_video(tmp_path / "still.avi"))
    data = tmp_path / "data"
    data.mkdir()
    garbage = random.Random(9).randbytes(96 * 1024)
    (data / OUTBOX_FILENAME).write_bytes(garbage)
    cfg = config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(data),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "dmg"},
            "cameras": [camera("dock", video, loop=True)],
        }
    )

    with Subscriber(
        host=broker.host, port=broker.port, topics=[f"dmg/{GW}/alerts"], client_id="dmg-gw"
    ) as sub:
        service = GatewayService(config=cfg)
        service.start()
        try:
            dock = service.cameras["dock"].pipeline
            assert dock is not None
            assert wait(lambda: dock.metrics()["frames_processed"] >= 1, 20, interval=0.05)
            metrics = service.metrics_text()
            assert sub.wait_for(lambda: len(sub.on_topic("/alerts")) >= 3, 10)
        finally:
            report = service.stop()
        alerts = [m.json()["alert"] for m in sub.on_topic("/alerts")]

    assert report["flushed"], report
    corrupt = [a for a in alerts if a["kind"] == "mqtt_outbox_corrupt"]
    assert len(corrupt) == 1, alerts
    assert corrupt[0]["severity"] == "critical" and corrupt[0]["lost"] is None
    assert ("camera_unavailable", "dock", "resolved") in {
        (a["kind"], a["key"], a["state"]) for a in alerts
    }
    assert "safety_edge_mqtt_outbox_corrupt_total 1" in metrics, metrics
    aside = sorted(data.glob(f"{OUTBOX_FILENAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert corrupt[0]["moved_to"] == str(aside[0])
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and OUTBOX_FILENAME in r.getMessage()
    ]
    assert len(errors) == 1 and f"moved it aside to {str(aside[0])!r}" in errors[0], errors
