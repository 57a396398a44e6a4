"""The events database's size bound (``storage.events_max_mb``, ``events prune --max-mb``).

Real SQLite files through :func:`edge.stream.retention.prune_events` (the pass the gateway
runs hourly and ``safety-edge events prune`` runs once), checked with the real
``safety-edge events verify``. What they pin: a store over the bound loses its oldest
events (a prefix of the chain) down to 90 % of it, the chain still verifies, the
acknowledgements of deleted incidents go with them, and later events reuse the freed
pages, so the file stops growing however many events follow."""

from __future__ import annotations

import argparse
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.config import config_from_mapping
from edge.errors import ConfigError
from edge.service.reference import reference_markdown
from edge.stream.acks import Ack, AckStore
from edge.stream.chain_key import EVENTS_KEY_ENV, ChainKey
from edge.stream.commands import add_subcommands
from edge.stream.events import SIZE_PRUNE_TO, EventStore, ZoneEvent
from edge.stream.retention import prune_events
from tests.stream.chain_events import ChainSite, ev

MIB = 1024 * 1024
BOUND = MIB
KEY = "size-bound-test-key-0123456789abcdef"


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = int(args.func(args))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else {}), err


def verify(site: ChainSite, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    """``safety-edge events verify`` on the site; asserts it passes."""
    code, report, err = cli(
        ["events", "verify", "--no-snapshots", "--data-dir", str(site.data), *extra], capsys
    )
    assert code == 0 and report["ok"], (report, err)
    return report


def events(first: int, n: int) -> list[ZoneEvent]:
    """``n`` events ``first .. first + n - 1`` (one a minute; ~400 bytes stored each)."""
    return [ev(k) for k in range(first, first + n)]


def write(site: ChainSite, batch: list[ZoneEvent], *, key: ChainKey | None = None) -> None:
    with EventStore(path=site.db, key=key) as store:
        assert store.add_many(batch) == len(batch)


def ids(site: ChainSite) -> list[str]:
    return [str(r["event_id"]) for r in site.rows()]


def size_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.stream"
        and r.levelno == logging.WARNING
        and "size bound" in r.getMessage()
    ]


def ack(incident: ZoneEvent, named: ZoneEvent | None = None) -> Ack:
    return Ack(
        incident_id=incident.event_id,
        event_id=(named or incident).event_id,
        by="Ana",
        at_ms=incident.time_ms + 5000,
        note=None,
        request_id=None,
        camera=incident.camera,
        task=incident.task,
        zone=incident.zone,
    )


# -- the rule ----------------------------------------------------------------------------------
def test_a_store_over_the_bound_loses_its_oldest_events_down_to_90_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """4000 events (~1.6 MiB live), bound 1 MiB: the oldest go, a prefix in chain order,
    until live data is at most 90 % of the bound (and not far under it); the chain
    verifies with the last deleted row as anchor; one WARNING names how many and the
    oldest kept; a second pass deletes nothing (under the bound: hysteresis)."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    site = ChainSite(tmp_path)
    written = events(0, 4000)
    write(site, written)
    with EventStore(path=site.db) as store, AckStore(path=site.db) as acks:
        before = store.db_size()
        assert before.live_bytes > 1.5 * BOUND  # the premise
        report = prune_events(store, acks, before_ms=None, max_bytes=BOUND)
        assert prune_events(store, acks, before_ms=None, max_bytes=BOUND).deleted == 0
    kept = ids(site)
    n = len(written) - len(kept)
    assert report.by_size == report.deleted == n > 0 and report.by_age == 0
    assert 0.8 * SIZE_PRUNE_TO * BOUND < report.size.live_bytes <= SIZE_PRUNE_TO * BOUND
    assert report.size.file_bytes == before.file_bytes  # SQLite keeps the pages (reused)
    assert kept == [e.event_id for e in written[n:]]  # the oldest went, in chain order
    checked = verify(site, capsys)
    assert checked["rows"] == len(kept)
    assert checked["anchor"]["seq"] == n and checked["anchor"]["pruned"] == n
    assert report.size_prune is not None
    assert report.size_prune.oldest_kept_ms == written[n].time_ms
    (warning,) = size_warnings(caplog)
    oldest = datetime.fromtimestamp(written[n].time_ms / 1000, tz=timezone.utc)
    assert f"deleted the oldest {n} events" in warning
    assert oldest.isoformat(timespec="seconds")[:19] in warning
    assert "1.0 MiB (storage.events_max_mb)" in warning
    # appends go on after the anchor
    write(site, events(4000, 3))
    assert verify(site, capsys)["rows"] == len(kept) + 3


def test_later_events_reuse_the_freed_pages_so_the_file_stops_growing(tmp_path: Path) -> None:
    """Eight cycles of "an hour of a flood" (1000 events, ~0.4 MiB) and a prune: after each
    prune live data is under the bound; the database file grows to the bound plus one
    cycle's events and then by a few pages at most, though 11 000 events (~4.5 MiB) were
    written in all. The ``-wal`` stays near
    SQLite's auto-checkpoint size (1000 pages, ~4 MiB) plus one transaction."""
    site = ChainSite(tmp_path)
    write(site, events(0, 3000))
    files: list[int] = []
    disk: list[int] = []
    with EventStore(path=site.db) as store:
        for c in range(8):
            report = prune_events(store, None, before_ms=None, max_bytes=BOUND)
            assert report.by_size > 0 and report.size.live_bytes <= SIZE_PRUNE_TO * BOUND
            files.append(report.size.file_bytes)
            store.add_many(events(3000 + c * 1000, 1000))
            disk.append(site.db.stat().st_size)
        wal = Path(f"{site.db}-wal").stat().st_size
        total = store.db_size().file_bytes
    # after the second cycle it grows by a few pages at most (the live size after each
    # prune varies by a batch's rounding), not by the ~0.4 MiB each cycle writes
    assert files == sorted(files) and files[-1] - files[2] < 0.02 * BOUND, files
    assert total == files[-1] and max(disk) <= files[-1]
    assert total < 1.6 * BOUND, total
    assert wal < 6 * MIB, wal
    assert len(ids(site)) < 4000  # 11000 written


def test_without_a_bound_nothing_is_deleted_by_size(tmp_path: Path) -> None:
    """``max_bytes`` ``None`` or ``0`` (config ``null`` or ``0``): no size prune."""
    site = ChainSite(tmp_path)
    write(site, events(0, 3000))
    with EventStore(path=site.db) as store, AckStore(path=site.db) as acks:
        assert store.db_size().live_bytes > BOUND
        for off in (None, 0):
            report = prune_events(store, acks, before_ms=None, max_bytes=off)
            assert (report.deleted, report.size_prune) == (0, None)
    assert len(ids(site)) == 3000
    storage = config_from_mapping({"storage": {"events_max_mb": 0}}).storage
    assert storage.events_max_bytes() is None
    assert (
        config_from_mapping({"storage": {"events_max_mb": None}}).storage.events_max_bytes() is None
    )


def test_age_then_size_in_one_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The retention goes first (its count is ``by_age``), the bound takes the rest."""
    site = ChainSite(tmp_path)
    written = events(0, 4000)  # one a minute from T0
    write(site, written)
    cut = written[100].time_ms  # the first 100 are older
    with EventStore(path=site.db) as store, AckStore(path=site.db) as acks:
        report = prune_events(store, acks, before_ms=cut, max_bytes=BOUND, now_ms=cut)
    assert report.by_age == 100 and report.by_size > 0
    assert ids(site) == [e.event_id for e in written[report.deleted :]]
    assert verify(site, capsys)["anchor"]["pruned"] == report.deleted


def test_acknowledgements_of_deleted_incidents_go_with_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a size prune: the acknowledgement of an incident whose events all went is
    deleted; one whose command named an event still stored (the incident's ``end``,
    stored much later) stays, as does one of a kept incident. Their own times do not
    matter (the bound deletes before the retention)."""
    site = ChainSite(tmp_path)
    written = events(0, 4000)
    old, long_start, new = written[0], written[3], written[3999]  # k % 3 == 0: a start
    assert (old.type, long_start.type, new.type) == ("start", "start", "start")
    long_end = ZoneEvent(
        event_id="01LONGINCIDENTEND000000000",
        type="end",
        camera=long_start.camera,
        task=long_start.task,
        zone=long_start.zone,
        label=long_start.label,
        score=0.9,
        box=(1.0, 2.0, 3.0, 4.0),
        track_id=long_start.track_id,
        time_ms=written[-1].time_ms + 60_000,
        start_event_id=long_start.event_id,
        start_time_ms=long_start.time_ms,
    )
    write(site, [*written, long_end])
    with AckStore(path=site.db) as acks:
        for a in (ack(old), ack(long_start, long_end), ack(new)):
            assert acks.record(a)[1]
    with EventStore(path=site.db) as store, AckStore(path=site.db) as acks:
        report = prune_events(store, acks, before_ms=None, max_bytes=BOUND)
        left = acks.get_many([old.event_id, long_start.event_id, new.event_id])
    kept = set(ids(site))
    assert old.event_id not in kept and long_start.event_id not in kept  # the premise
    assert long_end.event_id in kept and new.event_id in kept
    assert report.acks == 1
    assert set(left) == {long_start.event_id, new.event_id}
    verify(site, capsys)


def test_a_keyed_chain_still_verifies_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyed links: the anchor moves as for a plain chain; ``events verify --key-file``
    passes (head MAC untouched), and the keyed store appends after it."""
    monkeypatch.delenv(EVENTS_KEY_ENV, raising=False)
    site = ChainSite(tmp_path)
    key_file = tmp_path / "events.key"
    key_file.write_text(KEY + "\n")
    key = ChainKey(secret=KEY.encode())
    write(site, events(0, 3500), key=key)
    with EventStore(path=site.db, key=key) as store:
        report = prune_events(store, None, before_ms=None, max_bytes=BOUND)
        store.add_many(events(3500, 2))
    assert report.by_size > 0
    checked = verify(site, capsys, "--key-file", str(key_file))
    assert checked["rows"] == 3500 - report.by_size + 2


def test_batches_give_the_same_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``batch_rows`` 37: many transactions, each a prefix (the anchor moves each time);
    the same result as one pass would give."""
    site = ChainSite(tmp_path)
    written = events(0, 3000)
    write(site, written)
    with EventStore(path=site.db) as store:
        done = store.prune_to_size(max_bytes=BOUND, batch_rows=37)
        with pytest.raises(ValueError, match="max_bytes"):
            store.prune_to_size(max_bytes=0)
        with pytest.raises(ValueError, match="batch_rows"):
            store.prune_to_size(max_bytes=BOUND, batch_rows=0)
    assert done.deleted > 37 and done.after.live_bytes <= SIZE_PRUNE_TO * BOUND
    assert done.before.live_bytes > BOUND
    assert ids(site) == [e.event_id for e in written[done.deleted :]]
    assert site.chain()["pruned"] == done.deleted
    verify(site, capsys)


def test_a_bound_under_the_schema_deletes_every_event_and_stops(tmp_path: Path) -> None:
    """A bound no event can bring the file under (4 KiB: the empty schema is bigger)
    deletes every event, then stops instead of looping."""
    site = ChainSite(tmp_path)
    write(site, events(0, 50))
    with EventStore(path=site.db) as store:
        done = store.prune_to_size(max_bytes=4096)
    assert done.deleted == 50 and done.oldest_kept_ms is None and ids(site) == []


# -- configuration -----------------------------------------------------------------------------
def test_config_default_and_reference() -> None:
    storage = config_from_mapping({}).storage
    assert storage.events_max_mb == 1024.0 and storage.events_max_bytes() == 1024 * MIB
    assert config_from_mapping({"storage": {"events_max_mb": 1}}).storage.events_max_bytes() == MIB
    assert "| `events_max_mb` | float \\| null | `1024.0` |" in reference_markdown()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1, "greater than or equal to 0"),
        (0.5, "at least 1"),
        (math.inf, "finite"),
        (math.nan, "finite"),
        ("lots", "valid number"),
    ],
)
def test_config_refuses_bad_bounds(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"storage\.events_max_mb: .*{match}"):
        config_from_mapping({"storage": {"events_max_mb": value}})


# -- the command -------------------------------------------------------------------------------
def test_the_prune_command_with_max_mb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``events prune --max-mb 1`` prints what it deleted and the sizes; with
    ``--older-than`` both apply; neither, or a bound under 1 MiB, is refused."""
    site = ChainSite(tmp_path)
    write(site, events(0, 3000))
    code, out, _ = cli(["events", "prune", "--max-mb", "1", "--data-dir", str(site.data)], capsys)
    assert code == 0 and out["deleted"] == out["by_size"] > 0 and out["by_age"] == 0
    assert out["live_bytes"] <= SIZE_PRUNE_TO * BOUND <= out["db_bytes"]
    left = len(ids(site))
    assert left == 3000 - out["deleted"]
    code, out, _ = cli(
        ["events", "prune", "--older-than", "1d", "--max-mb", "1", "--data-dir", str(site.data)],
        capsys,
    )
    assert code == 0 and (out["deleted"], out["by_age"], out["by_size"]) == (left, left, 0)
    assert ids(site) == []  # every event is from June 2024
    code, out, err = cli(["events", "prune", "--data-dir", str(site.data)], capsys)
    assert code == 2 and out == {} and "--older-than, --max-mb" in err
    with pytest.raises(SystemExit) as exc:
        cli(["events", "prune", "--max-mb", "0.5", "--data-dir", str(site.data)], capsys)
    assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err
    verify(site, capsys)
