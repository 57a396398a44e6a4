"""A migration is logged (start and end, rows, duration) and leaves no huge WAL behind
(``journal_size_limit`` and a ``wal_checkpoint(TRUNCATE)`` after it). A real 20k-row
schema-1 file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edge.stream import events as events_mod
from edge.stream.events import EventStore
from tests.stream.v1_events import make_v1


def test_big_migration_is_logged_and_leaves_a_small_wal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 20_000
    path = make_v1(tmp_path, n)
    wal = Path(f"{path}-wal")
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="edge.stream"), EventStore(path=path) as store:
        took = time.monotonic() - t0
        size = wal.stat().st_size if wal.exists() else 0
        assert size <= 4 * 2**20, f"-wal is {size / 2**20:.1f} MiB after migrating"
        assert store.counts()["start"] == n
    text = caplog.text
    assert f"migrating schema 1 -> {events_mod.SCHEMA_VERSION}" in text and f"{n} rows" in text
    assert f"migrated schema 1 -> {events_mod.SCHEMA_VERSION} in " in text
    assert "WAL " in text and "-> 0.0 MiB" in text  # truncated: no other reader here
    print(f"migrated {n} rows in {took:.1f} s; -wal {size} bytes")  # shown with -s
