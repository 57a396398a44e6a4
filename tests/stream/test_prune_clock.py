"""Pruning the events table (and its acknowledgements) when a clock was wrong.

Real SQLite files through the calls the gateway and ``safety-edge events prune`` make
(:meth:`EventStore.prune`, then :meth:`AckStore.prune` with the same cutoff), checked with
``safety-edge events verify``. The bug these pin: one row stamped in the future (RTC garbage
after a power cut, a bad NTP/GPS time, a mistyped ``date``) stopped the pruned prefix, so no
later row was deleted until that future date plus the retention and the file grew without
bound."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.stream.acks import Ack, AckStore
from edge.stream.commands import add_subcommands
from edge.stream.events import FUTURE_TOLERANCE_MS, EventStore, ZoneEvent, parse_time
from tests.stream.chain_events import ChainSite
from tests.stream.chain_events import ev as chain_event

DAY = 86_400_000
RETENTION = 90 * DAY
NOW = int(datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
"""The pruning clock of the tests that pass ``now_ms`` (the others use the real clock)."""

_k = iter(range(10**9))


def ev(t_ms: int) -> ZoneEvent:
    """A distinct event stamped ``t_ms``."""
    return chain_event(next(_k) % 300, t_ms=t_ms)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = int(args.func(args))
    out, _ = capsys.readouterr()
    return code, (json.loads(out) if out else {})


def verify(site: ChainSite, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``safety-edge events verify`` on the site; asserts it passes."""
    code, report = cli(["events", "verify", "--no-snapshots", "--data-dir", str(site.data)], capsys)
    assert code == 0 and report["ok"], report
    return report


def write(site: ChainSite, events: list[ZoneEvent]) -> None:
    with EventStore(path=site.db) as store:
        assert store.add_many(events) == len(events)


def times(site: ChainSite) -> list[int]:
    """``time_ms`` of the stored rows in chain order."""
    return [int(r["time_ms"]) for r in site.rows()]


def prune_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge.stream" and r.levelno == logging.WARNING and "stamped" in r.getMessage()
    ]


# -- the reported case, as the gateway and the command run it ----------------------------------
def test_one_row_stamped_a_year_ahead_no_longer_stops_pruning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's repro with the real clock and the gateway's call (``before_ms`` only):
    an old row, one stamped a year ahead, 1000 rows 150 days old; a 90-day prune deleted 1
    and kept 1001. Now all 1002 go, the chain still verifies and appends continue."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    site = ChainSite(tmp_path)
    now = parse_time("0s")
    old = now - 150 * DAY
    ahead = now + 365 * DAY
    write(site, [ev(old - 1000), ev(ahead), *(ev(old + k * 1000) for k in range(1000))])
    with EventStore(path=site.db) as store:
        assert store.prune(before_ms=now - RETENTION) == 1002
        assert store.prune(before_ms=now - RETENTION) == 0
    assert times(site) == []
    report = verify(site, capsys)
    assert report["anchor"]["seq"] == 1002 and report["anchor"]["pruned"] == 1002
    (warning,) = prune_warnings(caplog)  # once per prune with such rows, not per row
    furthest = datetime.fromtimestamp(ahead / 1000, tz=timezone.utc)
    assert "1 rows" in warning and furthest.isoformat(timespec="seconds")[:19] in warning
    assert "1 of them were deleted" in warning
    write(site, [ev(now - 1000), ev(now)])
    assert verify(site, capsys)["rows"] == 2


def test_the_prune_command_deletes_past_a_row_stamped_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``safety-edge events prune --older-than 90d`` (events, then acknowledgements)."""
    site = ChainSite(tmp_path)
    now = parse_time("0s")
    write(
        site,
        [
            ev(now - 200 * DAY),
            ev(now + 30 * DAY),
            *(ev(now - 100 * DAY + k) for k in range(20)),
            *(ev(now - DAY + k) for k in range(3)),
        ],
    )
    code, out = cli(
        ["events", "prune", "--older-than", "90d", "--data-dir", str(site.data)], capsys
    )
    assert code == 0 and out == {"deleted": 22}
    assert times(site) == [now - DAY + k for k in range(3)]
    assert verify(site, capsys)["rows"] == 3


# -- where a row stamped in the future is kept -------------------------------------------------
def test_rows_stamped_ahead_among_the_newest_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing says a row stamped ahead is old until an expired row is stored after it:
    at the end of the chain, or before a current row, it stays; it goes with the first
    expired row stored after it."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    site = ChainSite(tmp_path)
    old = [NOW - 150 * DAY + k for k in range(10)]
    recent = [NOW - 10 * DAY + k for k in range(5)]
    ahead = NOW + 365 * DAY
    write(site, [ev(t) for t in [*old, ahead, *recent, ahead + 1]])
    with EventStore(path=site.db) as store:
        assert store.prune(before_ms=NOW - RETENTION, now_ms=NOW) == 10
        assert times(site) == [ahead, *recent, ahead + 1]
        # the recent rows expire: the first row stamped ahead goes with them, the last
        # one (nothing expired after it) stays
        later = NOW + 100 * DAY
        assert store.prune(before_ms=later - RETENTION, now_ms=later) == 6
        assert times(site) == [ahead + 1]
        (first, second) = prune_warnings(caplog)
        assert "2 rows" in first and "0 of them were deleted" in first
        assert "2 rows" in second and "1 of them were deleted" in second
    verify(site, capsys)


def test_a_row_within_the_tolerance_still_stops_the_prefix(tmp_path: Path) -> None:
    """A few hours ahead (camera/host skew, a late NTP step) is not a wrong clock: such a
    row still holds the rows after it, as before."""
    site = ChainSite(tmp_path)
    write(site, [ev(NOW - 150 * DAY), ev(NOW + FUTURE_TOLERANCE_MS), ev(NOW - 120 * DAY)])
    with EventStore(path=site.db) as store:
        assert store.prune(before_ms=NOW - RETENTION, now_ms=NOW) == 1
        assert times(site) == [NOW + FUTURE_TOLERANCE_MS, NOW - 120 * DAY]
        assert store.prune(before_ms=NOW - RETENTION, now_ms=NOW - 1) == 2  # 1 ms beyond
    assert times(site) == []


# -- a wrong clock at prune time ----------------------------------------------------------------
def time_only_prefix(stamps: list[int], before_ms: int) -> int:
    """How many rows the rule before this fix deleted: up to the last row older than
    ``before_ms`` before the first row that is not."""
    first_kept = next((i for i, t in enumerate(stamps) if t >= before_ms), len(stamps))
    return max((i + 1 for i, t in enumerate(stamps[:first_kept]) if t < before_ms), default=0)


def test_a_clock_far_ahead_at_prune_time_deletes_no_more_than_before(tmp_path: Path) -> None:
    """The store has no guard against a clock that jumped ahead (it cannot tell one from a
    gateway that was idle): rows older than the wrong cutoff went before this fix and go
    now, and the rows stamped with the wrong clock since the jump are current. The fix
    adds nothing there: the wrong ``now`` makes no row "ahead" of it."""
    site = ChainSite(tmp_path)
    jumped = NOW + 10 * 365 * DAY  # e.g. an RTC that came up ten years ahead
    stamps = [
        *(NOW - 150 * DAY + k for k in range(5)),
        *(NOW - DAY + k for k in range(5)),  # last day before the jump
        *(jumped - DAY + k for k in range(3)),  # written since, with the wrong clock
    ]
    write(site, [ev(t) for t in stamps])
    before = jumped - RETENTION
    with EventStore(path=site.db) as store:
        assert store.prune(before_ms=before, now_ms=jumped) == time_only_prefix(stamps, before)
    assert times(site) == stamps[10:]


def test_a_clock_far_behind_at_prune_time_deletes_only_what_it_counted_off(
    tmp_path: Path,
) -> None:
    """An RTC that came up at 2000-01-01 with no time sync: every row written before
    looks ahead of it. None goes until rows stamped by that clock are themselves older
    than the retention by it, i.e. the gateway has run the retention since: then the rows
    stored before those go too (the time-only rule deleted nothing, ever)."""
    site = ChainSite(tmp_path)
    reset = int(datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    real = [NOW - 100 * DAY + k for k in range(5)] + [NOW - k for k in range(3, 0, -1)]
    write(site, [ev(t) for t in real])
    write(site, [ev(reset + k * DAY) for k in range(5)])  # the first days after the reset
    with EventStore(path=site.db) as store:
        now = reset + 5 * DAY
        assert store.prune(before_ms=now - RETENTION, now_ms=now) == 0
        write(site, [ev(reset + k * DAY) for k in range(5, 100)])  # it keeps running
        now = reset + 100 * DAY
        before = now - RETENTION
        assert time_only_prefix(times(site), before) == 0
        assert store.prune(before_ms=before, now_ms=now) == 8 + 10  # real rows + 10 days
    assert times(site) == [reset + k * DAY for k in range(10, 100)]


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(
        st.sampled_from([-200, -120, -91, -89, -30, 0, 1, 2, 30, 400]), min_size=0, max_size=12
    ),
    now_shift=st.sampled_from([0, 3650]),
)
def test_the_rule_against_the_time_only_rule(
    tmp_path_factory: pytest.TempPathFactory, offsets: list[int], now_shift: int
) -> None:
    """Any chain of rows ``offsets`` days from NOW: the deleted rows are a prefix that
    contains the time-only rule's; every row deleted beyond it is stamped more than the
    tolerance ahead or older than the cutoff, and the last one deleted is older than the
    cutoff; no row before the first current row is kept unless no expired row follows it.
    With the clock ten years ahead (``now_shift``) nothing is ahead and the result is the
    time-only rule's."""
    site = ChainSite(tmp_path_factory.mktemp("chain"))
    stamps = [NOW + d * DAY + i for i, d in enumerate(offsets)]
    if stamps:
        write(site, [ev(t) for t in stamps])
    now = NOW + now_shift * DAY
    before = now - RETENTION
    with EventStore(path=site.db) as store:
        n = store.prune(before_ms=before, now_ms=now)
    assert times(site) == stamps[n:]
    old_n = time_only_prefix(stamps, before)
    assert n >= old_n
    ahead = now + FUTURE_TOLERANCE_MS
    assert all(t < before or t > ahead for t in stamps[:n])
    assert n == 0 or stamps[n - 1] < before
    first_current = next((i for i, t in enumerate(stamps) if before <= t <= ahead), len(stamps))
    assert all(t > ahead for t in stamps[n:first_current])  # a kept tail of rows ahead
    if now_shift:
        assert n == old_n


# -- acknowledgements -----------------------------------------------------------------------------
def ack(incident: ZoneEvent, at_ms: int) -> Ack:
    return Ack(
        incident_id=incident.event_id,
        event_id=incident.event_id,
        by="Ana",
        at_ms=at_ms,
        note=None,
        request_id=None,
        camera=incident.camera,
        task=incident.task,
        zone=incident.zone,
    )


def test_acknowledgements_stamped_ahead_go_with_their_incidents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """As the gateway prunes (events, then acknowledgements, same cutoff): an
    acknowledgement recorded while the clock was a year ahead goes once its incident's
    events went (they go with the old rows stored after them); one stamped ahead whose
    incident is still stored stays; the others go by their own time, as before."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    site = ChainSite(tmp_path)
    ahead = NOW + 365 * DAY
    old_incident = ev(NOW - 150 * DAY)
    wrong_incident = ev(ahead)  # the clock was a year ahead for a while
    current_incident = ev(NOW - DAY)
    write(
        site,
        [
            old_incident,
            wrong_incident,
            *(ev(NOW - 149 * DAY + k) for k in range(50)),  # the clock set right again
            current_incident,
        ],
    )
    with EventStore(path=site.db) as store, AckStore(path=site.db) as acks:
        acks.record(ack(old_incident, NOW - 150 * DAY + 5000))
        acks.record(ack(wrong_incident, ahead + 5000))
        acks.record(ack(current_incident, ahead + 9000))  # recorded during another slip
        before = NOW - RETENTION
        assert store.prune(before_ms=before, now_ms=NOW) == 52
        assert acks.prune(before_ms=before, now_ms=NOW) == 2
        left = acks.get_many([old_incident.event_id, wrong_incident.event_id])
        assert left == {}
        assert acks.get(current_incident.event_id) == ack(current_incident, ahead + 9000)
        assert acks.prune(before_ms=before, now_ms=NOW) == 0
        # the incident's events go: so does its acknowledgement
        later = NOW + 100 * DAY
        write(site, [ev(later)])
        assert store.prune(before_ms=later - RETENTION, now_ms=later) == 1
        assert acks.prune(before_ms=later - RETENTION, now_ms=later) == 1
        assert acks.get(current_incident.event_id) is None
    first, second, third = (
        m for m in prune_warnings(caplog) if m.startswith("acknowledgements in")
    )
    assert "2 are stamped" in first and "1 of them were deleted" in first
    assert "1 are stamped" in second and "0 of them" in second
    assert "1 are stamped" in third and "1 of them" in third
    verify(site, capsys)


def test_acknowledgements_stamped_ahead_stay_without_an_events_table(tmp_path: Path) -> None:
    """Nothing to tell whether its incident is gone: keep it (as before)."""
    incident = ev(NOW)
    with AckStore(path=tmp_path / "acks-only.sqlite3") as acks:
        acks.record(ack(incident, NOW + 365 * DAY))
        assert acks.prune(before_ms=NOW - RETENTION, now_ms=NOW) == 0
        assert acks.get(incident.event_id) is not None


def test_acknowledgements_stamped_behind_stay_with_their_incidents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's case: the control room acknowledged incidents right after a reboot with
    the clock at the image's build date (200 days behind); the clock steps to NOW and the
    90-day prune runs. The incidents' events stay, and so do their acknowledgements (a
    re-ack answers ``already``); each goes with its incident's events, whatever its time."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    site = ChainSite(tmp_path)
    recent = ev(NOW - DAY)
    older = ev(NOW - 5 * DAY)
    write(site, [older, recent])
    behind = NOW - 200 * DAY
    with EventStore(path=site.db) as store, AckStore(path=site.db) as acks:
        acks.record(ack(older, behind))
        acks.record(ack(recent, behind + 60_000))
        before = NOW - RETENTION
        assert store.prune(before_ms=before, now_ms=NOW) == 0
        assert acks.prune(before_ms=before, now_ms=NOW) == 0
        assert acks.get(recent.event_id) == ack(recent, behind + 60_000)
        assert acks.get(older.event_id) == ack(older, behind)
        assert not acks.record(ack(recent, NOW))[1]  # already acknowledged
        (warning,) = (m for m in prune_warnings(caplog) if m.startswith("acknowledgements in"))
        assert "2 are stamped before" in warning and "kept" in warning
        # the incidents' events expire: their acknowledgements go with them
        later = NOW + 100 * DAY
        write(site, [ev(later)])
        assert store.prune(before_ms=later - RETENTION, now_ms=later) == 2
        assert acks.prune(before_ms=later - RETENTION, now_ms=later) == 2
        assert acks.get_many([older.event_id, recent.event_id]) == {}
    verify(site, capsys)
