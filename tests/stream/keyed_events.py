"""Events for the keyed evidence-chain tests (test_evidence_key, test_evidence_rotation):
one fence event per ``k`` with distinct ids, a score, box and time that follow ``k``."""

from __future__ import annotations

from datetime import datetime, timezone

from edge.mqtt.ids import EventIdGenerator
from edge.stream.events import ZoneEvent

T0 = int(datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
"""Time of event 0 (ms since the epoch); event ``k`` is ``k`` minutes later."""

_ids = EventIdGenerator()


def ev(k: int) -> ZoneEvent:
    """Event ``k``: ``start`` for every third, else ``update``."""
    return ZoneEvent(
        event_id=_ids(),
        type="start" if k % 3 == 0 else "update",
        camera="gate",
        task="fence",
        zone="yard",
        label="person",
        score=0.5 + k / 1000,
        box=(1.5 + k, 2.0, 30.0, 80.25),
        track_id=k,
        time_ms=T0 + k * 60_000,
        model="person_vehicle",
        attributes={"dwell_s": 2.5},
    )
