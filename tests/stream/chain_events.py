"""Events for the evidence-chain tests (test_evidence, test_evidence_key,
test_evidence_rotation): one fence event per ``k`` with distinct ids, a score, box and
time that follow ``k``; :class:`ChainSite`, the data folder those tests read back."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.mqtt.ids import EventIdGenerator
from edge.stream.events import AttributeValue, ZoneEvent, events_db_path
from edge.stream.evidence import CHAINED_COLUMNS

T0 = int(datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
"""Time of event 0 (ms since the epoch); event ``k`` is ``k`` minutes later."""

_ids = EventIdGenerator()


def ev(
    k: int,
    *,
    camera: str = "gate",
    t_ms: int | None = None,
    attributes: dict[str, AttributeValue] | None = None,
) -> ZoneEvent:
    """Event ``k``: ``start`` for every third, else ``update``; at ``T0 + k`` minutes
    unless ``t_ms`` is given; attributes ``{"dwell_s": 2.5}`` unless given."""
    return ZoneEvent(
        event_id=_ids(),
        type="start" if k % 3 == 0 else "update",
        camera=camera,
        task="fence",
        zone="yard",
        label="person",
        score=0.5 + k / 1000,
        box=(1.5 + k, 2.0, 30.0, 80.25),
        track_id=k,
        time_ms=T0 + k * 60_000 if t_ms is None else t_ms,
        model="person_vehicle",
        attributes={"dwell_s": 2.5} if attributes is None else attributes,
    )


class ChainSite:
    """A data folder (``root/data``) with an events database, read back as the tests need;
    the key files are each test module's own."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.db = events_db_path(self.data)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """``sqlite3.connect`` that closes on exit (the stdlib's context manager only commits)."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            yield conn

    def rows(self) -> list[dict[str, Any]]:
        cols = (*CHAINED_COLUMNS, "hash", "link", "key_id")
        with self.connect() as conn:
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM events ORDER BY seq").fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def chain(self) -> dict[str, Any]:
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            return dict(conn.execute("SELECT * FROM events_chain").fetchone())

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> None:
        """A raw edit, as someone with the sqlite3 shell would make it."""
        with self.connect() as conn:
            conn.execute(statement, args)
            conn.commit()
