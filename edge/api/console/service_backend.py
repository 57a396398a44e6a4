"""The console's :class:`~edge.api.console.backend.CameraBackend` over a running
``safety-edge run`` (:class:`edge.service.gateway.GatewayService`).

``safety-edge run`` calls :func:`attach_console` once the service has started::

    service.start()
    attach_console(service, config_path=Path(args.config))

Frames come from :meth:`CameraPipeline.latest_frame`, zone edits go to
:meth:`ZoneMonitor.set_polygon` of the running task, line edits to
:meth:`LineCounter.set_points`, camera states from :meth:`GatewayService.health` and the
line counts (in the states and from :meth:`ServiceBackend.line_counts`) from
:meth:`CameraPipeline.metrics` (the per-frame copy it keeps under its lock). All are safe
from the HTTP server's threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge.api.console.backend import STATE_KEY

if TYPE_CHECKING:
    from edge.service.gateway import GatewayService

__all__ = ["ServiceBackend", "attach_console"]


class ServiceBackend:
    """Cameras of a running :class:`GatewayService` for the console (keyword-only)."""

    def __init__(self, *, service: GatewayService, config_path: Path | None) -> None:
        self.service = service
        self._config_path = None if config_path is None else Path(config_path)

    @property
    def config_path(self) -> Path | None:
        return self._config_path

    def _pipeline(self, camera: str) -> Any:
        cam = self.service.cameras.get(camera)
        return None if cam is None else cam.pipeline

    def latest_frame(self, camera: str) -> tuple[npt.NDArray[np.uint8], int] | None:
        pipe = self._pipeline(camera)
        frame = None if pipe is None else pipe.latest_frame()
        return None if frame is None else (frame.image, int(frame.wall_ms))

    def _runner(self, camera: str, task: str) -> Any:
        """The running task ``task`` of camera ``camera`` (KeyError with the reason)."""
        pipe = self._pipeline(camera)
        if pipe is None:
            raise KeyError(f"camera {camera!r} is not running")
        for runner in pipe.tasks:
            if runner.spec.name == task:
                return runner
        raise KeyError(f"task {task!r} does not run on camera {camera!r}")

    def apply_zone(
        self,
        camera: str,
        task: str,
        zone: str,
        polygon: Sequence[tuple[float, float]],
        normalized: bool,
    ) -> None:
        runner = self._runner(camera, task)
        try:
            monitor = runner.monitor(zone)
        except KeyError:
            raise KeyError(f"zone {zone!r} does not run in {camera}/{task}") from None
        monitor.set_polygon(polygon, normalized=normalized)

    def apply_line(
        self,
        camera: str,
        task: str,
        line: str,
        points: Sequence[tuple[float, float]],
        normalized: bool,
    ) -> None:
        runner = self._runner(camera, task)
        try:
            counter = runner.counter(line)
        except KeyError:
            raise KeyError(f"line {line!r} does not run in {camera}/{task}") from None
        counter.set_points(points, normalized=normalized)

    def camera_states(self) -> Mapping[str, Mapping[str, Any]]:
        cams = self.service.health().get("cameras", {})
        if not isinstance(cams, Mapping):
            return {}
        out: dict[str, Mapping[str, Any]] = {}
        for name, st in cams.items():
            pipe = self._pipeline(name)
            if pipe is not None and isinstance(st, Mapping):
                tasks = pipe.metrics().get("tasks", {})
                lines = {t: dict(m.get("lines", {})) for t, m in tasks.items() if m.get("lines")}
                st = {**st, "lines": lines}
            out[name] = st
        return out

    def line_counts(self, camera: str) -> Mapping[str, Mapping[str, Mapping[str, int]]] | None:
        pipe = self._pipeline(camera)
        if pipe is None:
            return None
        tasks = pipe.metrics().get("tasks", {})
        return {
            task: {line: dict(c) for line, c in m.get("lines", {}).items()}
            for task, m in tasks.items()
            if m.get("lines")
        }


def attach_console(service: GatewayService, *, config_path: Path | None) -> ServiceBackend | None:
    """Register the service's cameras with the console of its in-process API (``None``
    when the API does not run in this process)."""
    app = getattr(service, "app", None)
    if app is None:
        return None
    backend = ServiceBackend(service=service, config_path=config_path)
    setattr(app.state, STATE_KEY, backend)
    return backend
