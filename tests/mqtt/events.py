"""Zone events for the MQTT tests to publish."""

from __future__ import annotations

from edge.mqtt import Event

__all__ = ["event"]


def event(i: int, kind: str = "update") -> Event:
    """A valid ``kind`` event (``start``, ``update``, ``end`` or ``crossing``) for track ``i``:
    camera ``cam-1``, task ``hardhat``, zone ``dock``, label ``no_hardhat``, model
    ``hardhat@1``; a new ``event_id`` and ``time_ms`` (now) each call."""
    return Event(
        type=kind,  # type: ignore[arg-type]
        camera="cam-1",
        task="hardhat",
        zone="dock",
        label="no_hardhat",
        score=0.8,
        box=(10, 20, 30, 40),
        track_id=i,
        model="hardhat@1",
    )
