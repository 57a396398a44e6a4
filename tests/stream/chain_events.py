"""Events for the evidence-chain tests (test_evidence, test_evidence_key,
test_evidence_rotation): one fence event per ``k`` with distinct ids, a score, box and
time that follow ``k``."""

from __future__ import annotations

from datetime import datetime, timezone

from edge.mqtt.ids import EventIdGenerator
from edge.stream.events import AttributeValue, ZoneEvent

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
