"""What the console needs from the camera side of the gateway (``safety-edge run``).

The HTTP app is built before, and without, the camera pipelines (``safety-edge serve``
has none). The service layer that runs both registers itself after building the app::

    app = build_app(config, ...)
    app.state.console_backend = service      # a CameraBackend

The console reads ``app.state.console_backend`` at each request, so registering it any
time before serving is enough. Without one, the camera pages show the cameras of the
config with their latest incident snapshot instead of a live frame, and zone edits are
and line edits are refused (there is no config file to save them to, nor a pipeline to
apply them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["STATE_KEY", "CameraBackend"]

STATE_KEY = "console_backend"
"""The ``app.state`` attribute the service layer sets."""


class CameraBackend(Protocol):
    """The running cameras, as the console uses them. Methods are called from worker
    threads of the HTTP server while the pipelines run: they must be thread-safe and
    quick (no waiting for a frame)."""

    @property
    def config_path(self) -> Path | None:
        """The YAML file the gateway was started from (zone and line edits are saved there)."""
        ...

    def latest_frame(self, camera: str) -> tuple[npt.NDArray[np.uint8], int] | None:
        """The last frame the camera's pipeline processed: ``(image, wall_ms)`` with
        ``image`` (H, W, 3) uint8 BGR (not modified afterwards; the console only reads
        it) and its capture time in Unix ms; ``None`` before the first frame or for an
        unknown/stopped camera."""
        ...

    def apply_zone(
        self,
        camera: str,
        task: str,
        zone: str,
        polygon: Sequence[tuple[float, float]],
        normalized: bool,
    ) -> None:
        """Replace the polygon of a running zone (``normalized``: 0-1 coordinates, else
        pixels) from the next frame on; its open incidents and dwell timers are kept.

        Raises:
            KeyError: no such running camera/task/zone.
            ValueError: the polygon is not valid for the zone.
        """
        ...

    def apply_line(
        self,
        camera: str,
        task: str,
        line: str,
        points: Sequence[tuple[float, float]],
        normalized: bool,
    ) -> None:
        """Move a running counting line (``normalized``: 0-1 coordinates, else pixels)
        from the next frame on; its in/out counts go on (not reset), a crossing pending
        against the old line is dropped.

        Raises:
            KeyError: no such running camera/task/line.
            ValueError: the points are not a valid line.
        """
        ...

    def camera_states(self) -> Mapping[str, Mapping[str, Any]]:
        """Per camera name: at least ``online`` (bool or None) and ``running`` (bool);
        optionally ``fps``, ``off`` (why it does not run), ``tasks_off``, and ``lines``:
        ``{task: {line: {"in": n, "out": m}}}``, the running counters' crossings so far."""
        ...

    def line_counts(self, camera: str) -> Mapping[str, Mapping[str, Mapping[str, int]]] | None:
        """The camera's running counting lines, ``{task: {line: {"in": n, "out": m}}}``:
        crossings counted since the gateway started (the numbers ``camera_states()`` gives
        as ``lines``, without the rest of the camera's state; the Cameras page polls this).
        A line is missing until its task has processed a frame; ``None`` for an unknown or
        stopped camera."""
        ...
