"""Logging for ``safety-edge run``: text on a terminal, JSON lines on gateways.

JSON lines carry ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``,
``message``, ``thread`` and, for exceptions, ``exc``; journald and log shippers index
them without parsing prose. Called once by the command; nothing is configured on import.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Literal

__all__ = ["JsonFormatter", "setup_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        t = datetime.fromtimestamp(record.created, tz=timezone.utc)
        out: dict[str, object] = {
            "time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(
    *, fmt: Literal["text", "json"], level: Literal["debug", "info", "warning", "error"]
) -> None:
    """Replace the root logger's handlers with one stderr handler in ``fmt`` at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
