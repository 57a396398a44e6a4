"""Upgrading an events database written by an older version: only the gateway migrates.

A store opened with ``migrate=True`` (the default; the gateway) migrates; the ``events``
commands open with ``migrate=False`` and refuse an older schema, changing nothing, so a
command of a newly installed version cannot migrate the file under a still-running old
gateway (which would go on appending rows without ``seq``/``hash``: ``events verify``
broken for good, those rows never pruned). A gateway that finds such unchained rows says
so at start. Real SQLite files and the real command line; schema-1 files from
:mod:`tests.stream.v1_events`.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from edge.stream import events as events_mod
from edge.stream.events import EventStore, EventStoreError, events_db_path
from tests.stream.v1_events import (
    V1_INSERT,
    backups,
    cli,
    event,
    make_v1,
    user_version,
    v1_row,
    v1_rows,
)


@pytest.mark.parametrize(
    "command",
    [("list",), ("list", "--since", "30d"), ("prune", "--older-than", "30d")],
    ids=["list", "list-since", "prune"],
)
def test_events_commands_refuse_an_older_schema_and_change_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    data = tmp_path / "data"
    path = make_v1(data, 3)
    before = path.read_bytes()
    r = cli("events", *command, "--data-dir", str(data))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error 5002: events database ")
    assert "is at schema version 1, older than this program" in r.stderr
    assert "`safety-edge run`" in r.stderr and "nothing was changed" in r.stderr
    assert r.stdout == ""
    assert user_version(path) == 1
    assert path.read_bytes() == before
    assert len(v1_rows(path)) == 3
    assert backups(data) == []


def test_events_verify_names_the_gateway_as_the_one_that_migrates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = make_v1(data, 2)
    r = cli("events", "verify", "--data-dir", str(data), "--no-snapshots")
    assert r.returncode == 2
    assert "schema version 1" in r.stderr and "`safety-edge run`" in r.stderr
    assert "events list" not in r.stderr  # no longer the advice: it does not migrate
    assert user_version(path) == 1


def test_events_list_reads_a_current_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventStore(path=events_db_path(data)) as store:
        store.add(event(1))
    r = cli("events", "list", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    assert '"event_id": "01NEW000000000000000000001"' in r.stdout


def test_store_without_migrate_refuses_and_with_it_migrates(tmp_path: Path) -> None:
    path = make_v1(tmp_path, 4)
    with pytest.raises(EventStoreError, match="schema version 1, older than this program"):
        EventStore(path=path, migrate=False)
    assert user_version(path) == 1
    with EventStore(path=path) as store:
        assert len(store.list_events()) == 4
    assert user_version(path) == events_mod.SCHEMA_VERSION
    with EventStore(path=path, migrate=False) as store:  # current now: reads
        assert len(store.list_events()) == 4


def test_gateway_open_warns_about_rows_an_old_process_left_unchained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the old gateway did after a new command migrated its file: plain v1 INSERTs
    into the migrated table (no seq, no hash). The next gateway start says so."""
    path = events_db_path(tmp_path)
    with EventStore(path=path) as store:
        store.add(event(1))
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(V1_INSERT, [v1_row(1), v1_row(2)])  # the old process's statement
    conn.close()
    with caplog.at_level(logging.WARNING, logger="edge.stream"):
        EventStore(path=path).close()
    lines = [r.getMessage() for r in caplog.records if "not in the hash chain" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "2 rows" in lines[0] and "seq" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.stream"):  # commands do not warn
        EventStore(path=path, migrate=False).close()
    assert "not in the hash chain" not in caplog.text
