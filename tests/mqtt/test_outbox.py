"""The SQLite outbox on real files: order, bounds and drop policy, group commit, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.mqtt.outbox import (
    ALERT_HEADROOM_BYTES,
    ALERT_HEADROOM_ROWS,
    Kind,
    Message,
    Outbox,
    OutboxError,
    OutboxFullError,
)

TOPIC = "safety-edge/gw/events"


def msg(key: str, kind: Kind = "update", size: int = 10) -> Message:
    return Message(key=key, kind=kind, topic=TOPIC, payload=b"x" * size)


def keys(ob: Outbox) -> list[str]:
    return [r.key for r in ob.read_after(0, 10_000)]


def test_append_read_delete_in_order_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path=path) as ob:
        r1 = ob.append([msg("a", "start"), msg("b")])
        r2 = ob.append([msg("c", "end")])
        assert r1.ids == (1, 2) and r2.ids == (3,)
        assert keys(ob) == ["a", "b", "c"]
        assert [r.key for r in ob.read_after(1, 1)] == ["b"]
        assert ob.delete([2, 99]) == 1
        assert ob.rows == 2 and ob.bytes == 2 * (len(TOPIC) + 10)
    with Outbox(path=path) as ob:  # reopened: what was not deleted is still there, in order
        assert keys(ob) == ["a", "c"]
        assert ob.rows == 2 and ob.last_id == 3
        assert ob.append([msg("d")]).ids == (4,)


def test_full_drops_oldest_updates_never_start_end_alert(tmp_path: Path) -> None:
    with Outbox(path=tmp_path / "o.db", max_rows=5) as ob:
        ob.append([msg("s1", "start"), msg("u1"), msg("u2"), msg("a1", "alert"), msg("u3")])
        r = ob.append([msg("e1", "end"), msg("u4")])  # needs 2 rows: u1, u2 go
        assert r.dropped == 2 and r.dropped_keys == ("u1", "u2")
        assert keys(ob) == ["s1", "a1", "u3", "e1", "u4"]
        # 3 protected rows needed, only 2 updates stored: refused whole, nothing dropped
        with pytest.raises(OutboxFullError):
            ob.append([msg("s2", "start"), msg("s3", "start"), msg("s4", "start")])
        assert keys(ob) == ["s1", "a1", "u3", "e1", "u4"]
        r = ob.append([msg("s2", "start"), msg("u5")])
        assert r.dropped_keys == ("u3", "u4")
        r = ob.append([msg("e2", "end")])
        assert r.dropped_keys == ("u5",)
        assert keys(ob) == ["s1", "a1", "e1", "s2", "e2"]
        with pytest.raises(OutboxFullError):  # full of protected rows: even an update is refused
            ob.append([msg("u6")])
        st = ob.stats()
        assert st["dropped_total"] == 5 and st["rejected_total"] == 4 and st["rows"] == 5
        ob.delete([1])  # an ack frees room again
        assert ob.append([msg("u7")]).dropped == 0


def test_alerts_go_into_a_bounded_headroom_when_only_undroppable_rows_remain(
    tmp_path: Path,
) -> None:
    """Full of start/end rows: a batch of alerts still fits, up to ``alert_headroom_rows``
    / ``alert_headroom_bytes`` beyond the limits; nothing is dropped for it, and other
    batches (events, or alerts mixed with events) are refused as before."""
    per = len(TOPIC) + 10
    with Outbox(
        path=tmp_path / "o.db", max_rows=4, alert_headroom_rows=2, alert_headroom_bytes=10 * per
    ) as ob:
        ob.append([msg("s1", "start"), msg("u1"), msg("e1", "end"), msg("s2", "start")])
        # the normal policy comes first: an update can make room, so it goes
        assert ob.append([msg("a1", "alert")]).dropped_keys == ("u1",)
        assert ob.rows == 4
        r = ob.append([msg("a2", "alert"), msg("a3", "alert")])  # the headroom: 6 rows
        assert r.dropped == 0 and ob.rows == 6
        with pytest.raises(OutboxFullError, match="alerts: 2"):  # headroom used up
            ob.append([msg("a4", "alert")])
        with pytest.raises(OutboxFullError):  # events never use it
            ob.append([msg("s3", "start")])
        with pytest.raises(OutboxFullError):
            ob.append([msg("u2")])
        assert keys(ob) == ["s1", "e1", "s2", "a1", "a2", "a3"]
        assert ob.stats()["rejected_total"] == 3
        assert ob.delete([1, 3, 4]) == 3  # acks: 3 rows left, below max_rows again
        with pytest.raises(OutboxFullError):  # mixed batch: the normal limit (3 + 2 > 4)
            ob.append([msg("a5", "alert"), msg("s4", "start")])
        ob.append([msg("s4", "start")])
        ob.append([msg("a5", "alert"), msg("a6", "alert")])  # 6 rows again
        assert ob.rows == 6
    with Outbox(path=tmp_path / "m.db", max_rows=4, alert_headroom_rows=2) as ob:
        ob.append([msg("s1", "start"), msg("u1"), msg("s2", "start"), msg("s3", "start")])
        # 3 alerts: dropping u1 is not enough for max_rows, the headroom alone neither;
        # both together are: u1 goes, and the outbox holds max_rows + 2
        r = ob.append([msg("a1", "alert"), msg("a2", "alert"), msg("a3", "alert")])
        assert r.dropped_keys == ("u1",) and ob.rows == 6
    with Outbox(  # the byte headroom, and an alert larger than it
        path=tmp_path / "b.db", max_rows=100, max_bytes=2 * per, alert_headroom_bytes=per + 5
    ) as ob:
        ob.append([msg("s1", "start"), msg("s2", "start")])
        ob.append([msg("a1", "alert", size=15)])  # per + 5 bytes: exactly the headroom
        assert ob.bytes == 3 * per + 5
        with pytest.raises(OutboxFullError):
            ob.append([msg("a2", "alert", size=1)])
    with Outbox(path=tmp_path / "d.db", max_rows=2) as ob:  # the defaults
        assert (ob.alert_headroom_rows, ob.alert_headroom_bytes) == (
            ALERT_HEADROOM_ROWS,
            ALERT_HEADROOM_BYTES,
        )
        ob.append([msg("s1", "start"), msg("e1", "end")])
        for i in range(ALERT_HEADROOM_ROWS):
            ob.append([msg(f"a{i}", "alert")])
        with pytest.raises(OutboxFullError):
            ob.append([msg("one too many", "alert")])
        assert ob.rows == 2 + ALERT_HEADROOM_ROWS
    with pytest.raises(ValueError, match="headroom"):
        Outbox(path=tmp_path / "x.db", alert_headroom_rows=-1)


def test_byte_bound_and_oversize_message(tmp_path: Path) -> None:
    per = len(TOPIC) + 100
    with Outbox(path=tmp_path / "o.db", max_rows=1000, max_bytes=4 * per) as ob:
        ob.append([msg("u1", size=100), msg("s1", "start", size=100), msg("u2", size=100)])
        r = ob.append([msg("s2", "start", size=150)])  # 50 bytes over: one update is enough
        assert r.dropped_keys == ("u1",)
        assert ob.bytes == 2 * per + len(TOPIC) + 150 <= 4 * per
        r = ob.append([msg("s3", "start", size=150)])  # 100 bytes over: the last update goes
        assert r.dropped_keys == ("u2",)
        with pytest.raises(OutboxFullError):
            ob.append([msg("big", "start", size=4 * per)])


def test_drop_search_continues_after_new_rows(tmp_path: Path) -> None:
    """Dropping starts from a remembered floor; updates appended later still go oldest first."""
    with Outbox(path=tmp_path / "o.db", max_rows=4) as ob:
        ob.append([msg("s1", "start"), msg("u1"), msg("s2", "start"), msg("u2")])
        assert ob.append([msg("u3")]).dropped_keys == ("u1",)
        assert ob.append([msg("s3", "start")]).dropped_keys == ("u2",)
        assert ob.append([msg("u4")]).dropped_keys == ("u3",)
        assert keys(ob) == ["s1", "s2", "s3", "u4"]
    with Outbox(path=tmp_path / "o.db", max_rows=4) as ob:  # floor is rebuilt after reopen
        assert ob.append([msg("e1", "end")]).dropped_keys == ("u4",)


def test_second_opener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path=path) as ob:
        ob.append([msg("a")])
        with pytest.raises(OutboxError, match="in use"):
            Outbox(path=path)
    with Outbox(path=path) as ob:  # released at close
        assert keys(ob) == ["a"]


def test_closed_outbox_raises(tmp_path: Path) -> None:
    ob = Outbox(path=tmp_path / "o.db")
    ob.close()
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        ob.append([msg("a")])


def test_disk_full_leaves_nothing_half_written(tmp_path: Path) -> None:
    with Outbox(path=tmp_path / "o.db") as ob:
        ob.append([msg("a", "start")])
        before = ob.stats()
        assert ob._con is not None
        pages = ob._con.execute("PRAGMA page_count").fetchone()[0]
        ob._con.execute(f"PRAGMA max_page_count={pages}")  # the "disk" is now full
        with pytest.raises(OutboxError, match="full"):
            ob.append([msg(f"b{i}", size=2000) for i in range(50)])
        assert ob.stats() == before and keys(ob) == ["a"]


def test_concurrent_appends_share_one_commit(tmp_path: Path) -> None:
    """Group commit: appends queued while a commit runs are committed together."""
    with Outbox(path=tmp_path / "o.db") as ob:
        results: list[tuple[int, ...]] = []
        ob._lock.acquire()  # a commit "in progress"
        threads = [
            threading.Thread(target=lambda k=k: results.append(ob.append([msg(f"k{k}")]).ids))
            for k in range(6)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while len(ob._queue) < 6 and time.monotonic() < deadline:
            time.sleep(0.001)
        commits = ob.stats()["commits"]
        ob._lock.release()
        for t in threads:
            t.join()
        assert ob.stats()["commits"] == commits + 1
        assert sorted(i for ids in results for i in ids) == [1, 2, 3, 4, 5, 6]


CHILD = """
import sys
from pathlib import Path
from edge.mqtt.outbox import Message, Outbox
ob = Outbox(path=Path(sys.argv[1]), synchronous=sys.argv[2])
i = 0
while True:
    ob.append([Message(key=f"k{i}", kind="start", topic="t", payload=b"p" * 200)])
    sys.stdout.write(f"k{i}\\n"); sys.stdout.flush()
    i += 1
"""


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_committed_rows_survive_sigkill(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), sync], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked = []
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with Outbox(path=path) as ob:  # WAL recovery on open
        stored = set(keys(ob))
    assert set(acked) <= stored
