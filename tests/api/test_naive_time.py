"""One rule for every time typed without a zone offset: it is the gateway's local time.

Run under TZ=Europe/Berlin (set in the process, restored after): the console's event
filter (edge.stream.events.parse_time), ``/console/api/stats?since=`` and ``quota add
--start`` read the same text as the same instant. Before, the stats API read it as UTC,
2 h off in Berlin summer time."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.api.app import _parse_time
from edge.api.commands import add_subcommands
from edge.api.store import Store, db_path
from edge.stream.events import local_if_naive, parse_time
from tests.tz import local_tz


@pytest.fixture
def berlin() -> Iterator[None]:
    with local_tz("Europe/Berlin"):
        yield


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-06-01T08:00", "2026-06-01T06:00:00+00:00"),  # CEST, UTC+2
        ("2026-12-01T08:00", "2026-12-01T07:00:00+00:00"),  # CET, UTC+1
        ("2026-06-01", "2026-05-31T22:00:00+00:00"),  # a date: local midnight
        ("2026-06-01T08:00Z", "2026-06-01T08:00:00+00:00"),  # an offset wins
        ("2026-06-01T08:00+08:00", "2026-06-01T00:00:00+00:00"),
    ],
)
def test_events_filter_and_stats_api_agree(berlin: None, text: str, instant: str) -> None:
    want = _utc(instant)
    events_ms = parse_time(text)
    stats = _parse_time(text, datetime.now(timezone.utc))
    assert events_ms == int(want.timestamp() * 1000)
    assert stats == want and stats.utcoffset() is not None
    assert stats.isoformat() == instant  # answered back in UTC
    assert local_if_naive(datetime.fromisoformat(text.replace("Z", "+00:00"))) == want


def test_quota_start_is_local_too(
    berlin: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(path=db_path(tmp_path)) as st:
        st.create_app(name="berlin-app", description="", grants=["fence"])
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    argv = ["quota", "add", "berlin-app", "--api", "fence", "--tier", "100k"]
    args = parser.parse_args([*argv, "--start", "2026-06-01T08:00", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    pkg = json.loads(capsys.readouterr().out)
    assert pkg["start"] == "2026-06-01T06:00:00+00:00"
    assert _utc(pkg["start"]).timestamp() * 1000 == parse_time("2026-06-01T08:00")
