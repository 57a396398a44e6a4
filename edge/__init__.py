"""safety-edge: hard-hat, workwear and electronic-fence detection on edge gateways.

Nothing is started at import time; see :func:`edge.api.app.build_app` and
:mod:`edge.cli` for the composition roots.
"""

__version__ = "0.2.0"
