"""sd_notify over real unix datagram sockets, the Prometheus text of the cameras, the JSON
log format, and the local broker helper against the real mosquitto."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from edge.service.local_broker import LocalBroker, find_mosquitto
from edge.service.logs import JsonFormatter
from edge.service.metrics import prometheus_text
from edge.service.notify import Notifier
from tests.service.gateway_proc import NotifySocket


def test_notify_to_a_path_socket() -> None:
    with tempfile.TemporaryDirectory() as d:  # short path: AF_UNIX paths are <= 107 bytes
        sock = NotifySocket(path=Path(d) / "notify")
        try:
            n = Notifier(environ={"NOTIFY_SOCKET": sock.address, "WATCHDOG_USEC": "3000000"})
            assert n.enabled and n.watchdog_interval_s == 1.5
            assert n.ready("2/2 cameras") and n.watchdog() and n.stopping()
            assert sock.wait_for("STOPPING=1", 5)
            assert sock.lines() == ["READY=1", "STATUS=2/2 cameras", "WATCHDOG=1", "STOPPING=1"]
            n.close()
            n.close()  # idempotent
        finally:
            sock.close()


def test_notify_abstract_socket_and_failures() -> None:
    sock = NotifySocket()
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": sock.address})
        assert n.watchdog_interval_s is None
        assert n.status("hello")
        assert sock.wait_for("STATUS=hello", 5)
    finally:
        sock.close()
    # the supervisor's socket is gone: no exception, False
    assert Notifier(environ={"NOTIFY_SOCKET": sock.address}).ready() is False
    # no socket at all: every call is a no-op
    quiet = Notifier(environ={})
    assert not quiet.enabled and quiet.ready() is False and quiet.watchdog() is False
    # a watchdog meant for another process (WATCHDOG_PID) is not ours
    other = Notifier(environ={"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None


def camera(name: str, *, events: int) -> dict[str, Any]:
    stat = {"mean_ms": 12.5, "last_ms": 11.0}
    return {
        "camera": name,
        "online": True,
        "running": True,
        "fps": 4.5,
        "frames_processed": 100,
        "frames_read": 250,
        "frames_dropped": 3,
        "frames_skipped": 147,
        "reconnects": 1,
        "failures": 1,
        "frame_ms": stat,
        "latency_ms": {"p50": 120.0, "p95": 210.0},
        "events": {"start": events, "update": 0, "end": events},
        "store_errors": 0,
        "sink_errors": 0,
        "progress_age_s": {"loop": 0.125, "reader": 0.5},
        "open_incidents": 0,
        "tasks": {
            "fence": {
                "stage_ms": {k: stat for k in ("preprocess", "inference", "nms", "track")},
                "zones": {'z"1': {"inside": 2, "open": 1}},
            }
        },
        "snapshots_saved": 4,
        "snapshot_save_failures": 0,
        "snapshots_deleted": 0,
        "snapshot_bytes": 1234,
    }


def test_prometheus_text_groups_each_family() -> None:
    text = prometheus_text(
        [camera("a", events=2), camera("b", events=5), {"camera": "c", "online": False}],
        tasks_up={("a", "fence"): True, ("c", "hardhat"): False},
        publisher={"mqtt_outbox_rows": 7.0, 'mqtt_connect_failures_total{reason="refused"}': 2.0},
    )
    assert text.endswith("\n")
    lines = text.splitlines()
    sample = re.compile(r'^([a-z_]+)(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')
    families: list[str] = []
    for line in lines:
        if line.startswith("# TYPE "):
            families.append(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        m = sample.match(line)
        assert m, line
        assert m.group(1) == families[-1], f"{line!r} outside its family {families[-1]}"
    assert len(families) == len(set(families))  # each family once, samples together
    assert 'safety_edge_camera_up{camera="c"} 0' in lines
    assert 'safety_edge_events_total{camera="b",type="start"} 5' in lines
    assert (
        'safety_edge_camera_stage_seconds{camera="a",task="fence",stage="inference"} 0.0125'
        in lines
    )
    assert 'safety_edge_zone_inside{camera="a",task="fence",zone="z\\"1"} 2' in lines
    assert 'safety_edge_camera_frames_total{camera="a",stage="dropped"} 3' in lines
    assert 'safety_edge_task_up{camera="c",task="hardhat"} 0' in lines
    assert 'safety_edge_camera_progress_age_seconds{camera="a",thread="reader"} 0.5' in lines
    assert "safety_edge_mqtt_outbox_rows 7.0" in lines
    assert 'safety_edge_mqtt_connect_failures_total{reason="refused"} 2.0' in lines


def test_json_log_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("edge.x", logging.ERROR, __file__, 1, "bad %s", ("thing",), None)
        rec.exc_info = sys.exc_info()
    d = json.loads(JsonFormatter().format(rec))
    assert d["level"] == "error" and d["logger"] == "edge.x" and d["message"] == "bad thing"
    assert d["time"].endswith("Z") and "ValueError: boom" in d["exc"]


def test_local_broker_takes_another_port_when_busy(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        broker = LocalBroker(data_dir=tmp_path, port=taken)
        try:
            assert broker.start() is True
            assert broker.port != taken and broker.running
            with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
                pass
        finally:
            broker.stop()
            broker.stop()
    assert not broker.running


def test_local_broker_with_a_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` uses data_dir `var` (relative): mosquitto, which runs inside its own
    folder, must still find its persistence folder and log file."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    monkeypatch.chdir(tmp_path)
    broker = LocalBroker(data_dir=Path("var"), port=0)
    try:
        assert broker.start() is True and broker.running
    finally:
        broker.stop()
    assert (tmp_path / "var" / "mosquitto" / "mosquitto.log").is_file()
