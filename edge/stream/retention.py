"""One pruning pass over the events database: the retention, then the size bound.

The gateway runs it hourly (``storage.events_retention_days``, ``storage.events_max_mb``)
and ``safety-edge events prune`` once (``--older-than``, ``--max-mb``):

1. events older than the cutoff go (:meth:`EventStore.prune
   <edge.stream.events.EventStore.prune>`), then the acknowledgements whose incidents
   have left the table, whatever their own time (:meth:`AckStore.prune
   <edge.stream.acks.AckStore.prune>`);
2. while the database still holds more live data than the bound, the oldest events go,
   down to 90 % of it (:meth:`EventStore.prune_to_size
   <edge.stream.events.EventStore.prune_to_size>`, one WARNING when it deletes), then the
   acknowledgements whose incidents have left the table (:meth:`AckStore.prune_detached
   <edge.stream.acks.AckStore.prune_detached>`).

Both delete a prefix of the hash chain, so ``safety-edge events verify`` passes after
either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.stream.acks import AckStore
from edge.stream.events import DbSize, EventStore, SizePrune

__all__ = ["PruneReport", "prune_events"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What one :func:`prune_events` pass did.

    Attributes:
        by_age: events deleted because they were older than the cutoff.
        by_size: events deleted because of the size bound.
        acks: acknowledgements deleted.
        size: the database's pages after the pass.
        size_prune: the size bound's details (``None``: no bound given).
    """

    by_age: int
    by_size: int
    acks: int
    size: DbSize
    size_prune: SizePrune | None

    @property
    def deleted(self) -> int:
        """Events deleted in all."""
        return self.by_age + self.by_size


def prune_events(
    store: EventStore,
    acks: AckStore | None,
    *,
    before_ms: int | None,
    max_bytes: int | None,
    now_ms: int | None = None,
) -> PruneReport:
    """Prune ``store`` (and ``acks``, on the same file) by age, then by size.

    Args:
        store: the events database.
        acks: its acknowledgements (``None``: none to prune).
        before_ms: delete events older than this (Unix ms, the rule of
            :meth:`EventStore.prune`); ``None``: no age limit.
        max_bytes: the bound on the database's live bytes; ``None`` or 0: no size bound.
        now_ms: the clock for the future test of the age prune (``None``: the system's).

    Raises:
        ValueError: ``max_bytes`` negative.
        EventStoreError: the database is locked past the busy timeout, full or broken
            (what was deleted before the failure stays deleted, a prefix).
    """
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0 or None")
    now = time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)
    by_age = n_acks = 0
    if before_ms is not None:
        by_age = store.prune(before_ms=before_ms, now_ms=now)
        if acks is not None:
            n_acks += acks.prune(before_ms=before_ms, now_ms=now)
    size_prune: SizePrune | None = None
    if max_bytes:
        size_prune = store.prune_to_size(max_bytes=max_bytes)
        if size_prune.deleted and acks is not None:
            n_acks += acks.prune_detached()
    size = store.db_size()
    return PruneReport(
        by_age=by_age,
        by_size=0 if size_prune is None else size_prune.deleted,
        acks=n_acks,
        size=size,
        size_prune=size_prune,
    )
