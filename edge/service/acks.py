"""The ``ack`` command of a running gateway: events table -> incident -> zone monitor + acks table.

:class:`AckHandler` carries out a validated :class:`~edge.mqtt.commands.AckCommand`:

1. the event named is looked up in the events table; its incident is the event itself
   for a ``start``, else its ``start_event_id`` (a ``crossing`` has none: refused);
2. an incident acknowledged before answers ``already`` with the first acknowledgement;
3. otherwise the acknowledgement is written to the ``event_acks`` table
   (:class:`~edge.stream.acks.AckStore`) and handed to the running zone monitor of the
   incident's camera/task/zone (:meth:`~edge.stream.zones.ZoneMonitor.acknowledge`): if
   the incident is still open it raises no more ``update`` events and its ``end`` event
   carries ``attributes.ack``; if it has ended (or the gateway restarted since), the
   reply says ``"ended": true`` and the acknowledgement is in the table only.

Called from the publisher's command thread, one command at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.errors import EdgeError
from edge.mqtt.commands import AckCommand, CommandError
from edge.mqtt.schema import now_ms
from edge.stream.acks import Ack, AckStore
from edge.stream.events import EventStore
from edge.stream.zones import ZoneMonitor

__all__ = ["AckHandler", "MonitorLookup"]

log = logging.getLogger("edge.service")

MonitorLookup = Callable[[str, str, str], ZoneMonitor | None]
"""``(camera, task, zone)`` -> the running zone monitor, or ``None``."""


class AckHandler:
    """Acknowledges incidents (see the module docstring); keyword-only.

    Args:
        events: the events table (read only here).
        acks: where acknowledgements are recorded.
        monitors: finds the running zone monitor of an incident.
        clock_ms: wall clock in Unix ms (tests pass their own); stamps ``Ack.at_ms``, which
            is wrong when the clock is (before NTP syncs): the acknowledgement is still kept
            as long as its incident's events (:meth:`AckStore.prune
            <edge.stream.acks.AckStore.prune>` does not go by ``at_ms``).
    """

    def __init__(
        self,
        *,
        events: EventStore,
        acks: AckStore,
        monitors: MonitorLookup,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._events = events
        self._acks = acks
        self._monitors = monitors
        self._clock_ms = clock_ms

    def __call__(self, command: AckCommand) -> dict[str, Any]:
        """Reply keys for ``command``: ``event_id``, ``incident_id``, ``already``,
        ``ended`` and ``ack`` (``{"by", "at", "at_ms", "note"}``).

        Raises:
            CommandError: ``unknown_event``, ``not_ackable`` or ``storage``.
        """
        try:
            event = self._events.get(command.event_id)
        except EdgeError as exc:
            raise CommandError("storage", f"cannot read the events table: {exc}") from None
        if event is None:
            raise CommandError("unknown_event", f"no event {command.event_id} on this gateway")
        if event.type not in ("start", "update", "end"):  # a line crossing: no incident
            raise CommandError("not_ackable", f"a {event.type} event is not an incident")
        incident = event.event_id if event.type == "start" else event.start_event_id
        if incident is None:
            raise CommandError("not_ackable", f"event {event.event_id} names no incident")
        reply: dict[str, Any] = {"event_id": command.event_id, "incident_id": incident}
        ack = Ack(
            incident_id=incident,
            event_id=command.event_id,
            by=command.by,
            at_ms=self._clock_ms(),
            note=command.note,
            request_id=command.request_id,
            camera=event.camera,
            task=event.task,
            zone=event.zone,
        )
        try:
            stored, new = self._acks.record(ack)
        except EdgeError as exc:
            raise CommandError("storage", f"acknowledgement not recorded: {exc}") from None
        if not new:
            return {**reply, "already": True, "ended": None, "ack": stored.summary()}
        monitor = self._monitors(event.camera, event.task, event.zone)
        state = "not_open"
        if monitor is not None:
            state, _ = monitor.acknowledge(incident, stored.summary())
        log.info(
            "incident %s (%s/%s/%s) acknowledged by %r%s",
            incident, event.camera, event.task, event.zone, stored.by,
            "" if state != "not_open" else " after it ended",
        )  # fmt: skip
        return {**reply, "already": False, "ended": state == "not_open", "ack": stored.summary()}
