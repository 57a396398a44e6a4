"""Events table on a real SQLite file, and the ``events`` command in-process and as a
real subprocess."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt.ids import EventIdGenerator
from edge.stream.chain_key import ChainKey
from edge.stream.commands import add_subcommands
from edge.stream.events import (
    EventStore,
    EventStoreError,
    EventType,
    ZoneEvent,
    event_to_dict,
    events_db_path,
    parse_time,
)

REPO = Path(__file__).resolve().parents[2]
NOW = int(datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
_ids = EventIdGenerator()


def ev(
    kind: EventType = "start",
    *,
    t_ms: int = NOW,
    camera: str = "gate",
    task: str = "fence",
    zone: str = "yard",
    track: int = 1,
    start: ZoneEvent | None = None,
) -> ZoneEvent:
    return ZoneEvent(
        event_id=_ids(),
        type=kind,
        camera=camera,
        task=task,
        zone=zone,
        label="person",
        score=0.75,
        box=(1.5, 2.0, 30.0, 80.25),
        track_id=track,
        time_ms=t_ms,
        start_event_id=None if start is None else start.event_id,
        start_time_ms=None if start is None else start.time_ms,
        snapshot="gate/2024-06-03/x.jpg" if kind == "start" else None,
        model="person_vehicle",
        attributes={"dwell_s": 2.5} if kind != "end" else {"dwell_s": 9.0, "reason": "left"},
    )


@pytest.fixture()
def store(tmp_path: Path) -> EventStore:
    with EventStore(path=tmp_path / "data" / "events.sqlite3") as s:
        yield s  # type: ignore[misc]


def test_round_trip_and_wal(store: EventStore) -> None:
    s = ev()
    e = ev("end", t_ms=NOW + 9000, start=s)
    assert store.add(s) is True
    assert store.add(s) is False  # same id: stored once
    assert store.add_many([e]) == 1
    got = store.list_events()
    assert [g.event_id for g in got] == [e.event_id, s.event_id]  # newest first
    back = store.get(s.event_id)
    assert back is not None
    assert back.mqtt_fields() == s.mqtt_fields()
    assert store.get(e.event_id) == e
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_filters_limit_and_counts(store: EventStore) -> None:
    rows = []
    for k in range(10):
        rows.append(ev(t_ms=NOW + k * 1000, camera="gate" if k % 2 else "dock", track=k))
    rows.append(ev("update", t_ms=NOW + 20_000, camera="roof", task="hardhat", zone="site"))
    store.add_many(rows)
    assert len(store.list_events(camera="gate")) == 5
    assert [e.track_id for e in store.list_events(camera="dock", limit=2)] == [8, 6]
    assert len(store.list_events(since=NOW + 5000)) == 6
    assert len(store.list_events(since=NOW + 5000, until=NOW + 8000)) == 3
    assert [e.type for e in store.list_events(task="hardhat")] == ["update"]
    assert len(store.list_events(zone="yard", type="start")) == 10
    assert store.counts() == {"start": 10, "update": 1, "end": 0, "crossing": 0}
    assert store.counts(since=NOW + 9000) == {"start": 1, "update": 1, "end": 0, "crossing": 0}
    assert store.prune(before_ms=NOW + 5000) == 5
    assert len(store.list_events(limit=1000)) == 6
    with pytest.raises(ValueError):
        store.list_events(limit=0)


def test_concurrent_writers_and_a_second_connection(store: EventStore, tmp_path: Path) -> None:
    def write(cam: str) -> None:
        for k in range(50):
            store.add(ev(camera=cam, t_ms=NOW + k))

    threads = [threading.Thread(target=write, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with EventStore(path=store.path) as other:  # e.g. the CLI while the gateway runs
        assert other.counts()["start"] == 200


def sqlite_defaulting_to_normal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every new SQLite connection start at ``synchronous=NORMAL``, as a build with
    ``SQLITE_DEFAULT_WAL_SYNCHRONOUS=1`` does (this machine's defaults to FULL), so that a
    store relying on the build's default shows. The level is set explicitly, so switching
    to WAL keeps it (checked here, or the tests using this could not fail)."""
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real(*args, **kwargs)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("PRAGMA journal_mode = WAL")
        assert probe.execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        probe.close()


@pytest.mark.parametrize("keyed", [False, True])
def test_appends_commit_with_synchronous_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyed: bool
) -> None:
    """The events the outbox hands to the control room must outlive a power cut (else the
    chain reuses their seq with other hashes): the writing connection is at FULL, also on
    a SQLite build whose default is NORMAL."""
    sqlite_defaulting_to_normal(monkeypatch)
    key = ChainKey(secret=b"k3y-0f-the-s1te-a-gateway-0123456789") if keyed else None
    with EventStore(path=events_db_path(tmp_path), key=key) as s:  # as the gateway opens it
        assert s._db().execute("PRAGMA synchronous").fetchone()[0] == 2
        s.add(ev())
        assert s._db().execute("PRAGMA synchronous").fetchone()[0] == 2


def test_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EventStoreError, match="cannot open"):
        EventStore(path=blocker / "events.sqlite3")
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EventStoreError):
        EventStore(path=bad)
    s = EventStore(path=tmp_path / "ok.sqlite3")
    s.close()
    s.close()
    with pytest.raises(EventStoreError, match="closed"):
        s.list_events()
    newer = tmp_path / "newer.sqlite3"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(EventStoreError, match="newer"):
        EventStore(path=newer)


def test_locked_database_fails_within_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    EventStore(path=path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with (
            EventStore(path=path, busy_timeout_ms=200) as s,
            pytest.raises(EventStoreError, match="cannot write") as info,
        ):
            s.add(ev())
        assert info.value.code == 5002
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", NOW - 3_600_000),
        ("30m", NOW - 1_800_000),
        ("90s", NOW - 90_000),
        ("2d", NOW - 172_800_000),
        ("1w", NOW - 604_800_000),
        ("1.5h", NOW - 5_400_000),
        ("2024-06-03T10:00:00Z", NOW - 7_200_000),
        ("2024-06-03T10:00:00+00:00", NOW - 7_200_000),
        ("1717408800", NOW - 7_200_000),  # Unix seconds
        ("1717408800000", NOW - 7_200_000),  # Unix milliseconds
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=NOW) == expected


def test_parse_time_rejects() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_time("yesterday-ish", now_ms=NOW)


# -- the command ---------------------------------------------------------------------
def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = int(args.func(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_events_list_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = parse_time("0s")
    with EventStore(path=events_db_path(tmp_path)) as s:
        old = ev(t_ms=now - 2 * 3_600_000, camera="gate")
        recent = ev(t_ms=now - 60_000, camera="gate")
        other = ev(t_ms=now - 30_000, camera="dock")
        s.add_many([old, recent, other])
    code, out, err = run_cli(
        ["events", "list", "--since", "1h", "--camera", "gate", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [r["event_id"] for r in rows] == [recent.event_id]
    assert rows[0] == {**event_to_dict(recent), "ack": None}  # not acknowledged
    assert rows[0]["box"] == [1.5, 2.0, 30.0, 80.25] and rows[0]["time"].endswith("Z")
    code, out, _ = run_cli(["events", "list", "--jsonl", "--data-dir", str(tmp_path)], capsys)
    assert [json.loads(line)["camera"] for line in out.splitlines()] == ["dock", "gate", "gate"]
    code, out, _ = run_cli(
        ["events", "prune", "--older-than", "1h", "--data-dir", str(tmp_path)], capsys
    )
    assert json.loads(out) == {"deleted": 1}


def test_events_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["events", "list", "--since", "soon", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 2 and out == ""
    assert err.startswith("error 5000: --since: time 'soon' is not a duration")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, _, err = run_cli(["events", "list", "--data-dir", str(blocker)], capsys)
    assert code == 2 and err.startswith("error 5002: no events database at")
    (tmp_path / "junk").mkdir()
    events_db_path(tmp_path / "junk").write_bytes(b"not a database" * 100)
    code, _, err = run_cli(["events", "list", "--data-dir", str(tmp_path / "junk")], capsys)
    assert code == 2 and err.startswith("error 5002: cannot prepare events database")
    with pytest.raises(SystemExit):
        run_cli(["events", "list", "--limit", "0"], capsys)


def test_prune_into_the_future_is_refused_and_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--older-than 2099-01-01`` (a typo for a past date) deleted every event with exit
    0; now refused. ``0d`` (now) still prunes."""
    now = parse_time("0s")
    with EventStore(path=events_db_path(tmp_path)) as s:
        s.add_many([ev(t_ms=now - 3_600_000), ev(t_ms=now - 1000)])
    for when in ("2099-01-01", str(now // 1000 + 3600)):
        code, out, err = run_cli(
            ["events", "prune", "--older-than", when, "--data-dir", str(tmp_path)], capsys
        )
        assert code == 2 and out == ""
        assert err == (
            f"error 5000: --older-than {when} is in the future: it would delete every "
            "event. Nothing was deleted\n"
        )
    with EventStore(path=events_db_path(tmp_path)) as s:
        assert len(s.list_events(limit=10)) == 2
    code, out, _ = run_cli(
        ["events", "prune", "--older-than", "0d", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 0 and json.loads(out) == {"deleted": 2}


def test_list_with_until_not_after_since_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--since 1h --until 2h`` (both count back from now) matched nothing and printed
    ``[]`` with exit 0, which reads as 'no events'; now an error naming both."""
    EventStore(path=events_db_path(tmp_path)).close()
    code, out, err = run_cli(
        ["events", "list", "--since", "1h", "--until", "2h", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 2 and out == ""
    assert err == "error 5000: --until 2h is not after --since 1h: no event can match\n"
    code, out, _ = run_cli(
        ["events", "list", "--since", "2h", "--until", "1h", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 0 and json.loads(out) == []


def test_events_command_as_a_subprocess(tmp_path: Path) -> None:
    """The command on its own (as the lead's CLI runs it), reading a database another
    connection is writing."""
    with EventStore(path=events_db_path(tmp_path)) as s:
        s.add(ev(t_ms=parse_time("0s") - 1000))
        code = (
            "import argparse, sys\n"
            "from edge.stream.commands import add_subcommands\n"
            "p = argparse.ArgumentParser(prog='safety-edge')\n"
            "add_subcommands(p.add_subparsers(dest='command', required=True))\n"
            "a = p.parse_args(sys.argv[1:])\n"
            "sys.exit(a.func(a))\n"
        )
        env = {**os.environ, "SAFETY_EDGE_DATA_DIR": str(tmp_path)}
        proc = subprocess.run(
            [sys.executable, "-c", code, "events", "list", "--since", "5m"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert [r["camera"] for r in json.loads(proc.stdout)] == ["gate"]
