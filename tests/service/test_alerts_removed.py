"""Alerts of cameras and tasks removed from the config are resolved at the next start.

The gateway remembers its active alerts in ``<data_dir>/active-alerts.sqlite3``
(:mod:`edge.service.alert_state`). These tests run the whole gateway in-process
(:class:`GatewayService`) twice or three times on one data folder, the config changed
in between, with real parts: tiny planted ONNX models run by onnxruntime, a still video
read by OpenCV, a real mosquitto on a free loopback port with a real subscriber, real
SQLite files. The unit tests at the end open the store directly.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from edge.config import config_from_mapping
from edge.service.alert_state import ALERTS_FILENAME, ActiveAlerts, open_active_alerts
from edge.service.gateway import GatewayService
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.test_stall_and_alerts import (
    FAST,
    camera,
    still_video,
    write_people_model,
)

GW = "gw-removed"
TOPIC = f"rm/{GW}/alerts"
KINDS = ("task_unavailable", "camera_unavailable", "camera_offline")
Alert = tuple[str, str, str, str]  # kind, key, state, message


def gateway_config(tmp_path: Path, port: int, cameras: list[dict[str, Any]]) -> Any:
    return config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": port, "prefix": "rm"},
            "cameras": cameras,
        }
    )


def run_once(cfg: Any, *, offline: tuple[str, ...] = (), online: tuple[str, ...] = ()) -> None:
    """Start, wait for one frame of ``dock`` and of each camera in ``online``, and for
    each camera in ``offline`` to have gone offline; then stop (outbox flushed)."""
    service = GatewayService(config=cfg)
    service.start()
    try:
        for name in ("dock", *online):
            p = service.cameras[name].pipeline
            assert p is not None, name
            assert wait(lambda p=p: p.metrics()["frames_processed"] >= 1, 20, interval=0.05), name
        for name in offline:
            p = service.cameras[name].pipeline
            assert p is not None, name
            assert wait(lambda p=p: p.metrics()["online"] is False, 20, interval=0.05), name
    finally:
        report = service.stop()
    assert report["flushed"], report


def received(sub: Subscriber, start: int = 0) -> list[Alert]:
    """(kind, key, state, message) of the gateway's camera alerts, in arrival order."""
    out = []
    for msg in sub.on_topic("/alerts")[start:]:
        a = msg.json()["alert"]
        if a["kind"] in KINDS:
            out.append((a["kind"], a["key"], a["state"], a["message"]))
    return out


def remembered(data: Path) -> set[tuple[str, str, str, str | None]]:
    """(kind, key, camera, task) rows of the active-alerts file, read with plain sqlite3."""
    with closing(sqlite3.connect(data / ALERTS_FILENAME)) as db:
        rows = db.execute("SELECT kind, key, camera, task FROM active_alerts").fetchall()
    return {(str(k), str(key), str(c), t) for k, key, c, t in rows}


def removal_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.service" and "removed from the config" in r.getMessage()
    ]


def service_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.service" and r.levelno >= logging.ERROR
    ]


def first_config(tmp_path: Path, port: int, video: str) -> Any:
    """dock: healthy. gate: its model is not installed (task + camera unavailable).
    gone: its video file does not exist (offline). pair: fence runs, hardhat's model is
    not installed (task unavailable)."""
    gate = camera("gate", video, loop=True)
    gate["tasks"]["fence"]["model"] = "gatecam"
    pair = camera("pair", video, loop=True)
    pair["tasks"]["hardhat"] = {"model": "hats"}
    gone = camera(
        "gone", str(tmp_path / "no-such.avi"), backoff_max_s=2, offline_alert_after_s=0, **FAST
    )
    return gateway_config(tmp_path, port, [camera("dock", video, loop=True), gate, gone, pair])


# -- the gateway -------------------------------------------------------------------------------
def test_alerts_of_removed_cameras_and_tasks_are_resolved_at_the_next_start(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Start 1 raises gate's two alerts, gone's ``camera_offline`` and pair's hardhat
    task; they are remembered. Start 2, with gate and gone removed and pair's hardhat
    task removed, publishes ``resolved`` for each of the four (and logs one info line
    each) and forgets them; the healthy dock camera gets exactly its usual two
    ``resolved`` availability alerts each time and never a ``camera_offline``. Start 3,
    same config: nothing remembered, no removal resolved again."""
    caplog.set_level(logging.INFO, logger="edge.service")
    write_people_model(tmp_path / "models", "people")
    video = str(still_video(tmp_path / "still.avi"))
    data = tmp_path / "data"
    cfg1 = first_config(tmp_path, broker.port, video)
    pair = camera("pair", video, loop=True)  # fence only now
    cfg2 = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True), pair])

    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="rm-1") as sub:
        run_once(cfg1, offline=("gone",), online=("pair",))
        assert sub.wait_for(lambda: len(received(sub)) >= 10, 10)
        first = received(sub)
        assert (data / ALERTS_FILENAME).is_file()
        assert remembered(data) == {
            ("task_unavailable", "gate/fence", "gate", "fence"),
            ("camera_unavailable", "gate", "gate", None),
            ("camera_offline", "gone", "gone", None),
            ("task_unavailable", "pair/hardhat", "pair", "hardhat"),
        }
        assert removal_logs(caplog) == []
        assert [m for m in service_errors(caplog) if "active alerts" in m] == []
        seen = len(sub.on_topic("/alerts"))

        run_once(cfg2, online=("pair",))
        # 4 removed + dock/fence, dock, pair/fence, pair resolved by the availability alerts
        assert sub.wait_for(lambda: len(received(sub, seen)) >= 8, 10)
        second = received(sub, seen)
        assert remembered(data) == set()
        logs2 = removal_logs(caplog)
        seen = len(sub.on_topic("/alerts"))

        run_once(cfg2, online=("pair",))
        assert sub.wait_for(lambda: len(received(sub, seen)) >= 4, 10)
        third = received(sub, seen)

    raised = {(k, key) for k, key, state, _ in first if state == "active"}
    assert raised == {
        ("task_unavailable", "gate/fence"),
        ("camera_unavailable", "gate"),
        ("camera_offline", "gone"),
        ("task_unavailable", "pair/hardhat"),
    }, first
    assert sorted(second) == sorted(
        [
            ("task_unavailable", "gate/fence", "resolved", "camera removed from the config"),
            ("camera_unavailable", "gate", "resolved", "camera removed from the config"),
            ("camera_offline", "gone", "resolved", "camera removed from the config"),
            ("task_unavailable", "pair/hardhat", "resolved", "task removed from the config"),
            ("task_unavailable", "dock/fence", "resolved", "available"),
            ("camera_unavailable", "dock", "resolved", "running fence"),
            ("task_unavailable", "pair/fence", "resolved", "available"),
            ("camera_unavailable", "pair", "resolved", "running fence"),
        ]
    ), second
    assert len(logs2) == 4, logs2
    for kind, key, why in (
        ("task_unavailable", "gate/fence", "camera removed from the config"),
        ("camera_unavailable", "gate", "camera removed from the config"),
        ("camera_offline", "gone", "camera removed from the config"),
        ("task_unavailable", "pair/hardhat", "task removed from the config"),
    ):
        assert sum(m.startswith(f"alert {kind}/{key} (active since ") for m in logs2) == 1, logs2
        assert any(m.startswith(f"alert {kind}/{key} ") and m.endswith(why) for m in logs2)
    assert sorted(third) == sorted(s for s in second if "removed" not in s[3]), third
    assert removal_logs(caplog) == logs2  # start 3 resolved nothing by removal
    # the healthy camera: its availability alerts only, resolved each time
    dock = [a for a in first + second + third if a[1] in ("dock", "dock/fence")]
    assert {a[2] for a in dock} == {"resolved"} and len(dock) == 6, dock
    assert all(a[0] != "camera_offline" for a in dock), dock


def test_an_offline_camera_still_configured_is_resolved_by_its_first_frame_after_a_restart(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``lobby``'s video is missing at start 1 (``camera_offline`` active, remembered;
    ``offline_alert_after_s: 0`` raises it at once). The video is put in place; at start
    2 -- with the default 60 s delay now -- the camera's first frame resolves the alert
    (before, a restart forgot the camera had been offline and nobody resolved it; the
    delay does not hold back the resolution of a remembered alert). Start 3: the camera
    is disabled while its alert is active -> resolved at start."""
    write_people_model(tmp_path / "models", "people")
    video = str(still_video(tmp_path / "still.avi"))
    later = tmp_path / "lobby.avi"
    data = tmp_path / "data"
    lobby = camera("lobby", str(later), loop=True, backoff_max_s=1, offline_alert_after_s=0, **FAST)
    cfg = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True), lobby])
    delayed = {**lobby, "offline_alert_after_s": 60}
    cfg60 = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True), delayed])
    off = gateway_config(
        tmp_path, broker.port, [camera("dock", video, loop=True), {**lobby, "enabled": False}]
    )

    def offline_alerts(sub: Subscriber, start: int) -> list[Alert]:
        return [a for a in received(sub, start) if a[0] == "camera_offline"]

    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="rm-2") as sub:
        run_once(cfg, offline=("lobby",))
        assert sub.wait_for(lambda: len(offline_alerts(sub, 0)) >= 1, 10)
        first = offline_alerts(sub, 0)
        assert remembered(data) == {("camera_offline", "lobby", "lobby", None)}
        seen = len(sub.on_topic("/alerts"))

        still_video(later)
        run_once(cfg60, online=("lobby",))
        assert sub.wait_for(lambda: len(offline_alerts(sub, seen)) >= 1, 10)
        second = offline_alerts(sub, seen)
        assert remembered(data) == set()
        seen = len(sub.on_topic("/alerts"))

        later.unlink()
        run_once(cfg, offline=("lobby",))
        assert sub.wait_for(lambda: len(offline_alerts(sub, seen)) >= 1, 10)
        seen = len(sub.on_topic("/alerts"))
        run_once(off)
        assert sub.wait_for(lambda: len(offline_alerts(sub, seen)) >= 1, 10)
        fourth = offline_alerts(sub, seen)

    assert [a[:3] for a in first] == [("camera_offline", "lobby", "active")], first
    assert second == [("camera_offline", "lobby", "resolved", "receiving frames")], second
    assert fourth == [
        ("camera_offline", "lobby", "resolved", "camera not running: disabled in the config")
    ], fourth
    assert remembered(data) == set()


def test_a_corrupt_state_file_is_moved_aside_and_the_gateway_runs(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage in ``active-alerts.sqlite3``: the gateway starts and publishes as usual,
    logs an error naming the file, keeps the garbage as ``<name>.corrupt-<time>`` and
    remembers the new alerts in a fresh file, so removing the camera later still
    resolves them."""
    caplog.set_level(logging.INFO, logger="edge.service")
    write_people_model(tmp_path / "models", "people")
    video = str(still_video(tmp_path / "still.avi"))
    data = tmp_path / "data"
    data.mkdir()
    garbage = b"this is not a database\n" * 100
    (data / ALERTS_FILENAME).write_bytes(garbage)
    gate = camera("gate", video, loop=True)
    gate["tasks"]["fence"]["model"] = "gatecam"
    cfg1 = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True), gate])
    cfg2 = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True)])

    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="rm-3") as sub:
        run_once(cfg1)
        assert sub.wait_for(lambda: len(received(sub)) >= 4, 10)
        first = received(sub)
        errors = [m for m in service_errors(caplog) if ALERTS_FILENAME in m]
        aside = sorted(data.glob(f"{ALERTS_FILENAME}.corrupt-*"))
        assert remembered(data) == {
            ("task_unavailable", "gate/fence", "gate", "fence"),
            ("camera_unavailable", "gate", "gate", None),
        }
        seen = len(sub.on_topic("/alerts"))
        run_once(cfg2)
        assert sub.wait_for(lambda: len(received(sub, seen)) >= 4, 10)
        second = received(sub, seen)

    assert len(errors) == 1, errors
    assert "not a database" in errors[0] and "moved aside to" in errors[0], errors[0]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert str(aside[0]) in errors[0]
    assert ("camera_unavailable", "gate", "active", "no task can run") in first
    assert ("camera_unavailable", "gate", "resolved", "camera removed from the config") in second
    assert ("task_unavailable", "gate/fence", "resolved", "camera removed from the config") in (
        second
    )


def test_a_state_file_that_cannot_be_opened_does_not_stop_the_gateway(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where the file should be: the error is logged once, the gateway starts
    and its alerts are published (just not remembered); the folder is left alone."""
    caplog.set_level(logging.INFO, logger="edge.service")
    write_people_model(tmp_path / "models", "people")
    video = str(still_video(tmp_path / "still.avi"))
    data = tmp_path / "data"
    (data / ALERTS_FILENAME).mkdir(parents=True)
    gate = camera("gate", video, loop=True)
    gate["tasks"]["fence"]["model"] = "gatecam"
    cfg = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True), gate])

    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="rm-4") as sub:
        run_once(cfg)
        assert sub.wait_for(lambda: len(received(sub)) >= 4, 10)
        first = received(sub)

    errors = [m for m in service_errors(caplog) if ALERTS_FILENAME in m]
    assert len(errors) == 1, errors
    assert "cannot open" in errors[0] and "not remembered" in errors[0], errors[0]
    assert (data / ALERTS_FILENAME).is_dir()
    assert not list(data.glob(f"{ALERTS_FILENAME}.corrupt-*"))
    assert ("camera_unavailable", "gate", "active", "no task can run") in first


# -- the store -------------------------------------------------------------------------------
def test_store_keeps_since_writes_on_change_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / ALERTS_FILENAME
    clock = iter([1000, 2000, 3000])
    with ActiveAlerts(path=path, clock_ms=lambda: next(clock)) as st:
        a = st.raised(
            kind="camera_offline", key="c", camera="c", task=None, severity="w", message="m1"
        )
        assert a.since_ms == 1000 and a.since == "1970-01-01T00:00:01.000Z"
        b = st.raised(
            kind="camera_offline", key="c", camera="c", task=None, severity="w", message="m2"
        )
        assert (b.since_ms, b.message) == (1000, "m2")
        st.raised(
            kind="task_unavailable", key="c/t", camera="c", task="t", severity="x", message=""
        )
        assert st.resolved("camera_unavailable", "c") is None
    with ActiveAlerts(path=path) as st:
        assert [(a.kind, a.key, a.message, a.since_ms) for a in st.active()] == [
            ("camera_offline", "c", "m2", 1000),
            ("task_unavailable", "c/t", "", 2000),
        ]
        gone = st.resolved("camera_offline", "c")
        assert gone is not None and gone.message == "m2"
        st.close()
        st.close()  # idempotent
    with ActiveAlerts(path=path) as st:
        assert [a.key for a in st.active()] == ["c/t"]


def test_a_bad_row_counts_as_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A row whose ``since_ms`` is text (written by hand, or damage quick_check cannot
    see) makes the file damaged: moved aside, an empty one opened, one error logged."""
    path = tmp_path / ALERTS_FILENAME
    ActiveAlerts(path=path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO active_alerts VALUES ('camera_offline', 'c', 'c', NULL, 'w', 'm', 'x')"
        )
    with caplog.at_level(logging.ERROR, logger="edge.service"):
        st = open_active_alerts(path)
    assert st is not None
    with st:
        assert st.active() == []
    assert len(list(tmp_path.glob(f"{ALERTS_FILENAME}.corrupt-*"))) == 1
    assert len(caplog.records) == 1 and "bad row" in caplog.records[0].getMessage()
