"""Acknowledgements: the zone monitor (no more updates, ``ack`` in the end event, the lock
against a concurrent end), the ``event_acks`` table on a real SQLite file next to the
hash-chained events (chain still verifies), and the ``ack`` handler over both."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import get_args

import pytest

from edge.mqtt.commands import AckCommand, CommandError
from edge.mqtt.schema import Event, dumps
from edge.service.acks import AckHandler
from edge.stream.acks import Ack, AckStore, read_acks
from edge.stream.events import EventStore, EventType, ZoneEvent, events_db_path
from edge.stream.evidence import verify_evidence
from edge.stream.zones import ZoneMonitor
from tests.stream.test_events import sqlite_defaulting_to_normal
from tests.stream.test_zones import FRAME, IN_BOX, MONDAY_0800_UTC, monitor, tracked

ACK: dict[str, str | int | float | bool | None] = {
    "by": "Ana",
    "at": "2024-06-03T08:00:02.000Z",
    "at_ms": MONDAY_0800_UTC + 2000,
    "note": "ok",
}


def step(mon: ZoneMonitor, t: float, inside: bool) -> list[ZoneEvent]:
    dets = tracked([IN_BOX] if inside else [], [7] if inside else [])
    return mon.step(dets, t=t, wall_ms=MONDAY_0800_UTC + round(t * 1000), frame_size=FRAME)


def test_ack_stops_updates_and_goes_into_the_end_event() -> None:
    mon = monitor(update_every_s=1.0, cooldown_s=1.0)
    events = [e for k in range(5) for e in step(mon, k * 0.5, True)]  # t = 0 .. 2 s inside
    start = events[0]
    assert [e.type for e in events] == ["start", "update", "update"]
    assert mon.acknowledge(start.event_id, ACK) == ("acked", ACK)
    assert mon.acknowledge(start.event_id, {**ACK, "by": "Bo"}) == ("already", ACK)
    assert mon.acknowledged(start.event_id) == ACK
    later = [e for k in range(5, 12) for e in step(mon, k * 0.5, True)]  # 2.5 .. 5.5 s inside
    assert later == []  # the same monitor without the ack raises updates at 3, 4, 5 s
    end = [e for k in range(12, 16) for e in step(mon, k * 0.5, False)]
    assert [e.type for e in end] == ["end"]
    assert end[0].start_event_id == start.event_id
    assert end[0].attributes["ack"] == ACK and end[0].attributes["reason"] == "lost"
    # published as JSON exactly so
    payload = json.loads(dumps(Event(**end[0].mqtt_fields()).to_payload("gw")))
    assert payload["attributes"]["ack"] == ACK
    # ended: nothing left to acknowledge in the monitor
    assert mon.acknowledge(start.event_id, ACK) == ("not_open", None)
    assert mon.acknowledged(start.event_id) is None


def test_unacknowledged_incidents_keep_updating_and_end_without_ack() -> None:
    mon = monitor(update_every_s=1.0, cooldown_s=1.0)
    events = [e for k in range(12) for e in step(mon, k * 0.5, True)]
    events += [e for k in range(12, 16) for e in step(mon, k * 0.5, False)]
    assert [e.type for e in events] == ["start"] + ["update"] * 5 + ["end"]
    assert "ack" not in events[-1].attributes
    assert mon.acknowledge("01NOSUCHINCIDENT0000000000", ACK) == ("not_open", None)


def test_shutdown_end_carries_the_ack() -> None:
    mon = monitor(update_every_s=None)
    (start,) = step(mon, 0.0, True)
    mon.acknowledge(start.event_id, ACK)
    (end,) = mon.close(t=1.0, wall_ms=MONDAY_0800_UTC + 1000)
    assert end.attributes["reason"] == "shutdown" and end.attributes["ack"] == ACK


def test_an_ack_racing_the_end_is_either_in_the_end_event_or_reported_not_open() -> None:
    """Acknowledge from another thread while the stepping thread ends the incident: an
    ``acked`` answer always means the end event carries it."""
    for _ in range(200):
        mon = monitor(update_every_s=None, cooldown_s=0.0)
        (start,) = step(mon, 0.0, True)
        got: list[str] = []
        go = threading.Event()

        def ack(
            mon: ZoneMonitor = mon,
            eid: str = start.event_id,
            go: threading.Event = go,
            got: list[str] = got,
        ) -> None:
            go.wait()
            got.append(mon.acknowledge(eid, ACK)[0])

        th = threading.Thread(target=ack)
        th.start()
        go.set()
        (end,) = step(mon, 0.5, False)
        th.join()
        assert got[0] in ("acked", "not_open")
        assert ("ack" in end.attributes) == (got[0] == "acked")


def event(eid: str, kind: str, *, start: str | None = None, t: int = 0) -> ZoneEvent:
    return ZoneEvent(
        event_id=eid,
        type=kind,  # type: ignore[arg-type]
        camera="cam1",
        task="fence",
        zone="gate",
        label="person",
        score=0.8,
        box=(1.0, 2.0, 3.0, 4.0),
        track_id=7,
        time_ms=MONDAY_0800_UTC + t,
        start_event_id=start,
        start_time_ms=None if start is None else MONDAY_0800_UTC,
    )


def ack(incident: str, by: str = "Ana", at: int = 1000) -> Ack:
    return Ack(
        incident_id=incident,
        event_id=incident,
        by=by,
        at_ms=MONDAY_0800_UTC + at,
        note=None,
        request_id="r1",
        camera="cam1",
        task="fence",
        zone="gate",
    )


def test_ack_table_keeps_the_first_ack_and_leaves_the_chain_intact(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with EventStore(path=db) as events, AckStore(path=db) as acks:
        events.add_many([event("E1", "start"), event("E2", "update", start="E1", t=500)])
        stored, new = acks.record(ack("E1"))
        assert new and stored == ack("E1")
        stored, new = acks.record(ack("E1", by="Bo", at=2000))
        assert not new and stored.by == "Ana" and stored.at_ms == MONDAY_0800_UTC + 1000
        events.add(event("E3", "end", start="E1", t=900))
        assert acks.get("E1") == ack("E1") and acks.get("E2") is None
        assert set(acks.get_many(["E1", "E2", "E1"])) == {"E1"}
    conn = sqlite3.connect(db)
    try:
        report = verify_evidence(conn, snapshots_root=None)
        assert report.ok, report.to_dict()
        # rows of the chained table untouched: the ack is in its own table only
        assert conn.execute("SELECT COUNT(*) FROM event_acks").fetchone()[0] == 1
    finally:
        conn.close()
    # reopening keeps the rows; they go with their incident's events, not by their time
    with EventStore(path=db) as events, AckStore(path=db) as acks:
        assert acks.prune(before_ms=MONDAY_0800_UTC + 1001) == 0
        assert acks.get("E1") == ack("E1")
        assert events.prune(before_ms=MONDAY_0800_UTC + 1001) == 3
        assert acks.prune(before_ms=MONDAY_0800_UTC + 1001) == 1
        assert acks.get("E1") is None


def test_acks_commit_with_synchronous_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An acknowledgement the control room was answered about must outlive a power cut:
    the acks connection sets FULL itself instead of relying on the SQLite build's default
    (NORMAL here, simulated)."""
    sqlite_defaulting_to_normal(monkeypatch)
    # as the gateway opens them: the events store, then the acks on the same file
    with EventStore(path=events_db_path(tmp_path)) as events, AckStore(path=events.path) as acks:
        assert acks._db().execute("PRAGMA synchronous").fetchone()[0] == 2
        events.add(event("E1", "start"))
        assert acks.record(ack("E1"))[1]
        assert acks._db().execute("PRAGMA synchronous").fetchone()[0] == 2


def test_read_acks_without_the_table_is_empty(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with EventStore(path=db) as events:
        events.add(event("E1", "start"))
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert read_acks(conn, ["E1"]) == {}
    finally:
        conn.close()


def command(event_id: str, by: str = "Ana", **kw: str) -> AckCommand:
    return AckCommand.model_validate(
        {"schema": 1, "cmd": "ack", "event_id": event_id, "by": by, **kw}
    )


def test_ack_handler_resolves_incidents_and_answers_each_case(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    mon = monitor(update_every_s=0.5)
    (start,) = step(mon, 0.0, True)
    (update,) = step(mon, 0.5, True)
    other = monitor(update_every_s=None)
    (gone,) = step(other, 0.0, True)
    (gone_end,) = other.close(t=1.0, wall_ms=MONDAY_0800_UTC + 1000)
    with EventStore(path=db) as events, AckStore(path=db) as acks:
        events.add_many([start, update, gone, gone_end])
        clock = iter(range(MONDAY_0800_UTC + 5000, MONDAY_0800_UTC + 9000, 1000))
        handler = AckHandler(
            events=events,
            acks=acks,
            monitors=lambda c, t, z: mon if (c, t, z) == ("cam1", "fence", "gate") else None,
            clock_ms=lambda: next(clock),
        )
        # an update's id acknowledges its incident, which is open
        r = handler(command(update.event_id, note="guard sent", request_id="q1"))
        assert r["incident_id"] == start.event_id and r["event_id"] == update.event_id
        assert r["already"] is False and r["ended"] is False
        assert r["ack"] == {
            "by": "Ana",
            "at": "2024-06-03T08:00:05.000Z",
            "at_ms": MONDAY_0800_UTC + 5000,
            "note": "guard sent",
        }
        assert mon.acknowledged(start.event_id) == r["ack"]
        # again, by someone else, through the start id: the first ack stands
        r2 = handler(command(start.event_id, by="Bo"))
        assert r2["already"] is True and r2["ack"] == r["ack"]
        # an incident that already ended (its monitor is not asked about it here)
        r3 = handler(command(gone_end.event_id, by="Bo"))
        assert r3["incident_id"] == gone.event_id and r3["ended"] is True
        assert acks.get(gone.event_id) is not None
        with pytest.raises(CommandError) as err:
            handler(command("01NOSUCHEVENT0000000000000"))
        assert err.value.reason == "unknown_event"
    (end,) = mon.close(t=2.0, wall_ms=MONDAY_0800_UTC + 2000)
    assert end.attributes["ack"] == r["ack"]


@pytest.mark.skipif("crossing" not in get_args(EventType), reason="no line crossings in this tree")
def test_a_line_crossing_is_not_ackable(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with EventStore(path=db) as events, AckStore(path=db) as acks:
        events.add(event("X1", "crossing"))
        handler = AckHandler(events=events, acks=acks, monitors=lambda c, t, z: None)
        with pytest.raises(CommandError) as err:
            handler(command("X1"))
        assert err.value.reason == "not_ackable"
        assert acks.get("X1") is None
