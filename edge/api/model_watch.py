"""A detector as the HTTP API calls it, counting the calls that raise in a row.

Shared by ``safety-edge serve`` (:func:`edge.api.app.build_app` wraps the detectors it
runs) and ``safety-edge run`` (:class:`edge.service.gateway.GatewayService` wraps the
detectors it hands to the app, once per model name; the app keeps those as they are).
The app's ``/healthz`` says ``failing`` for an API whose model's last
``MODEL_FAILURES_OFF`` calls all raised (every request answered 5001) and the service's
``/healthz`` lists the reason in ``problems``; one call that succeeds resets the count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class WatchedModel:
    """A detector as the API calls it, noting the calls that raise in a row (health).

    ``detect`` / ``detect_with_timings`` (where the detector has it) are counted;
    everything else is the detector's.
    Any thread (the API's workers).

    Args:
        detector: the detector (``edge.tasks.base.DetectorLike``); not closed here.
        name: the model's name, for the reason text.
    """

    def __init__(self, detector: Any, name: str) -> None:
        self._detector = detector
        self.name = name
        self._lock = threading.Lock()
        self.failures_in_a_row = 0
        self.last_error = ""

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            with self._lock:
                self.failures_in_a_row += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        with self._lock:
            self.failures_in_a_row = 0
        return out

    def detect(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._detector.detect, *args, **kwargs)

    def failing(self, limit: int) -> str | None:
        """Why the model counts as failing (``limit`` calls or more raised in a row since
        the last success), else ``None``."""
        with self._lock:
            n, err = self.failures_in_a_row, self.last_error
        if n < limit:
            return None
        return f"API model {self.name!r}: the last {n} calls failed ({err})"

    def __getattr__(self, item: str) -> Any:
        got = getattr(self._detector, item)
        if item == "detect_with_timings":  # only where the detector has it (callers ask)
            fn: Callable[..., Any] = got
            return lambda *args, **kwargs: self._call(fn, *args, **kwargs)
        return got
