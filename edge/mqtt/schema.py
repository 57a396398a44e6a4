"""Payloads of the public MQTT API, version ``SCHEMA_VERSION`` (every payload says ``"schema": 1``).

The builders here are the only place payload keys are spelled. Adding a key is a
compatible change; renaming or removing one, or changing a type, bumps the schema
number. Times are given twice: ISO 8601 UTC with milliseconds (``time``) and Unix epoch
milliseconds (``time_ms``). Boxes are ``[x1, y1, x2, y2]`` pixels of the source frame.

Event (``{prefix}/{gateway}/events``)::

    {"schema": 1, "event_id": "01HZX3J4E8Q6W2T4V9K0M5N7PB", "type": "start",
     "time": "2024-06-01T08:30:12.345Z", "time_ms": 1717230612345,
     "start_event_id": null, "start_time": null, "start_time_ms": null,
     "gateway": "gw-01", "camera": "dock-cam", "task": "hardhat", "zone": "loading-bay",
     "label": "no_hardhat", "score": 0.91, "box": [412.0, 96.5, 488.0, 301.0],
     "track_id": 17, "snapshot": "snapshots/dock-cam/01HZX3J4E8Q6W2T4V9K0M5N7PB.jpg",
     "snapshot_sha256": "9f2c...(64 hex digits)", "model": "hardhat-yolov8n@1",
     "attributes": {}}

``snapshot_sha256`` (added within schema 1) is the SHA-256 of the snapshot file's bytes,
``null`` when the event has no snapshot.

``type`` ``crossing`` (added within schema 1): a tracked object crossed a counting line
(:mod:`edge.stream.lines`); ``zone`` is the line's name, there is no ``start``/``end``
pair, and ``attributes`` are ``{"line": name, "direction": "in" | "out", "count": n}``
(``count``: crossings in that direction so far, as on the state topic).

State (``{prefix}/{gateway}/{camera}/{task}/state``, retained)::

    {"schema": 1, "gateway": "gw-01", "camera": "gate", "task": "fence",
     "time": "...", "time_ms": 1717230612345, "zones": {"yard": 2}, "total": 2,
     "lines": {"gate-line": {"in": 41, "out": 38}}}

``zones`` counts objects inside each zone now (``total`` is their sum); ``lines``
(added within schema 1, ``{}`` for a task without lines) counts crossings per
direction since the gateway started.

``end`` events of an acknowledged incident (added within schema 1) carry
``attributes.ack = {"by": "...", "at": "<ISO>", "at_ms": ..., "note": "..." | null}``.

Events of ``hardhat`` and ``workwear`` tasks (added within schema 1) carry the person's
three-way result (:mod:`edge.tasks.compliance`): ``attributes.compliance``
(``compliant`` | ``violation`` | ``cannot_tell``), ``compliance_reason`` (e.g.
``hat_not_worn``, ``bare_head``, ``colour_not_allowed``), ``classname`` (what was seen on
the person: ``yellow_hat``, ``no_hat``, ...) and, when the person breaks the zone's rule,
``rule`` (e.g. ``"hardhat colour must be one of red, white; saw yellow_hat"``); ``box``
is then the person's box.

Command (``{prefix}/{gateway}/cmd/ack``, published by the control room, QoS 1)::

    {"schema": 1, "cmd": "ack", "event_id": "01HZX3J4E8Q6W2T4V9K0M5N7PB",
     "by": "operator name", "note": "guard sent", "request_id": "r-17"}

``event_id`` may be any event of the incident (``start``, ``update`` or ``end``);
``note``, ``request_id`` and ``token`` (see ``mqtt.commands``) are optional.

Reply (``{prefix}/{gateway}/cmd/reply``, QoS 1, not retained)::

    {"schema": 1, "gateway": "gw-01", "cmd": "ack", "request_id": "r-17", "ok": true,
     "error": null, "time": "...", "time_ms": 1717230612345,
     "event_id": "01HZX...", "incident_id": "01HZX...", "already": false, "ended": false,
     "ack": {"by": "operator name", "at": "...", "at_ms": 1717230612345, "note": "guard sent"}}

    {"schema": 1, "gateway": "gw-01", "cmd": "ack", "request_id": "r-18", "ok": false,
     "error": {"code": "unknown_event", "message": "no event 01HZY... on this gateway"},
     "time": "...", "time_ms": 1717230612399}

``request_id`` is echoed (``null`` when the command had none or was unreadable);
the error codes are listed in :mod:`edge.mqtt.commands`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from edge.mqtt.ids import new_event_id
from edge.mqtt.topics import validate_segment

__all__ = [
    "SCHEMA_VERSION",
    "CameraTask",
    "Event",
    "EventType",
    "alert_payload",
    "command_payload",
    "dumps",
    "iso_utc",
    "now_ms",
    "reply_payload",
    "result_payload",
    "state_payload",
    "status_payload",
    "will_payload",
]

SCHEMA_VERSION = 1

EventType = Literal["start", "update", "end", "crossing"]
_EVENT_TYPES = frozenset(get_args(EventType))
AttributeValue = str | int | float | bool | Mapping[str, str | int | float | bool | None]
"""A value in ``attributes``: a scalar, or one level of scalars (e.g. ``ack``)."""


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def now_ms() -> int:
    """Wall-clock time in integer Unix milliseconds."""
    return time.time_ns() // 1_000_000


def iso_utc(ms: int) -> str:
    """``ms`` (Unix milliseconds) as ISO 8601 UTC with milliseconds, e.g. ``...T08:30:12.345Z``."""
    dt = datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused (they are not JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class CameraTask:
    """One camera running one task over named zones and counting lines (for status and
    Home Assistant discovery)."""

    camera: str
    task: str
    zones: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_segment(self.camera, "camera")
        validate_segment(self.task, "task")
        for z in (*self.zones, *self.lines):
            if not z:
                raise ValueError("zone and line names must be non-empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A zone event from the stream layer: an object with ``label`` entered (``start``),
    is still in (``update``) or left (``end``) ``zone``, or crossed the counting line
    ``zone`` (``crossing``; direction in ``attributes``).

    ``score`` is in [0, 1]; ``box`` is (x1, y1, x2, y2) pixels of the source frame;
    ``time_ms`` is when it was observed (Unix ms, default now); ``start_event_id`` /
    ``start_time_ms`` tie ``update``/``end`` events to their ``start``; ``snapshot`` is a
    reference (relative path or URL) to a saved frame and ``snapshot_sha256`` the
    lowercase hex SHA-256 of its bytes (or ``None``); ``attributes`` holds small extra
    values (e.g. a colour name). ``event_id`` is assigned at construction.
    Validation raises ``ValueError``; ``update`` events may be dropped when the outbox is
    full, ``start``/``end``/``crossing`` never are.
    """

    type: EventType
    camera: str
    task: str
    zone: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    track_id: int | None = None
    snapshot: str | None = None
    snapshot_sha256: str | None = None
    model: str = ""
    time_ms: int = field(default_factory=now_ms)
    start_time_ms: int | None = None
    start_event_id: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)

    def __post_init__(self) -> None:
        if self.type not in _EVENT_TYPES:
            raise ValueError(f"event type must be one of {sorted(_EVENT_TYPES)}, got {self.type!r}")
        validate_segment(self.camera, "camera")
        validate_segment(self.task, "task")
        if not self.zone or not self.label:
            raise ValueError("zone and label must be non-empty")
        score = float(self.score)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score!r}")
        box = tuple(float(v) for v in self.box)
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"box must be 4 finite numbers (x1, y1, x2, y2), got {self.box!r}")
        if self.snapshot_sha256 is not None and not _is_sha256(self.snapshot_sha256):
            raise ValueError(
                f"snapshot_sha256 must be 64 lowercase hex digits, got {self.snapshot_sha256!r}"
            )
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "box", box)
        if self.track_id is not None:
            object.__setattr__(self, "track_id", int(self.track_id))

    def to_payload(self, gateway: str) -> dict[str, Any]:
        """The JSON-ready event payload published by ``gateway``."""
        start = self.start_time_ms
        return {
            "schema": SCHEMA_VERSION,
            "event_id": self.event_id,
            "type": self.type,
            "time": iso_utc(self.time_ms),
            "time_ms": self.time_ms,
            "start_event_id": self.start_event_id,
            "start_time": None if start is None else iso_utc(start),
            "start_time_ms": start,
            "gateway": gateway,
            "camera": self.camera,
            "task": self.task,
            "zone": self.zone,
            "label": self.label,
            "score": self.score,
            "box": list(self.box),
            "track_id": self.track_id,
            "snapshot": self.snapshot,
            "snapshot_sha256": self.snapshot_sha256,
            "model": self.model,
            "attributes": dict(self.attributes),
        }


def status_payload(
    *,
    gateway: str,
    version: str,
    models: Sequence[str],
    cameras: Sequence[CameraTask],
    t_ms: int,
) -> dict[str, Any]:
    """Retained ``online`` status sent at every connect."""
    return {
        "schema": SCHEMA_VERSION,
        "state": "online",
        "gateway": gateway,
        "version": version,
        "models": list(models),
        "cameras": sorted({c.camera for c in cameras}),
        "tasks": [
            {"camera": c.camera, "task": c.task, "zones": list(c.zones), "lines": list(c.lines)}
            for c in cameras
        ],
        "time": iso_utc(t_ms),
        "time_ms": t_ms,
    }


def will_payload(*, gateway: str, reason: str, t_ms: int | None = None) -> dict[str, Any]:
    """Retained ``offline`` status: the last will (``reason="connection_lost"``, no time:
    the broker sends it later) or a clean shutdown (``reason="shutdown"``, with time)."""
    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "state": "offline",
        "gateway": gateway,
        "reason": reason,
    }
    if t_ms is not None:
        out["time"] = iso_utc(t_ms)
        out["time_ms"] = t_ms
    return out


def state_payload(
    *,
    gateway: str,
    camera: str,
    task: str,
    counts: Mapping[str, int],
    t_ms: int,
    lines: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """Retained current state of one camera/task: objects counted per zone now, and
    crossings per counting line and direction (``{"in": a, "out": b}``) so far."""
    zones = {str(k): int(v) for k, v in counts.items()}
    if any(v < 0 for v in zones.values()):
        raise ValueError("zone counts must be >= 0")
    per_line: dict[str, dict[str, int]] = {}
    for name, c in (lines or {}).items():
        if set(c) != {"in", "out"}:
            raise ValueError(f"line {name!r}: counts must be exactly 'in' and 'out'")
        per_line[str(name)] = {"in": int(c["in"]), "out": int(c["out"])}
        if per_line[str(name)]["in"] < 0 or per_line[str(name)]["out"] < 0:
            raise ValueError("line counts must be >= 0")
    return {
        "schema": SCHEMA_VERSION,
        "gateway": gateway,
        "camera": camera,
        "task": task,
        "time": iso_utc(t_ms),
        "time_ms": t_ms,
        "zones": zones,
        "total": sum(zones.values()),
        "lines": per_line,
    }


def alert_payload(
    *, gateway: str, alert: Mapping[str, Any], alert_id: str, t_ms: int
) -> dict[str, Any]:
    """An alert envelope; the caller's dict (``kind``, ``key``, ``state``, ...) is kept
    intact under ``alert``."""
    return {
        "schema": SCHEMA_VERSION,
        "alert_id": alert_id,
        "gateway": gateway,
        "time": iso_utc(t_ms),
        "time_ms": t_ms,
        "alert": dict(alert),
    }


def result_payload(
    *,
    gateway: str,
    result: Mapping[str, Any],
    t_ms: int,
    camera: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """A result envelope for the QoS 0 results topic; the API's answer under ``result``."""
    return {
        "schema": SCHEMA_VERSION,
        "gateway": gateway,
        "camera": camera,
        "task": task,
        "time": iso_utc(t_ms),
        "time_ms": t_ms,
        "result": dict(result),
    }


def command_payload(
    *,
    cmd: str,
    event_id: str,
    by: str,
    note: str | None = None,
    request_id: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A command as a control room publishes it on ``{prefix}/{gw}/cmd/{cmd}`` (keys left
    out when ``None``)."""
    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "cmd": cmd, "event_id": event_id, "by": by}
    for key, value in (("note", note), ("request_id", request_id), ("token", token)):
        if value is not None:
            out[key] = value
    return out


def reply_payload(
    *,
    gateway: str,
    cmd: str | None,
    request_id: str | None,
    t_ms: int,
    error: tuple[str, str] | None = None,
    result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer to one command: ``ok`` with the ``result`` keys merged in, or not ok
    with ``error = {"code": code, "message": message}`` from ``error=(code, message)``."""
    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "gateway": gateway,
        "cmd": cmd,
        "request_id": request_id,
        "ok": error is None,
        "error": None if error is None else {"code": error[0], "message": error[1]},
        "time": iso_utc(t_ms),
        "time_ms": t_ms,
    }
    if error is None and result:
        for key, value in result.items():
            if key not in out:
                out[key] = value
    return out
