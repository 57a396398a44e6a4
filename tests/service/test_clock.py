"""An implausible wall clock (a gateway without RTC battery booted in 1970) keeps
scheduled zones armed, raises ``clock_unsynced`` and degrades ``/healthz``; the alert is
resolved and the schedules apply again once the clock is right. A newest stored event
stamped while the clock ran ahead (2099) is no floor once the clock is NTP synchronized
(kernel state or systemd-timesyncd), so it does not hold a right clock implausible forever.

The whole gateway in-process with real parts: a tiny planted ONNX model run by
onnxruntime, a looped video read by OpenCV, a real mosquitto with a real subscriber,
real SQLite files. The wrong clock is the gateway's own injectable ``wall_clock`` (the
one its clock check reads); the frames keep the machine's real time, and the zone's
schedule is chosen to be *off* at that real time -- so events during the wrong-clock
phase can only come from the fail-safe.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.config import GatewayConfig, config_from_mapping
from edge.service.clock import (
    BUILD_FLOOR_MS,
    check_clock,
    clock_synchronized,
    combine_sync,
    kernel_clock_synchronized,
    timesync_synchronized,
)
from edge.service.gateway import CLOCK_ALERT_KEY, GatewayService
from edge.stream.events import EventStore, events_db_path
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.running import running_gateway
from tests.service.test_stall_and_alerts import still_video, write_people_model
from tests.stream.chain_events import ev

GW = "gw-clock"
Y2099_MS = int(datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
AHEAD = "the newest stored event 2099-01-01T00:00:00Z is after this synchronized clock"


@pytest.mark.parametrize(
    ("now_ms", "newest", "sync", "require", "plausible", "source"),
    [
        (0, None, None, False, False, "build date"),  # no RTC: 1970
        (BUILD_FLOOR_MS - 1, None, True, False, False, "build date"),
        (BUILD_FLOOR_MS, None, None, False, True, "build date"),
        (BUILD_FLOOR_MS + 5, BUILD_FLOOR_MS + 9, None, False, False, "newest event"),
        (BUILD_FLOOR_MS + 9, BUILD_FLOOR_MS + 9, None, False, True, "newest event"),
        (BUILD_FLOOR_MS + 5, BUILD_FLOOR_MS - 9, None, False, True, "build date"),
        (BUILD_FLOOR_MS + 5, None, False, False, True, "build date"),  # info only
        (BUILD_FLOOR_MS + 5, None, False, True, False, "build date"),  # required
        (BUILD_FLOOR_MS + 5, None, None, True, False, "build date"),
        (BUILD_FLOOR_MS + 5, None, True, True, True, "build date"),
    ],
)
def test_check_clock(
    now_ms: int, newest: int | None, sync: bool | None, require: bool, plausible: bool, source: str
) -> None:
    r = check_clock(now_ms=now_ms, newest_event_ms=newest, synchronized=sync, require_sync=require)
    assert r.plausible is plausible
    assert r.floor_source.startswith(source)
    assert ("before the" in r.message()) is (now_ms < r.floor_ms)


@pytest.mark.parametrize("sync", [False, None])
def test_event_ahead_is_a_floor_while_not_synchronized(sync: bool | None) -> None:
    """Unchanged fail-safe: without NTP, an event stamped in 2099 keeps the clock wrong."""
    now = int(time.time() * 1000)
    r = check_clock(now_ms=now, newest_event_ms=Y2099_MS, synchronized=sync)
    assert r.plausible is False and r.floor_ms == Y2099_MS
    assert "before the newest event in the events database 2099-01-01" in r.message()
    assert AHEAD not in r.message()


def test_event_ahead_is_no_floor_for_a_synchronized_clock() -> None:
    """A bad RTC reading (2099) stamped an event; NTP later set the clock right: right by
    definition, the event is named instead of being a floor (also with require_sync)."""
    now = int(time.time() * 1000)
    for require in (False, True):
        r = check_clock(
            now_ms=now, newest_event_ms=Y2099_MS, synchronized=True, require_sync=require
        )
        assert r.plausible is True and r.floor_ms == BUILD_FLOOR_MS
        assert r.floor_source == "build date"
        assert AHEAD + ": it was stamped by a clock that ran ahead" in r.message()
        assert r.as_dict()["plausible"] is True
    # Within a minute (ordinary skew) nothing is said; the build floor still applies.
    near = check_clock(now_ms=now, newest_event_ms=now + 60_000, synchronized=True)
    assert near.plausible and near.ahead_event_ms is None and "newest stored" not in near.message()
    assert not check_clock(now_ms=0, newest_event_ms=None, synchronized=True).plausible


@pytest.mark.parametrize(
    ("timesyncd", "kernel", "combined"),
    [
        (True, None, True),
        (None, True, True),
        (False, True, True),  # chrony disciplines the clock, timesyncd installed but idle
        (True, False, True),
        (False, None, False),
        (None, False, False),
        (False, False, False),
        (None, None, None),
    ],
)
def test_either_signal_synchronizes(
    tmp_path: Path, timesyncd: bool | None, kernel: bool | None, combined: bool | None
) -> None:
    assert combine_sync(timesyncd, kernel) is combined
    folder = tmp_path / "timesync"
    if timesyncd is not None:
        folder.mkdir()
        if timesyncd:
            (folder / "synchronized").touch()
    assert clock_synchronized(folder, lambda: kernel) is combined


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux")
def test_kernel_probe_reads_a_state_without_privilege() -> None:
    first = kernel_clock_synchronized()
    assert isinstance(first, bool)
    assert kernel_clock_synchronized() is first


def test_timesync_synchronized(tmp_path: Path) -> None:
    assert timesync_synchronized(tmp_path / "none") is None  # no timesyncd: unknown
    assert timesync_synchronized(tmp_path) is False
    (tmp_path / "synchronized").touch()
    assert timesync_synchronized(tmp_path) is True


def off_now_hours() -> str:
    """A one-hour range (UTC) that is 12 hours away from now: the schedule is off."""
    h = (datetime.now(timezone.utc).hour + 12) % 24
    return f"{h:02d}:00-{h + 1:02d}:00"


def press_config(tmp_path: Path, broker: MosquittoBroker) -> GatewayConfig:
    """A gateway whose camera ``press`` (a still person, 10 fps) has one fence zone
    scheduled for an hour 12 hours away: off now, whatever the time of day."""
    write_people_model(tmp_path / "models", "people")
    video = still_video(tmp_path / "still.avi")
    zone = {
        "name": "press",
        "min_dwell_s": 0,
        # long enough that a frame gap on a loaded CI machine cannot end the incident
        # as lost before the clock check ends it with reason schedule
        "cooldown_s": 30,
        "schedule": {"days": "daily", "hours": [off_now_hours()], "tz": "UTC"},
    }
    return config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "ck"},
            "cameras": [
                {
                    "name": "press",
                    "source": str(video),
                    "loop": True,
                    "target_fps": 10,
                    "tasks": {"fence": {"zones": [zone]}},
                }
            ],
        }
    )


def clock_alerts(sub: Subscriber) -> list[dict[str, Any]]:
    return [
        m.json()["alert"]
        for m in sub.on_topic("/alerts")
        if m.json()["alert"]["kind"] == "clock_unsynced"
    ]


def test_a_wrong_clock_keeps_scheduled_zones_armed_and_is_alerted(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = press_config(tmp_path, broker)
    wall = [0.0]  # 1970-01-01: a gateway without RTC battery after boot
    service = GatewayService(
        config=cfg,
        wall_clock=lambda: wall[0],
        timesync_dir=tmp_path / "no-timesyncd",
        kernel_sync=lambda: None,  # unknown, whatever this machine's NTP state
    )
    with (
        Subscriber(
            host=broker.host, port=broker.port, topics=[f"ck/{GW}/#"], client_id="c1"
        ) as sub,
        running_gateway(
            service, start_under=caplog.at_level("WARNING", logger="edge.service")
        ) as gateway,
    ):
        warned = [r for r in caplog.records if "wall clock implausible" in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        assert "1970-01-01T00:00:00Z, before the build date" in warned[0].getMessage()
        assert "press/fence/press" in warned[0].getMessage()
        h = service.health()
        assert h["status"] == "degraded"
        assert h["clock"]["plausible"] is False
        assert h["clock"]["synchronized"] is None
        assert "before the build date" in h["clock"]["message"]
        assert service.store is not None
        store = service.store
        # The schedule is off at the frames' real time, yet the zone is armed.
        assert wait(lambda: any(e.type == "start" for e in store.list_events()), 20)
        assert wait(lambda: len(clock_alerts(sub)) >= 1, 10)
        first = clock_alerts(sub)[0]
        assert first["state"] == "active" and first["key"] == CLOCK_ALERT_KEY
        assert "scheduled zones stay armed" in first["message"]
        assert first["clock"]["plausible"] is False
        # NTP sets the clock: resolved within a tick or two, the schedule applies again.
        wall[0] = time.time()
        assert wait(lambda: len(clock_alerts(sub)) >= 2, 10)
        resolved = clock_alerts(sub)[1]
        assert resolved["state"] == "resolved" and resolved["key"] == CLOCK_ALERT_KEY
        assert wait(
            lambda: any(
                e.type == "end" and e.attributes.get("reason") == "schedule"
                for e in store.list_events()
            ),
            10,
        )
        h = service.health()
        assert h["clock"]["plausible"] is True and h["status"] == "ok", h
        time.sleep(1.5)
        assert len(clock_alerts(sub)) == 2  # once each
    assert gateway.rc == [0]


def test_an_event_stamped_ahead_holds_the_clock_wrong_only_until_ntp_synchronizes(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The clock once ran ahead (RTC garbage: 2099) and an event was stamped then; now the
    clock reads the right time. Not synchronized: the event is a floor (fail-safe, as
    before): implausible, ``clock_unsynced``, zone armed at all hours. Once the kernel says
    NTP synchronized: plausible, the alert resolved, the schedule applies, ``/healthz`` ok,
    and the future event is named in the message and logged once."""
    caplog.set_level("WARNING", logger="edge.service")
    data = tmp_path / "data"
    with EventStore(path=events_db_path(data)) as events:
        events.add_many([ev(0, camera="yard", t_ms=Y2099_MS)])
    cfg = press_config(tmp_path, broker)
    kernel: list[bool | None] = [False]  # no NTP server reached yet
    timesyncd = tmp_path / "timesync"
    timesyncd.mkdir()  # timesyncd runs, not synchronized: says nothing more
    service = GatewayService(config=cfg, timesync_dir=timesyncd, kernel_sync=lambda: kernel[0])
    with (
        Subscriber(
            host=broker.host, port=broker.port, topics=[f"ck/{GW}/#"], client_id="c2"
        ) as sub,
        running_gateway(service) as gateway,
    ):
        h = service.health()
        assert h["status"] == "degraded" and h["clock"]["plausible"] is False
        assert h["clock"]["synchronized"] is False
        assert "before the newest event in the events database 2099-01-01" in h["clock"]["message"]
        assert service.store is not None
        store = service.store
        # The schedule is off now, yet the zone is armed: the fail-safe, unchanged (the
        # press camera's own start: the seeded 2099 event is a start too).
        assert wait(lambda: any(e.type == "start" for e in store.list_events(camera="press")), 20)
        assert wait(lambda: len(clock_alerts(sub)) >= 1, 10)
        assert clock_alerts(sub)[0]["state"] == "active"

        kernel[0] = True  # chrony/ntpd/timesyncd disciplines the clock now
        assert wait(lambda: len(clock_alerts(sub)) >= 2, 10)
        resolved = clock_alerts(sub)[1]
        assert resolved["state"] == "resolved" and resolved["key"] == CLOCK_ALERT_KEY
        assert AHEAD in resolved["message"]
        assert wait(
            lambda: any(
                e.type == "end" and e.attributes.get("reason") == "schedule"
                for e in store.list_events(camera="press")
            ),
            10,
        )
        h = service.health()
        assert h["status"] == "ok", h
        assert h["clock"]["plausible"] is True and h["clock"]["synchronized"] is True
        assert h["clock"]["floor_source"] == "build date"
        assert AHEAD in h["clock"]["message"]
        for _ in range(3):  # the minute checks: no new warning each time
            assert service.check_clock().plausible
        ahead = [r for r in caplog.records if AHEAD in r.getMessage()]
        assert len(ahead) == 1 and ahead[0].levelname == "WARNING", ahead
        time.sleep(1.5)
        assert len(clock_alerts(sub)) == 2  # once each
    assert gateway.rc == [0]
