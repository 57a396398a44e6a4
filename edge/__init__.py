"""safety-edge: hard-hat, workwear and electronic-fence detection on edge gateways.

Nothing is started at import time; see :func:`edge.api.app.build_app` and
:mod:`edge.cli` for the composition roots.
"""

from datetime import datetime, timezone

__version__ = "0.2.0"

RELEASE_FLOOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
"""No correct clock running this release reads earlier (the wall-clock checks of the gateway,
:mod:`edge.service.clock`, and of package sales, :meth:`edge.api.store.Store.add_package`).
Raise it with ``__version__`` at each release (it only has to be before the release date)."""
