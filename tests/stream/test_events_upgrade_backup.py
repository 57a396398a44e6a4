"""Before an in-place migration the store backs the events database up beside it
(``events.sqlite3.schema<N>-<UTC>.bak``, sqlite3 backup API), after checking the free
space; a new file gets no backup. Real SQLite files on this file system."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from edge.stream import events as events_mod
from edge.stream.events import EventStore, EventStoreError, events_db_path
from tests.stream.v1_events import backups, make_v1, user_version, v1_rows


def test_migration_backs_the_old_file_up_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_v1(tmp_path, 50)
    rows = v1_rows(path)
    with caplog.at_level(logging.INFO, logger="edge.stream"), EventStore(path=path) as store:
        assert len(store.list_events(limit=1000)) == 50
    found = backups(tmp_path)
    assert len(found) == 1, list(tmp_path.iterdir())
    bak = found[0]
    assert bak.name.startswith("events.sqlite3.schema1-") and bak.name.endswith("Z.bak")
    assert user_version(bak) == 1
    assert v1_rows(bak) == rows
    conn = sqlite3.connect(bak)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert not list(tmp_path.glob("*.tmp"))
    assert str(bak) in caplog.text
    # a second open (current schema) makes no further backup
    EventStore(path=path).close()
    assert backups(tmp_path) == [bak]


def test_a_new_database_gets_no_backup(tmp_path: Path) -> None:
    EventStore(path=events_db_path(tmp_path)).close()
    assert backups(tmp_path) == []


def test_migration_refuses_without_free_space_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real free space of this file system, against a margin larger than it."""
    path = make_v1(tmp_path, 10)
    before = path.read_bytes()
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    monkeypatch.setattr(events_mod, "MIGRATION_FREE_MARGIN", free + 2**30)
    with pytest.raises(EventStoreError, match="free") as info:
        EventStore(path=path)
    msg = str(info.value)
    assert "schema version 1" in msg and "nothing was changed" in msg.lower()
    assert user_version(path) == 1 and path.read_bytes() == before
    assert backups(tmp_path) == [] and not list(tmp_path.glob("*.tmp"))
