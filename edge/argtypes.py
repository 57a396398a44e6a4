"""argparse ``type=`` parsers shared by the command line's subcommands: each turns bad text
into one ``argparse`` error line (exit 2) instead of a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_range", "unit_interval"]


def unit_interval(text: str) -> float:
    """A number in [0, 1] (scores, IoU thresholds; NaN refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return v


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A parser of an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in {low}..{high}")
        return v

    return parse
