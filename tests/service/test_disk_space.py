"""Free disk space of ``data_dir``: ``safety_edge_data_free_bytes`` and ``disk_low``.

The whole gateway in-process (:class:`GatewayService`, its :meth:`~GatewayService.run`
loop in a thread) on this machine's real filesystem: ``statvfs`` is not faked. To trip
the alert without filling a disk, the floor (``storage.min_free_mb``) is set above what
is free now (free + 2 GiB); a floor of 1 MiB stands for the space coming back. Real
mosquitto on a free loopback port with a real subscriber, real uvicorn for ``/healthz``
and ``/metrics``, real SQLite files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.config import config_from_mapping
from edge.errors import ConfigError
from edge.service.gateway import DISK_ALERT_KEY, GatewayService, disk_is_low
from edge.service.reference import reference_markdown
from tests.mqtt.broker import MosquittoBroker, free_port
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.running import running_gateway
from tests.service.test_alerts_removed import remembered

GW = "gw-disk"
TOPIC = f"dk/{GW}/alerts"
MIB = 1024 * 1024
GIB = 1024 * MIB


def gateway_config(data: Path, *, min_free_mb: float, port: int | None, api: bool) -> Any:
    cfg: dict[str, Any] = {
        "gateway_id": GW,
        "data_dir": str(data),
        "models_dir": str(data.parent / "models"),
        "tasks": {"fence": None, "hardhat": None, "workwear": None},
        "api": {"host": "127.0.0.1", "port": free_port(), "workers": 1},
        "service": {"api": api, "stop_timeout_s": 10, "flush_timeout_s": 5},
        "storage": {"min_free_mb": min_free_mb},
    }
    if port is not None:
        cfg["mqtt"] = {"host": "127.0.0.1", "port": port, "prefix": "dk"}
    return config_from_mapping(cfg)


def disk_alerts(sub: Subscriber) -> list[dict[str, Any]]:
    return [
        m.json()["alert"]
        for m in sub.on_topic("/alerts")
        if m.json()["alert"]["kind"] == "disk_low"
    ]


def gauge(text: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


@contextmanager
def running(cfg: Any) -> Iterator[GatewayService]:
    """The gateway of ``cfg`` running; on leaving, ``run()`` returned 0 and the outbox
    was flushed (when there is one)."""
    with running_gateway(GatewayService(config=cfg)) as gateway:
        yield gateway.service
    report = gateway.report
    assert gateway.rc == [0] and report.get("flushed", True), (gateway.rc, report)


def settled(service: GatewayService) -> bool:
    """Everything queued has gone to the broker."""
    return int(service.publisher.outbox.rows) == 0


# -- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("free", "floor", "was_low", "low"),
    [
        (499, 500, False, True),  # under the floor
        (500, 500, False, False),  # at the floor: enough
        (520, 500, True, True),  # low, back above the floor but within 10 %: still low
        (549, 500, True, True),
        (550, 500, True, False),  # 10 % above: resolved
        (10**12, 500, True, False),
        (0, 0, False, False),  # floor 0: off
        (0, 0, True, False),
    ],
)
def test_disk_is_low(free: int, floor: int, was_low: bool, low: bool) -> None:
    assert disk_is_low(free, floor, was_low=was_low) is low


def test_config_min_free_mb() -> None:
    assert config_from_mapping({}).storage.min_free_mb == 500.0
    assert config_from_mapping({"storage": {"min_free_mb": 0}}).storage.min_free_mb == 0.0
    with pytest.raises(ConfigError, match=r"storage\.min_free_mb: .*greater than or equal"):
        config_from_mapping({"storage": {"min_free_mb": -1}})
    ref = reference_markdown()
    assert "| `min_free_mb` | float | `500.0` |" in ref
    assert "| `offline_alert_after_s` | float | `60.0` |" in ref


# -- the gateway -------------------------------------------------------------------------------
def test_disk_low_is_raised_once_and_resolved_once(tmp_path: Path, broker: MosquittoBroker) -> None:
    """Start 1, floor 2 GiB above what is free: the run loop's first pass raises
    ``disk_low`` (warning, key ``data_dir``, with the numbers); four more passes raise
    nothing more; ``/healthz`` is degraded with the reading, ``/metrics`` has the gauges;
    the alert is remembered. Start 2, floor 1 MiB: the first pass resolves it, once,
    however many passes follow. Start 3, same: nothing at all."""
    data = tmp_path / "data"
    data.mkdir()
    free = shutil.disk_usage(data).free
    high = (free + 2 * GIB) / MIB
    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="dk-1") as sub:
        with running(gateway_config(data, min_free_mb=high, port=broker.port, api=True)) as gw:
            assert sub.wait_for(lambda: len(disk_alerts(sub)) >= 1, 10)
            for _ in range(4):
                reading = gw.check_disk()
                assert reading is not None and reading["low"] is True
            assert wait(lambda: settled(gw), 10, interval=0.05)
            health = httpx.get(f"{gw.api_url}/healthz", timeout=10).json()
            metrics = httpx.get(f"{gw.api_url}/metrics", timeout=10).text
            assert remembered(data) == {("disk_low", DISK_ALERT_KEY, "", None)}
        first = disk_alerts(sub)

        with running(gateway_config(data, min_free_mb=1, port=broker.port, api=False)) as gw:
            assert sub.wait_for(lambda: len(disk_alerts(sub)) >= 2, 10)
            for _ in range(4):
                reading = gw.check_disk()
                assert reading is not None and reading["low"] is False
            assert wait(lambda: settled(gw), 10, interval=0.05)
            ok = gw.health()
            ok_metrics = gw.metrics_text()
            assert remembered(data) == set()
        second = disk_alerts(sub)[len(first) :]

        with running(gateway_config(data, min_free_mb=1, port=broker.port, api=False)) as gw:
            gw.check_disk()
            assert wait(lambda: settled(gw), 10, interval=0.05)
        third = disk_alerts(sub)[len(first) + len(second) :]

    assert len(first) == 1, first
    a = first[0]
    floor = int(high * MIB)
    assert (a["key"], a["state"], a["severity"]) == (DISK_ALERT_KEY, "active", "warning")
    assert "camera" not in a
    assert a["path"] == str(data) and a["min_free_bytes"] == floor
    assert abs(a["free_bytes"] - free) < GIB and a["size_bytes"] >= a["free_bytes"]
    assert f"(storage.min_free_mb: {high:g})" in a["message"]
    assert health["status"] == "degraded"
    disk = health["disk"]
    assert disk["low"] is True and disk["min_free_bytes"] == floor
    assert disk["path"] == str(data) and abs(disk["free_bytes"] - free) < GIB
    assert abs(float(gauge(metrics, "safety_edge_data_free_bytes") or -1) - free) < GIB
    assert gauge(metrics, "safety_edge_data_size_bytes") == float(disk["size_bytes"])
    assert gauge(metrics, "safety_edge_data_free_low") == 1.0

    assert [(s["key"], s["state"]) for s in second] == [(DISK_ALERT_KEY, "resolved")], second
    assert ok["status"] == "ok" and ok["disk"]["low"] is False
    assert gauge(ok_metrics, "safety_edge_data_free_low") == 0.0
    assert (gauge(ok_metrics, "safety_edge_data_free_bytes") or 0) > 0
    assert third == []


def test_a_remembered_disk_low_is_resolved_when_the_check_is_turned_off(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Raised with a high floor; the next start has ``min_free_mb: 0`` (off): resolved at
    start, without waiting for a pass; the gauge is still there."""
    data = tmp_path / "data"
    data.mkdir()
    high = (shutil.disk_usage(data).free + 2 * GIB) / MIB
    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="dk-2") as sub:
        with running(gateway_config(data, min_free_mb=high, port=broker.port, api=False)):
            assert sub.wait_for(lambda: len(disk_alerts(sub)) >= 1, 10)
        gw = GatewayService(config=gateway_config(data, min_free_mb=0, port=broker.port, api=False))
        try:
            gw.start()  # no run(): the resolution comes from the start itself
            assert sub.wait_for(lambda: len(disk_alerts(sub)) >= 2, 10)
            reading = gw.check_disk()
            metrics = gw.metrics_text()
        finally:
            gw.stop()
        got = disk_alerts(sub)
    assert [a["state"] for a in got] == ["active", "resolved"], got
    assert got[1]["message"] == "disk check off (storage.min_free_mb: 0)"
    assert reading is not None and reading["low"] is False and reading["min_free_bytes"] == 0
    assert gauge(metrics, "safety_edge_data_free_low") == 0.0
    assert remembered(data) == set()


def test_without_mqtt_and_with_an_unreadable_data_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No MQTT: ``disk_low`` still shows in ``/healthz`` and ``/metrics`` and is logged
    (warning) once. The data folder moved away: the reading is ``None``, the gauges go,
    one error is logged however many passes fail; moved back: readable again."""
    caplog.set_level(logging.INFO, logger="edge.service")
    data = tmp_path / "data"
    data.mkdir()
    high = (shutil.disk_usage(data).free + 2 * GIB) / MIB
    gw = GatewayService(config=gateway_config(data, min_free_mb=high, port=None, api=False))
    try:
        gw.start()
        for _ in range(3):
            reading = gw.check_disk()
            assert reading is not None and reading["low"] is True
        assert gw.health()["status"] == "degraded" and gw.health()["disk"]["low"] is True
        assert gauge(gw.metrics_text(), "safety_edge_data_free_low") == 1.0
        lows = [r for r in caplog.records if r.getMessage().startswith("disk low: ")]
        assert len(lows) == 1 and lows[0].levelno == logging.WARNING, lows

        away = tmp_path / "away"
        os.rename(data, away)
        try:
            assert gw.check_disk() is None and gw.check_disk() is None
            assert gw.health()["disk"] is None
            assert "safety_edge_data_free_bytes" not in gw.metrics_text()
        finally:
            os.rename(away, data)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "free space of data_dir" in errors[0], errors
        again = gw.check_disk()
        assert again is not None and again["low"] is True
    finally:
        gw.stop()
