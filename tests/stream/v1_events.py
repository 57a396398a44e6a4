"""Schema-1 events databases, as the first version of the gateway wrote them, for the
upgrade tests (``test_events_upgrade*.py``). The DDL and INSERT are verbatim from git
history (``git show 07ed728:edge/stream/events.py``; unchanged until af4c0e3 added the chain).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from edge.stream.events import ZoneEvent, events_db_path

REPO = Path(__file__).resolve().parents[2]

V1_SCHEMA = """
    CREATE TABLE events (
        event_id       TEXT PRIMARY KEY,
        type           TEXT NOT NULL CHECK (type IN ('start', 'update', 'end')),
        time_ms        INTEGER NOT NULL,
        camera         TEXT NOT NULL,
        task           TEXT NOT NULL,
        zone           TEXT NOT NULL,
        label          TEXT NOT NULL,
        score          REAL NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        track_id       INTEGER,
        snapshot       TEXT,
        model          TEXT NOT NULL DEFAULT '',
        start_event_id TEXT,
        start_time_ms  INTEGER,
        attributes     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_time ON events (time_ms);
    CREATE INDEX events_camera_time ON events (camera, time_ms);
    CREATE INDEX events_task_time ON events (task, time_ms);
"""
V1_COLUMNS = (
    "event_id, type, time_ms, camera, task, zone, label, score, x1, y1, x2, y2, track_id, "
    "snapshot, model, start_event_id, start_time_ms, attributes"
)
V1_INSERT = f"INSERT OR IGNORE INTO events ({V1_COLUMNS}) VALUES ({', '.join('?' * 18)})"
T0 = 1_790_000_000_000


def v1_row(k: int) -> tuple[object, ...]:
    return (
        f"01OLD{k:021d}",
        "start",
        T0 + k * 500,
        "gate",
        "fence",
        "yard",
        "person",
        0.75,
        10.0,
        20.0,
        30.0 + k % 7,
        40.0,
        k,
        None,
        "person_vehicle",
        None,
        None,
        '{"dwell_s":0.0}',
    )


def make_v1(data: Path, n: int) -> Path:
    """A schema-1 events database with ``n`` rows, in WAL mode as the old gateway left it."""
    data.mkdir(parents=True, exist_ok=True)
    path = events_db_path(data)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(f"BEGIN;{V1_SCHEMA}PRAGMA user_version = 1;COMMIT;")
    with conn:
        conn.executemany(V1_INSERT, (v1_row(k) for k in range(n)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def user_version(path: Path) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def v1_rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(f"SELECT {V1_COLUMNS} FROM events ORDER BY rowid")]
    finally:
        conn.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``safety-edge`` command line of this checkout, in a child process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def backups(data: Path) -> list[Path]:
    return sorted(data.glob("events.sqlite3.schema*.bak"))


def event(k: int) -> ZoneEvent:
    return ZoneEvent(
        event_id=f"01NEW{k:021d}",
        type="start",
        camera="gate",
        task="fence",
        zone="yard",
        label="person",
        score=0.5,
        box=(1.0, 2.0, 3.0, 4.0),
        track_id=k,
        time_ms=T0 + 10_000_000 + k,
    )
