"""Tamper-evident evidence on a real SQLite file and real JPEG files: the hash chain,
``safety-edge events verify`` (in-process and as a subprocess), tampering with raw
sqlite3 and with the files, pruning, the schema migration, and two writer processes."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge.mqtt.ids import EventIdGenerator
from edge.stream.commands import add_subcommands
from edge.stream.events import EventStore, ZoneEvent, events_db_path
from edge.stream.evidence import (
    CHAINED_COLUMNS,
    GENESIS_HASH,
    canonical_row,
    file_sha256,
    row_hash,
    verify_evidence,
)
from edge.stream.snapshots import SnapshotStore
from tests.stream.chain_events import T0
from tests.stream.chain_events import ev as chain_event

_ids = EventIdGenerator()  # ids for rows written by hand

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "vtest_frame.jpg"


def ev(k: int, *, camera: str = "gate", t_ms: int | None = None) -> ZoneEvent:
    """Event number ``k``: one per minute from T0, a start every third (others updates),
    with a non-ASCII attribute."""
    return chain_event(k, camera=camera, t_ms=t_ms, attributes={"dwell_s": 2.5, "note": "größe"})


class Site:
    """A data folder with an events database and a snapshot folder of real JPEGs."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.snaps = self.data / "snapshots"
        self.db = events_db_path(self.data)
        self.snapshots = SnapshotStore(root=self.snaps, max_age_days=None, max_total_bytes=None)
        img = cv2.imread(str(SAMPLE))
        assert img is not None
        self.image = img

    def write(self, events: list[ZoneEvent]) -> list[ZoneEvent]:
        """Snapshots for the starts (as the pipeline does), then store them."""
        out = []
        for e in events:
            if e.type == "start":
                saved = self.snapshots.save_hashed(self.image, event=e)
                assert saved is not None
                e = replace(e, snapshot=saved.path, snapshot_sha256=saved.sha256)
            out.append(e)
        with EventStore(path=self.db) as store:
            assert store.add_many(out) == len(out)
        return out

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> None:
        """A raw edit, as someone with the sqlite3 shell would make it."""
        conn = sqlite3.connect(self.db)
        with conn:
            conn.execute(statement, args)
        conn.close()


@pytest.fixture()
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def verify(
    site: Site, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["events", "verify", "--data-dir", str(site.data), *extra])
    code = int(args.func(args))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else {}), err


def first_break(report: dict[str, Any]) -> tuple[str, int, int | None]:
    b = report["first_break"]
    return b["kind"], b["row"], b["seq"]


# -- the hash and the snapshot digest ----------------------------------------------------
def test_canonical_form_is_the_documented_one() -> None:
    values: dict[str, Any] = dict.fromkeys(CHAINED_COLUMNS)
    values.update(
        seq=1, event_id="01J", type="start", time_ms=1717416000000, camera="gate", task="fence",
        zone="yard", label="person", score=0.75, x1=1.5, y1=2.0, x2=30.0, y2=80.25, track_id=1,
        model="m", attributes='{"dwell_s":2.5,"n":"größe"}', prev_hash=GENESIS_HASH,
        extra_column="not hashed",
    )  # fmt: skip
    expected = (
        '{"attributes":"{\\"dwell_s\\":2.5,\\"n\\":\\"größe\\"}","camera":"gate",'
        '"event_id":"01J","label":"person","model":"m","prev_hash":"' + "0" * 64 + '",'
        '"score":0.75,"seq":1,"snapshot":null,"snapshot_sha256":null,"start_event_id":null,'
        '"start_time_ms":null,"task":"fence","time_ms":1717416000000,"track_id":1,'
        '"type":"start","x1":1.5,"x2":30.0,"y1":2.0,"y2":80.25,"zone":"yard"}'
    ).encode()
    assert canonical_row(values) == expected
    assert row_hash(values) == hashlib.sha256(expected).hexdigest()
    values["score"] = float("nan")
    with pytest.raises(ValueError):
        canonical_row(values)


def test_snapshot_digest_is_of_the_bytes_on_disk(site: Site) -> None:
    e = ev(0)
    saved = site.snapshots.save_hashed(site.image, event=e)
    assert saved is not None
    data = (site.snaps / saved.path).read_bytes()
    assert saved.size == len(data) and data[:2] == b"\xff\xd8"
    assert saved.sha256 == hashlib.sha256(data).hexdigest() == file_sha256(site.snaps / saved.path)
    # save() is the same write without the digest
    assert site.snapshots.save(site.image, event=ev(3)) is not None


# -- verify: intact and tampered ---------------------------------------------------------
def test_intact_chain_verifies(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    written = site.write([ev(k) for k in range(9)])
    code, report, err = verify(site, capsys)
    assert code == 0 and err == ""
    assert report["ok"] is True and report["rows"] == 9 and report["problem_count"] == 0
    assert report["snapshots"] == {"ok": 3, "expired": 0, "unhashed": 0}
    assert report["anchor"] == {"seq": 0, "hash": GENESIS_HASH, "pruned": 0}
    conn = sqlite3.connect(site.db)
    rows = conn.execute("SELECT seq, prev_hash, hash, event_id FROM events ORDER BY seq").fetchall()
    conn.close()
    assert [r[0] for r in rows] == list(range(1, 10))
    assert [r[3] for r in rows] == [e.event_id for e in written]
    assert rows[0][1] == GENESIS_HASH
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, 9))
    assert report["head"] == {"seq": 9, "hash": rows[-1][2]}
    with EventStore(path=site.db) as store:  # the event reads back with its digest
        back = store.get(written[0].event_id)
    assert back is not None and back.snapshot_sha256 == written[0].snapshot_sha256
    assert back.mqtt_fields()["snapshot_sha256"] == written[0].snapshot_sha256


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("score", 0.99),
        ("label", "vehicle"),
        ("time_ms", T0 + 1),
        ("x1", 0.0),
        ("track_id", None),
        ("attributes", '{"dwell_s":0.5}'),
        ("snapshot_sha256", "0" * 64),
        ("event_id", "01HZZZZZZZZZZZZZZZZZZZZZZZ"),
    ],
)
def test_a_field_edited_with_sqlite3_is_named_at_its_row(
    site: Site, capsys: pytest.CaptureFixture[str], column: str, value: object
) -> None:
    written = site.write([ev(k) for k in range(6)])
    site.sql(f"UPDATE events SET {column} = ? WHERE seq = 4", (value,))
    code, report, err = verify(site, capsys, "--no-snapshots")
    assert code == 1
    assert first_break(report) == ("row_edited", 4, 4)
    assert report["problem_count"] == 1  # only that row: the links around it hold
    if column != "event_id":
        assert report["first_break"]["event_id"] == written[3].event_id
    assert err.startswith("broken: row_edited at row 4 (seq 4, event ")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(5)])
    conn = sqlite3.connect(site.db)
    cols = ", ".join(CHAINED_COLUMNS)
    row = conn.execute(f"SELECT {cols} FROM events WHERE seq = 2").fetchone()
    values = dict(zip(CHAINED_COLUMNS, row, strict=True))
    values["label"] = "nobody"
    with conn:
        conn.execute(
            "UPDATE events SET label = ?, hash = ? WHERE seq = 2", ("nobody", row_hash(values))
        )
    conn.close()
    code, report, _ = verify(site, capsys, "--no-snapshots")
    assert code == 1 and first_break(report) == ("link_broken", 3, 3)


def test_deleted_rows_are_found_in_the_middle_at_the_start_and_at_the_end(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(8)])
    site.sql("DELETE FROM events WHERE seq = 4")
    code, report, err = verify(site, capsys, "--no-snapshots")
    assert code == 1 and first_break(report) == ("rows_deleted", 4, 5)  # row 4 is now seq 5
    assert "seq 4 missing" in report["first_break"]["detail"] and "rows_deleted" in err
    site.sql("DELETE FROM events WHERE seq = 1")  # the oldest, without moving the anchor
    code, report, _ = verify(site, capsys, "--no-snapshots")
    assert first_break(report) == ("rows_deleted", 1, 2)
    site.sql("DELETE FROM events WHERE seq = 8")  # the newest
    code, report, _ = verify(site, capsys, "--no-snapshots")
    assert code == 1 and report["problem_count"] == 3
    last = report["problems"][-1]
    assert last["kind"] == "rows_deleted" and last["row"] == 0 and "head is seq 8" in last["detail"]


def test_inserted_rows_are_found(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.write([ev(k) for k in range(4)])
    copy = (
        "INSERT INTO events (event_id, type, time_ms, camera, task, zone, label, score, x1, y1, "
        "x2, y2, attributes, seq, prev_hash, hash) SELECT ?, type, time_ms, camera, task, zone, "
        "label, score, x1, y1, x2, y2, attributes, ?, prev_hash, hash FROM events WHERE seq = 2"
    )
    site.sql(copy, ("01HZZZZZZZZZZZZZZZZZZZZZZA", None))  # no chain position
    code, report, _ = verify(site, capsys, "--no-snapshots")
    assert code == 1 and report["first_break"]["kind"] == "row_inserted"
    site.sql("DELETE FROM events WHERE seq IS NULL")
    site.sql(copy, ("01HZZZZZZZZZZZZZZZZZZZZZZB", 5))  # appended after the head
    code, report, _ = verify(site, capsys, "--no-snapshots")
    assert code == 1 and first_break(report) == ("row_edited", 5, 5)
    kinds = [p["kind"] for p in report["problems"]]
    assert "row_inserted" in kinds  # beyond the recorded head


def test_modified_and_removed_snapshots_are_found(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    written = site.write([ev(k) for k in range(12)])  # starts at k = 0, 3, 6, 9
    starts = [e for e in written if e.type == "start"]
    assert all(e.snapshot is not None for e in starts)
    # re-encode the second start's picture: a valid JPEG, different bytes
    p = site.snaps / str(starts[1].snapshot)
    img = cv2.imread(str(p))
    cv2.rectangle(img, (0, 0), (40, 40), (0, 0, 0), -1)
    assert cv2.imwrite(str(p), img)
    code, report, err = verify(site, capsys)
    assert code == 1 and first_break(report) == ("snapshot_modified", 4, 4)
    assert report["first_break"]["event_id"] == starts[1].event_id
    assert "snapshot_modified at row 4" in err
    # a removed picture in the middle (an older one is still there)
    (site.snaps / str(starts[2].snapshot)).unlink()
    code, report, _ = verify(site, capsys)
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [
        ("snapshot_modified", 4),
        ("snapshot_missing", 7),
    ]
    assert "older snapshot is still present" in report["problems"][1]["detail"]


def test_snapshots_removed_by_retention_are_not_a_break(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweeper deletes the oldest first: a missing oldest snapshot is expired."""
    written = site.write([ev(k) for k in range(12)])
    starts = [e for e in written if e.type == "start"]
    now = (T0 + 12 * 60_000) / 1000
    for e in starts:
        os.utime(site.snaps / str(e.snapshot), (now, (e.time_ms / 1000)))
    site.snapshots.max_total_bytes = sum(
        (site.snaps / str(e.snapshot)).stat().st_size for e in starts[2:]
    )
    result = site.snapshots.sweep(now=now)
    assert result.deleted_by_size == 2
    assert not (site.snaps / str(starts[0].snapshot)).exists()
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["snapshots"] == {"ok": 2, "expired": 2, "unhashed": 0}
    code, report, _ = verify(site, capsys, "--strict-snapshots")
    assert code == 1 and first_break(report) == ("snapshot_missing", 1, 1)


# -- pruning ---------------------------------------------------------------------------
def test_pruning_keeps_the_chain_verifiable(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.write([ev(k) for k in range(10)])
    with EventStore(path=site.db) as store:
        assert store.prune(before_ms=T0 + 4 * 60_000) == 4
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["rows"] == 6
    assert report["anchor"]["seq"] == 4 and report["anchor"]["pruned"] == 4
    site.write([ev(k) for k in range(10, 13)])  # appends continue after pruning
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["rows"] == 9 and report["head"]["seq"] == 13
    with EventStore(path=site.db) as store:  # everything, then more
        assert store.prune(before_ms=T0 + 99 * 60_000) == 9
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["rows"] == 0 and report["anchor"]["seq"] == 13
    site.write([ev(k) for k in range(20, 22)])
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["rows"] == 2 and report["anchor"]["pruned"] == 13
    site.sql("DELETE FROM events WHERE seq = 14")  # deleted by hand, not pruned
    code, report, _ = verify(site, capsys)
    assert code == 1 and first_break(report) == ("rows_deleted", 1, 15)


def test_prune_deletes_only_a_prefix_of_the_chain(site: Site) -> None:
    late = ev(1, t_ms=T0)  # an old event stored after a newer one
    site.write([ev(0, t_ms=T0 + 60_000), ev(3, t_ms=T0 + 120_000), late, ev(4, t_ms=T0)])
    with EventStore(path=site.db) as store:
        assert store.prune(before_ms=T0 + 90_000) == 1  # seq 1 only: seq 2 is newer
        assert {e.event_id for e in store.list_events()} >= {late.event_id}
        assert store.prune(before_ms=T0 + 200_000) == 3
        assert store.list_events() == []


# -- migration, errors ------------------------------------------------------------------------
V1_SCHEMA = """
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('start', 'update', 'end')),
    time_ms INTEGER NOT NULL, camera TEXT NOT NULL, task TEXT NOT NULL, zone TEXT NOT NULL,
    label TEXT NOT NULL, score REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    track_id INTEGER, snapshot TEXT, model TEXT NOT NULL DEFAULT '',
    start_event_id TEXT, start_time_ms INTEGER, attributes TEXT NOT NULL DEFAULT '{}');
CREATE INDEX events_time ON events (time_ms);
CREATE INDEX events_camera_time ON events (camera, time_ms);
CREATE INDEX events_task_time ON events (task, time_ms);
PRAGMA user_version = 1;
"""


def test_a_version_1_database_is_migrated_and_chained(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.data.mkdir(parents=True)
    site.snaps.mkdir()
    conn = sqlite3.connect(site.db)
    conn.executescript(V1_SCHEMA)
    ids = [_ids() for _ in range(5)]
    with conn:
        for k, eid in enumerate(ids):
            conn.execute(
                "INSERT INTO events (event_id, type, time_ms, camera, task, zone, label, score, "
                "x1, y1, x2, y2, track_id, snapshot, attributes) "
                "VALUES (?, 'start', ?, 'gate', 'fence', 'yard', 'person', 0.5, 1, 2, 3, 4, ?, ?, "
                "'{}')",
                (eid, T0 - k * 1000, k, f"gate/old-{k}.jpg"),
            )
    conn.close()
    (site.snaps / "gate").mkdir()
    for k in range(5):
        (site.snaps / "gate" / f"old-{k}.jpg").write_bytes(b"old picture")
    code, _, err = verify(site, capsys)
    assert code == 2 and "schema version 1" in err
    with EventStore(path=site.db) as store:  # opening migrates
        assert len(store.list_events()) == 5
        store.add(ev(100))
    conn = sqlite3.connect(site.db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2  # 2: the chain; later ones too
    order = conn.execute("SELECT event_id FROM events ORDER BY seq").fetchall()
    conn.close()
    assert [r[0] for r in order][:5] == ids  # insertion order, not time order
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["rows"] == 6
    assert report["snapshots"] == {"ok": 0, "expired": 0, "unhashed": 5}


def test_verify_errors(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = verify(site, capsys)
    assert code == 2 and err.startswith("error 5002: no events database")
    site.write([ev(1)])  # no snapshot: a missing folder is fine
    code, report, _ = verify(site, capsys, "--snapshots", str(site.data / "elsewhere"))
    assert code == 0 and report["snapshots"] == {"ok": 0, "expired": 0, "unhashed": 0}
    site.write([ev(3)])  # a start with a snapshot: a wrong folder is an error, not "expired"
    code, _, err = verify(site, capsys, "--snapshots", str(site.data / "elsewhere"))
    assert code == 2 and "does not exist" in err
    code, report, _ = verify(site, capsys, "--no-snapshots")
    assert code == 0 and report["snapshots"] is None


# -- concurrency --------------------------------------------------------------------------
WRITER = """
import sys
import time
from edge.mqtt.ids import EventIdGenerator
from edge.stream.events import EventStore, ZoneEvent
ids = EventIdGenerator()
path, camera, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with EventStore(path=path) as store:
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    for k in range(n):
        store.add(ZoneEvent(event_id=ids(), type="update", camera=camera, task="t", zone="z",
                            label="person", score=0.5, box=(0, 0, 1, 1), track_id=k,
                            time_ms=1_700_000_000_000 + k))
        time.sleep(0.002)  # let the other writer in between: real interleaving
"""


def test_two_processes_writing_at_once_make_one_chain(site: Site, tmp_path: Path) -> None:
    """Two writer processes (as the gateway and a second tool would be) append at the same
    time; the chain has no fork, and a verifier reading meanwhile always sees it intact."""
    EventStore(path=site.db).close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(site.db), cam, "150"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for cam in ("a", "b")
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    reports: list[tuple[bool, int]] = []
    stop = threading.Event()

    def verifier() -> None:
        while not stop.is_set():
            conn = sqlite3.connect(
                f"{site.db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            r = verify_evidence(conn, snapshots_root=None)
            conn.close()
            reports.append((r.ok, r.rows))

    t = threading.Thread(target=verifier)
    t.start()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    try:
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        stop.set()
        t.join()
    conn = sqlite3.connect(site.db)
    rows = conn.execute("SELECT seq, camera FROM events ORDER BY seq").fetchall()
    conn.close()
    assert [r[0] for r in rows] == list(range(1, 301))
    cams = [r[1] for r in rows]
    assert cams.count("a") == cams.count("b") == 150
    switches = sum(cams[i] != cams[i + 1] for i in range(299))
    print(f"writer switches {switches}, verifier passes {len(reports)}: {reports[:20]}")
    assert switches >= 10  # really interleaved, not one after the other
    assert reports and all(ok for ok, _ in reports), reports
    assert any(0 < n < 300 for _, n in reports)  # some passes ran while both were writing
    proc = subprocess.run(  # the command itself, as its own process
        [sys.executable, "-m", "edge.cli", "events", "verify", "--data-dir", str(site.data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 300
