"""The gateway's web console at ``/console`` (applications, resource packages,
monitoring charts, alerts, cameras with live events, zone editor).

:func:`mount_console` adds it to the API app (:func:`edge.api.app.build_app` does);
:class:`CameraBackend` is what ``safety-edge run`` registers on ``app.state`` so the
console can show live frames and apply zone edits. Jinja2 renders the pages; the chart
library (uPlot) is vendored under ``static/vendor`` -- nothing is loaded from outside
the gateway.
"""

from edge.api.console.backend import STATE_KEY, CameraBackend
from edge.api.console.routes import ConsoleState, mount_console

__all__ = ["STATE_KEY", "CameraBackend", "ConsoleState", "mount_console"]
