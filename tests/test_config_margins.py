"""The zone edge margin and the line margin's height fraction are gateway settings that reach
the stream layer (defaults and explicit values; out-of-range values refused)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.config import LineConfig, ZoneConfig

SQUARE = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]


def test_zone_edge_margin_reaches_the_spec() -> None:
    default = ZoneConfig(name="bay", polygon=SQUARE).to_spec(classes=("person",), label=None)
    assert default.edge_margin_frac == 0.05
    zone = ZoneConfig(name="bay", polygon=SQUARE, edge_margin_frac=0.2)
    assert zone.to_spec(classes=("person",), label=None).edge_margin_frac == 0.2
    with pytest.raises(ValidationError, match="edge_margin_frac"):
        ZoneConfig(name="bay", polygon=SQUARE, edge_margin_frac=-0.1)


def test_line_margin_fraction_reaches_the_spec() -> None:
    points = [[0.1, 0.5], [0.9, 0.5]]
    default = LineConfig(name="gate", points=points).to_spec(classes=("person",), label=None)
    assert default.min_displacement_frac == 0.25
    line = LineConfig(name="gate", points=points, min_displacement_frac=0.0)
    assert line.to_spec(classes=("person",), label=None).min_displacement_frac == 0.0
    with pytest.raises(ValidationError, match="min_displacement_frac"):
        LineConfig(name="gate", points=points, min_displacement_frac=11)
