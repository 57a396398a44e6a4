"""A damaged outbox file (SD card after a power cut) is moved aside, not fatal.

Real SQLite files damaged the way a failing medium damages them: random bytes in place of
the file, a page in the middle of a real outbox overwritten, a broken free-list page.
Failures that are not damage (permissions, a folder in the way, another opener) must
still raise :class:`OutboxError` and leave every file where it was. The permission cases
need a user the permissions apply to: as root the open runs in a forked child that drops
to ``nobody`` (65534) first; as any other user it runs in-process.

The publisher tests use a real mosquitto on a free loopback port and a real subscriber.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt import MqttConfig, Publisher
from edge.mqtt import outbox as outbox_module
from edge.mqtt.outbox import (
    KEEP_CORRUPT_COPIES,
    Kind,
    Message,
    Outbox,
    OutboxCorruptError,
    OutboxError,
    StoredMessage,
)
from tests.mqtt.broker import MosquittoBroker, free_port
from tests.mqtt.events import event
from tests.mqtt.subscriber import Subscriber

NAME = "outbox.sqlite3"
ASIDE = re.compile(r"^outbox\.sqlite3\.corrupt-\d{8}T\d{6}Z(-\d+)?$")
PAGE = 4096  # SQLite's default page size, what the outbox uses
KINDS: tuple[Kind, ...] = ("start", "update", "update", "end", "crossing", "alert")


def fill(path: Path, n: int, *, payload: int = 300) -> list[StoredMessage]:
    """A real outbox with ``n`` committed rows (mixed kinds, distinct payloads), closed
    cleanly; returns its rows as read back."""
    rnd = random.Random(7)
    with Outbox(path=path) as ob:
        for start in range(0, n, 100):
            ob.append(
                [
                    Message(
                        key=f"ev-{i:05d}",
                        kind=KINDS[i % len(KINDS)],
                        topic=f"site/gw/{'alerts' if i % 6 == 5 else 'events'}",
                        payload=rnd.randbytes(payload),
                    )
                    for i in range(start, min(n, start + 100))
                ]
            )
        rows = ob.read_after(0, n + 1)
    assert len(rows) == n
    return rows


def overwrite_page(path: Path, page: int, seed: int) -> bytes:
    """Overwrite page ``page`` (1-based) with seeded random bytes; returns the new file."""
    data = bytearray(path.read_bytes())
    data[(page - 1) * PAGE : page * PAGE] = random.Random(seed).randbytes(PAGE)
    path.write_bytes(bytes(data))
    return bytes(data)


def aside_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".corrupt-" in p.name)


def outbox_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.mqtt.outbox" and r.levelno >= logging.ERROR
    ]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry of ``folder`` (recursively) with its bytes (``None`` for folders)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = None if p.is_dir() else p.read_bytes()
    return out


def msg(key: str, kind: Kind = "start") -> Message:
    return Message(key=key, kind=kind, topic="site/gw/events", payload=b'{"n": 1}')


# -- the outbox ------------------------------------------------------------------------------


def test_random_bytes_are_moved_aside_and_a_new_outbox_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a database at all (with a stray ``-wal``): strict open raises
    :class:`OutboxCorruptError` and touches nothing; ``recover_damaged`` moves both aside
    under ``outbox.sqlite3.corrupt-<UTC time>``, says so in one error line (where, and
    that the loss is unknown), and the new outbox stores and reads back messages."""
    path = tmp_path / NAME
    garbage = random.Random(1).randbytes(64 * 1024)
    wal_garbage = random.Random(2).randbytes(8 * 1024)
    path.write_bytes(garbage)
    Path(f"{path}-wal").write_bytes(wal_garbage)

    with pytest.raises(OutboxCorruptError, match="not a database") as err:
        Outbox(path=path)
    assert isinstance(err.value, OutboxError)
    assert path.read_bytes() == garbage and not aside_files(tmp_path)

    caplog.set_level(logging.INFO, logger="edge.mqtt.outbox")
    with Outbox(path=path, recover_damaged=True) as ob:
        rec = ob.recovery
        assert rec is not None
        assert rec.path == path and rec.moved_to.parent == tmp_path
        assert ASIDE.match(rec.moved_to.name), rec.moved_to.name
        assert rec.salvaged == 0 and rec.lost is None and "not a database" in rec.reason
        assert ob.rows == 0
        assert ob.append([msg("a"), msg("b", "update")]).ids == (1, 2)
        assert [r.key for r in ob.read_after(0, 10)] == ["a", "b"]
    assert rec.moved_to.read_bytes() == garbage
    assert Path(f"{rec.moved_to}-wal").read_bytes() == wal_garbage
    assert aside_files(tmp_path) == [rec.moved_to, Path(f"{rec.moved_to}-wal")]
    with Outbox(path=path) as ob:  # a healthy file now: strict open, rows still there
        assert ob.recovery is None and [r.key for r in ob.read_after(0, 10)] == ["a", "b"]

    errors = outbox_errors(caplog)
    assert len(errors) == 1, errors
    assert f"moved it aside to {str(rec.moved_to)!r}" in errors[0], errors[0]
    assert "not a database" in errors[0] and "unknown number" in errors[0], errors[0]


def test_a_moved_aside_file_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Earlier files already hold the names this second (and the next ones) would get:
    the new one gets ``-2`` and the earlier ones keep their bytes (none is old enough to
    be pruned here: see the next test for that)."""
    monkeypatch.setattr(outbox_module, "KEEP_CORRUPT_COPIES", 100, raising=False)
    path = tmp_path / NAME
    now = time.time()
    earlier = {}
    for dt in range(60):  # a minute of names: a slow, loaded CI machine stays inside it
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + dt))
        p = tmp_path / f"{NAME}.corrupt-{stamp}"
        p.write_bytes(f"earlier {dt}".encode())
        earlier[p] = p.read_bytes()
    path.write_bytes(b"\x00" * 10_000)
    with Outbox(path=path, recover_damaged=True) as ob:
        assert ob.recovery is not None
        moved = ob.recovery.moved_to
    assert moved.name.endswith("-2") and ASIDE.match(moved.name), moved
    assert moved.read_bytes() == b"\x00" * 10_000
    assert all(p.read_bytes() == b for p, b in earlier.items())


def test_only_the_newest_damaged_copies_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each moved-aside file can be as large as the outbox: a recovery keeps the one it
    just made and the newest others up to ``KEEP_CORRUPT_COPIES`` (3) in all, deleting
    older ones with their sidecars, oldest first (by the time in the name, then the
    ``-n`` suffix numerically), one warning each. The new one is kept even when a clock
    set back makes it look older; files of other outboxes and other names stay."""
    assert KEEP_CORRUPT_COPIES == 3
    path = tmp_path / NAME
    old = [  # oldest first
        f"{NAME}.corrupt-20200101T000000Z",
        f"{NAME}.corrupt-20200101T000000Z-2",
        f"{NAME}.corrupt-20200101T000000Z-10",
        f"{NAME}.corrupt-20210101T000000Z",
    ]
    kept = [f"{NAME}.corrupt-20220101T000000Z", f"{NAME}.corrupt-20990101T000000Z"]
    others = [
        "other.sqlite3.corrupt-20200101T000000Z",
        f"{NAME}.corrupt-20200101T000000Z.txt",
        f"{NAME}.salvage-notes",
    ]
    for i, name in enumerate(old + kept + others):
        (tmp_path / name).write_bytes(f"file {i}".encode())
    Path(f"{tmp_path / old[0]}-wal").write_bytes(b"wal")
    Path(f"{tmp_path / old[3]}-shm").write_bytes(b"shm")
    Path(f"{tmp_path / kept[0]}-wal").write_bytes(b"kept wal")
    untouched = {n: (tmp_path / n).read_bytes() for n in kept + others + [f"{kept[0]}-wal"]}
    path.write_bytes(b"\x00" * 10_000)
    caplog.set_level(logging.WARNING, logger="edge.mqtt.outbox")
    with Outbox(path=path, recover_damaged=True) as ob:
        assert ob.recovery is not None
        first = ob.recovery.moved_to
    live = {NAME, f"{NAME}-wal", f"{NAME}-shm"}  # the new outbox
    names = sorted(p.name for p in tmp_path.iterdir() if p.name not in live)
    assert names == sorted([*untouched, first.name]), names
    assert all((tmp_path / n).read_bytes() == b for n, b in untouched.items())
    assert first.read_bytes() == b"\x00" * 10_000
    deleted = [
        r.getMessage() for r in caplog.records if "deleted old damaged copy" in r.getMessage()
    ]
    assert len(deleted) == 4
    assert all(f"copy {n} " in line for n, line in zip(old, deleted, strict=True)), deleted
    assert all(r.levelno == logging.WARNING for r in caplog.records if "deleted" in r.getMessage())

    # a second recovery: the newest others are now 2099 and the first one (this year)
    caplog.clear()
    path.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    path.write_bytes(b"\x01" * 10_000)
    with Outbox(path=path, recover_damaged=True) as ob:
        assert ob.recovery is not None
        second = ob.recovery.moved_to
    asides = sorted(p.name for p in tmp_path.iterdir() if ASIDE.match(p.name))
    assert asides == sorted([first.name, second.name, kept[1]])
    assert not Path(f"{tmp_path / kept[0]}-wal").exists()
    assert first.read_bytes() == b"\x00" * 10_000 and second.read_bytes() == b"\x01" * 10_000
    deleted = [
        r.getMessage() for r in caplog.records if "deleted old damaged copy" in r.getMessage()
    ]
    assert len(deleted) == 1 and kept[0] in deleted[0]


def test_a_damaged_page_keeps_the_rows_on_both_sides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 committed rows, one page in the middle overwritten: the rows before the bad
    page (forward scan) and after it (backward scan) are kept byte for byte, in order,
    with their ids; the rows on the bad page are lost and the count is not claimed."""
    path = tmp_path / NAME
    before = fill(path, 1000)
    pages = path.stat().st_size // PAGE
    damaged = overwrite_page(path, pages // 2, seed=3)
    with pytest.raises(OutboxCorruptError, match="malformed"):
        Outbox(path=path)

    caplog.set_level(logging.INFO, logger="edge.mqtt.outbox")
    with Outbox(path=path, recover_damaged=True) as ob:
        rec = ob.recovery
        assert rec is not None and rec.lost is None
        kept = ob.read_after(0, 2000)
        assert ob.append([msg("new")]).ids == (1001,)
    by_id = {r.id: r for r in before}
    assert 0 < rec.salvaged == len(kept) < 1000
    assert kept == [by_id[r.id] for r in kept]  # nothing altered, nothing invented
    assert kept[0].id == 1 and kept[-1].id == 1000  # both sides of the bad page
    assert len(kept) >= 900, len(kept)  # one 4 KiB page holds about a dozen rows
    assert rec.moved_to.read_bytes() == damaged

    errors = outbox_errors(caplog)
    assert len(errors) == 1, errors
    assert str(rec.moved_to) in errors[0] and "malformed" in errors[0], errors[0]
    assert f"{rec.salvaged} undelivered message(s) in it were read and kept" in errors[0]
    assert "an unknown number more could not be read" in errors[0], errors[0]


def test_damage_outside_the_rows_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken free-list page (pages freed by acknowledged rows): the old code opened
    such a file and would hand the broken free list to the next inserts; now
    ``quick_check`` catches it, every row is read, and the count lost is 0."""
    path = tmp_path / NAME
    before = fill(path, 1000)
    with Outbox(path=path) as ob:
        ob.delete(range(1, 601))
    header = path.read_bytes()[:100]
    trunk, free = struct.unpack(">II", header[32:40])
    assert trunk > 1 and free > 10, (trunk, free)
    data = bytearray(path.read_bytes())
    off = (trunk - 1) * PAGE
    data[off : off + 8] = struct.pack(">II", 0xFFFFFF, 0xFFFFFF)
    path.write_bytes(bytes(data))

    caplog.set_level(logging.INFO, logger="edge.mqtt.outbox")
    with Outbox(path=path, recover_damaged=True) as ob:
        rec = ob.recovery
        assert rec is not None and "freelist" in rec.reason
        assert rec.salvaged == 400 and rec.lost == 0
        assert ob.read_after(0, 2000) == before[600:]
    errors = outbox_errors(caplog)
    assert len(errors) == 1 and "all 400 undelivered message(s)" in errors[0], errors


def test_an_interrupted_recovery_is_finished_at_the_next_open(tmp_path: Path) -> None:
    """A power cut between moving the damaged file aside and renaming the copy into
    place leaves no outbox and a finished ``outbox.sqlite3.salvage``: the next open
    takes the copy instead of starting empty."""
    path = tmp_path / NAME
    salvage = tmp_path / f"{NAME}.salvage"
    before = fill(salvage, 30)
    with Outbox(path=path, recover_damaged=True) as ob:
        assert ob.recovery is None
        assert ob.read_after(0, 100) == before
    assert not salvage.exists()


def test_a_half_written_copy_from_an_interrupted_recovery_is_replaced(tmp_path: Path) -> None:
    """The damaged file is still there (the power cut hit while the copy was written):
    the stale copy is thrown away and the recovery runs again."""
    path = tmp_path / NAME
    fill(tmp_path / f"{NAME}.salvage", 5)
    before = fill(path, 200)
    overwrite_page(path, path.stat().st_size // PAGE // 2, seed=4)
    with Outbox(path=path, recover_damaged=True) as ob:
        rec = ob.recovery
        assert rec is not None and 0 < rec.salvaged < 200
        assert {r.key for r in ob.read_after(0, 500)} <= {r.key for r in before}
    assert not (tmp_path / f"{NAME}.salvage").exists()


# -- failures that are not damage ------------------------------------------------------------


def unprivileged(fn: Callable[[], str]) -> str:
    """``fn()`` as a user that file permissions apply to: in-process for a normal user;
    for root in a forked child that switches to nobody (65534) first. Returns what
    ``fn`` returned, or ``<ExceptionType>: <message>``."""
    if os.geteuid() != 0:
        try:
            return fn()
        except Exception as exc:  # reported to the test as text, like the child's
            return f"{type(exc).__name__}: {exc}"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        out = "child failed"
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = fn()
        except BaseException as exc:
            out = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(w, out.encode())
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def open_recovering(path: Path) -> Callable[[], str]:
    def run() -> str:
        with Outbox(path=path, recover_damaged=True) as ob:
            return f"opened (recovery: {ob.recovery})"

    return run


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder nobody can reach (pytest's tmp_path sits under a 0700 folder of root)."""
    d = Path(tempfile.mkdtemp(prefix="outbox-perm-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o755)
        shutil.rmtree(d)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("folder not writable, no file yet", "folder .* is not writable"),
        ("folder not writable, healthy outbox", "folder .* is not writable"),
        ("file not readable, folder writable", "file is not readable and writable"),
        ("folder not searchable", "unable to open database file"),
    ],
)
def test_permission_problems_are_errors_and_nothing_is_moved(
    shared_dir: Path, case: str, expected: str
) -> None:
    """No permission is not damage: the open fails with :class:`OutboxError` (not the
    corrupt one) naming the cause, and every file stays where it was -- including an
    unreadable outbox in a folder where moving it aside would have worked."""
    data = shared_dir / "data"
    data.mkdir()
    path = data / NAME
    if case != "folder not writable, no file yet":
        fill(path, 20)
        os.chmod(path, 0o666)
    was = snapshot(data)
    if case == "file not readable, folder writable":
        os.chmod(path, 0o000)
        os.chmod(data, 0o777)
    elif case == "folder not searchable":
        os.chmod(data, 0o000)
    else:
        os.chmod(data, 0o555)

    got = unprivileged(open_recovering(path))

    assert got.startswith("OutboxError: "), got
    assert "damaged" not in got and re.search(expected, got), got
    os.chmod(data, 0o755)
    if path.exists():
        os.chmod(path, 0o644)
    assert snapshot(data) == was


def test_a_folder_in_the_way_and_a_file_as_folder_are_errors(tmp_path: Path) -> None:
    """A folder where the file should be, and a file where its folder should be: clear
    :class:`OutboxError`, nothing moved (the old code let the second escape as a bare
    ``FileExistsError``)."""
    (tmp_path / NAME).mkdir()
    with pytest.raises(OutboxError, match="unable to open") as err:
        Outbox(path=tmp_path / NAME, recover_damaged=True)
    assert not isinstance(err.value, OutboxCorruptError)
    assert (tmp_path / NAME).is_dir() and not aside_files(tmp_path)

    (tmp_path / "data").write_bytes(b"not a folder")
    with pytest.raises(OutboxError, match="cannot create its folder"):
        Outbox(path=tmp_path / "data" / NAME, recover_damaged=True)
    assert (tmp_path / "data").read_bytes() == b"not a folder"


def test_an_outbox_in_use_is_never_moved_aside(tmp_path: Path) -> None:
    """A second opener (the lock is exclusive) is told the file is in use; the first
    keeps working on the same file."""
    path = tmp_path / NAME
    with Outbox(path=path) as first:
        first.append([msg("a")])
        with pytest.raises(OutboxError, match="in use by another process") as err:
            Outbox(path=path, recover_damaged=True)
        assert not isinstance(err.value, OutboxCorruptError)
        first.append([msg("b")])
        assert [r.key for r in first.read_after(0, 10)] == ["a", "b"]
    assert not aside_files(tmp_path)


# -- the publisher ---------------------------------------------------------------------------


def cfg(port: int) -> MqttConfig:
    return MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "backoff_min_s": 0.05, "backoff_max_s": 0.3}
    )


def test_a_publisher_on_a_damaged_outbox_starts_and_delivers(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway's outbox holds 400 undelivered events (no broker during the first run)
    when a page in its middle goes bad. The next publisher is built and started anyway:
    the events that could be read and a new one reach a real mosquitto in order, and the
    loss is visible -- one error log line naming the moved-aside file, the
    ``mqtt_outbox_corrupt`` alert (hook and alerts topic) and the counters."""
    path = tmp_path / "data" / NAME
    with Publisher(config=cfg(free_port()), outbox_path=path, gateway_id="gw-dmg") as pub:
        queued = pub.publish_events([event(i, "update") for i in range(400)])
    assert len(queued) == 400
    damaged = overwrite_page(path, path.stat().st_size // PAGE // 2, seed=5)

    caplog.set_level(logging.INFO, logger="edge.mqtt.outbox")
    hooked: list[dict[str, Any]] = []
    sub = Subscriber(
        host=broker.host, port=broker.port, topics=["safety-edge/gw-dmg/#"], client_id="dmg"
    ).start()
    try:
        with Publisher(
            config=cfg(broker.port), outbox_path=path, gateway_id="gw-dmg", on_alert=hooked.append
        ) as pub:
            rec = pub.outbox.recovery
            assert rec is not None and 0 < rec.salvaged < 400 and rec.lost is None
            new_id = pub.publish_event(event(1000, "start"))
            assert pub.flush(15)
            m = pub.metrics()
        assert sub.wait_for(
            lambda: any(r.json()["event_id"] == new_id for r in sub.on_topic("/events")), 10
        )
        events = [r.json()["event_id"] for r in sub.on_topic("/events")]
        alerts = [r.json()["alert"] for r in sub.on_topic("/alerts")]
    finally:
        sub.stop()

    kept = [e for e in queued if e in set(events)]
    assert len(kept) == rec.salvaged
    assert events == [*kept, new_id]  # old ones in their order, then the new one
    assert kept[0] == queued[0] and kept[-1] == queued[-1]
    assert m["mqtt_outbox_corrupt_total"] == 1
    assert m["mqtt_outbox_salvaged_total"] == rec.salvaged
    assert [a["kind"] for a in hooked] == ["mqtt_outbox_corrupt"]
    assert [a for a in alerts if a["kind"] == "mqtt_outbox_corrupt"] == hooked
    alert = hooked[0]
    assert alert["severity"] == "critical" and alert["key"] == "gw-dmg"
    assert alert["moved_to"] == str(rec.moved_to) and alert["salvaged"] == rec.salvaged
    assert alert["lost"] is None and "an unknown number lost" in alert["message"]
    assert rec.moved_to.read_bytes() == damaged
    errors = outbox_errors(caplog)
    assert len(errors) == 1 and str(rec.moved_to) in errors[0], errors
