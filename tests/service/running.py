"""The whole gateway in-process with its :meth:`GatewayService.run` loop in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from edge.service.gateway import GatewayService

__all__ = ["RunningGateway", "running_gateway"]


@dataclass
class RunningGateway:
    """A started gateway. ``rc`` holds what ``run()`` returned (empty while it runs);
    ``report`` is what :meth:`GatewayService.stop` returned (empty until the block is left)."""

    service: GatewayService
    rc: list[int] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


@contextmanager
def running_gateway(
    service: GatewayService,
    *,
    join_s: float = 10.0,
    start_under: AbstractContextManager[object] | None = None,
) -> Iterator[RunningGateway]:
    """Start ``service``, run its ``run()`` loop in a daemon thread, yield; on leaving
    (also on a failure) set the stop event, join the thread for up to ``join_s`` seconds
    and stop the service. Asserts nothing: callers check ``rc`` and ``report`` themselves.

    ``start_under``: a context the ``start()`` call alone runs in (``caplog.at_level``).
    """
    running = RunningGateway(service=service)
    stop = threading.Event()
    runner = threading.Thread(target=lambda: running.rc.append(service.run(stop)), daemon=True)
    try:
        with start_under if start_under is not None else nullcontext():
            service.start()
        runner.start()
        yield running
    finally:
        stop.set()
        if runner.is_alive():
            runner.join(join_s)
        running.report = service.stop()
