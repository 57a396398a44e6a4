"""Zone/line coordinates with ``normalized`` left out (auto): 0-1 fractions with a stray
value above 1 used to flip the whole polygon to pixels (a 1-pixel zone: no events)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.config import LineConfig, ZoneConfig


def test_a_fraction_zone_with_one_corner_above_1_is_refused() -> None:
    poly = [[0.5, 0.3], [1.05, 0.3], [1.05, 0.82], [0.5, 0.57]]
    with pytest.raises(ValidationError) as info:
        ZoneConfig.model_validate({"name": "footpath", "polygon": poly})
    text = str(info.value)
    assert "looks like 0-1 fractions" in text
    assert "'footpath'" in text and "1.05" in text
    assert "normalized: false" in text


def test_a_fraction_line_with_y_1_02_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        LineConfig.model_validate({"name": "walkway", "points": [[0.73, 1.02], [0.73, 0.26]]})
    assert "looks like 0-1 fractions" in str(info.value) and "1.02" in str(info.value)


def test_fractions_within_0_1_stay_normalized() -> None:
    z = ZoneConfig.model_validate({"name": "z", "polygon": [[0.5, 0.3], [1.0, 0.3], [1.0, 1.0]]})
    assert z.normalized is True


def test_a_pixel_polygon_still_loads_as_pixels() -> None:
    z = ZoneConfig.model_validate(
        {"name": "z", "polygon": [[100, 50], [700, 50], [700, 500], [100, 500]]}
    )
    assert z.normalized is False
    ln = LineConfig.model_validate({"name": "l", "points": [[0.5, 10], [300, 10]]})
    assert ln.normalized is False  # a coordinate >= 2: pixels, as before


def test_explicit_normalized_false_keeps_small_pixel_numbers() -> None:
    z = ZoneConfig.model_validate(
        {"name": "z", "polygon": [[0, 0], [1.5, 0], [1.5, 1.5]], "normalized": False}
    )
    assert z.normalized is False
    ln = LineConfig.model_validate(
        {"name": "l", "points": [[0.5, 1.02], [0.5, 0.2]], "normalized": False}
    )
    assert ln.normalized is False
