"""A time typed without an offset in the hour a clock change repeats or skips is refused,
with the offsets (or the time) to type instead, by every entry point's own error path.

Before, the repeated hour always meant its first occurrence and a time in the skipped hour
silently moved an hour earlier (``2026-03-29T02:30`` in Berlin became 01:30 CET). Run
under TZ=Europe/Berlin (set in this process and inherited by the server subprocess):
``events list`` (exit 2, ``error <code>: --since ...``), ``/console/api/stats`` (400,
contract code 4000), the console's event filter (the page's error line) and ``quota add
--start``."""

from __future__ import annotations

import argparse
import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.api.commands import add_subcommands
from edge.api.store import Store, db_path
from edge.cli import main
from edge.stream.events import EventStore, events_db_path, parse_time
from tests.api.server_fixture import ADMIN_TOKEN, Server, console_login, start_server
from tests.tz import local_tz

AMBIGUOUS = "2026-10-25T02:30"
AMBIGUOUS_MSG = (
    "2026-10-25T02:30 is ambiguous in Europe/Berlin (the clock went back): add +02:00 or +01:00"
)
MISSING = "2026-03-29T02:30"
MISSING_MSG = (
    "2026-03-29T02:30 does not exist in Europe/Berlin (the clock went forward): "
    "add an offset or use 03:30"
)
CASES = [(AMBIGUOUS, AMBIGUOUS_MSG), (MISSING, MISSING_MSG)]


@pytest.fixture(scope="module")
def berlin() -> Iterator[None]:
    with local_tz("Europe/Berlin"):
        yield


@pytest.mark.parametrize(("text", "msg"), CASES)
def test_parse_time_refuses(berlin: None, text: str, msg: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_time(text)
    assert str(exc.value) == msg


@pytest.mark.parametrize(
    ("text", "utc_ms"),
    [
        ("2026-10-25T02:30+02:00", 1792888200000),  # first pass: an offset decides
        ("2026-10-25T02:30+01:00", 1792891800000),  # second pass
        ("2026-10-25T03:00", 1792893600000),  # the first reading after the repeat: CET
        ("2026-10-25T01:59", 1792886340000),  # before it: CEST
        ("2026-03-29T03:00", 1774746000000),  # the first reading after the gap: CEST
        ("2026-03-29T01:59", 1774745940000),  # before it: CET
    ],
)
def test_unambiguous_times_around_the_changes(berlin: None, text: str, utc_ms: int) -> None:
    assert parse_time(text) == utc_ms


@pytest.mark.parametrize(("text", "msg"), CASES)
def test_events_list_exits_2_with_the_reason(
    berlin: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, msg: str
) -> None:
    EventStore(path=events_db_path(tmp_path)).close()
    assert main(["events", "list", "--data-dir", str(tmp_path), "--since", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error \d+: --since: " + re.escape(msg), err), err


@pytest.mark.parametrize(("text", "msg"), CASES)
def test_quota_start_refuses(
    berlin: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, msg: str
) -> None:
    with Store(path=db_path(tmp_path)) as st:
        st.create_app(name="berlin-app", description="", grants=["fence"])
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    argv = ["quota", "add", "berlin-app", "--api", "fence", "--tier", "100k", "--start", text]
    args = parser.parse_args([*argv, "--data-dir", str(tmp_path)])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error \d+: --start " + re.escape(msg), err), err


@pytest.fixture(scope="module")
def srv(berlin: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    def seed(data: Path) -> None:
        EventStore(path=events_db_path(data)).close()

    with start_server(tmp_path_factory.mktemp("naive-dst"), before_start=seed) as s:
        yield s


@pytest.mark.parametrize(("text", "msg"), CASES)
def test_stats_api_answers_400(srv: Server, text: str, msg: str) -> None:
    r = srv.http.get(
        f"{srv.base_url}/console/api/stats",
        params={"since": text},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == 4000 and body["details"] == msg, body
    ok = srv.http.get(
        f"{srv.base_url}/console/api/stats",
        params={"since": "2026-10-25T02:30+01:00"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert ok.status_code == 200 and ok.json()["since"] == "2026-10-25T01:30:00+00:00"


@pytest.mark.parametrize(("text", "msg"), CASES)
def test_console_event_filter_shows_the_reason(srv: Server, text: str, msg: str) -> None:
    with httpx.Client() as c:
        assert console_login(c, srv.base_url, next_path="/console/events").status_code == 303
        page = c.get(f"{srv.base_url}/console/events", params={"since": text})
        assert page.status_code == 200
        err = re.search(r'<p class="error">([^<]*)</p>', page.text)
        assert err is not None, page.text[:2000]
        assert html.unescape(err.group(1)) == msg
