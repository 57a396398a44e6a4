"""Counting-line kernels: movement/polyline crossings, point/polyline distance, validation.

Checked against shapely (GEOS) on random float segments, where no tie occurs, and on
integer grids full of exact ties (anchors on the line, movements through vertices) by
the property the counter relies on: a track's crossings add up to its change of side.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from edge.kernels.geometry import (
    MAX_LINE_POINTS,
    point_polyline_distance,
    segment_polyline_crossings,
    validate_polyline,
)

H = [[0.0, 0.0], [10.0, 0.0]]  # left to right: its right side is below (+y)
UP = [[0.0, 10.0], [0.0, 0.0]]  # drawn upwards: its right side is +x
V = [[0.0, 0.0], [5.0, 5.0], [10.0, 0.0]]  # a V pointing down


@pytest.mark.parametrize(
    ("line", "p", "q", "want"),
    [
        # plain crossings, both directions
        (H, (5, -5), (5, 5), [1]),
        (H, (5, 5), (5, -5), [-1]),
        (UP, (-3, 5), (4, 5), [1]),
        (UP, (4, 5), (-3, 5), [-1]),
        # beside the line, along it, standing still
        (H, (11, -5), (11, 5), [0]),
        (H, (-0.5, -5), (-0.5, 5), [0]),
        (H, (2, 0), (8, 0), [0]),
        (H, (5, 3), (5, 3), [0]),
        (H, (-5, 0), (20, 0), [0]),
        # onto the line and off it: an anchor on the line counts as below (+y side)
        (H, (5, -5), (5, 0), [1]),
        (H, (5, 0), (5, -5), [-1]),
        (H, (5, 5), (5, 0), [0]),
        (H, (5, 0), (5, 5), [0]),
        # ... and as +x of an upward line (its right side)
        (UP, (-3, 5), (0, 5), [1]),
        (UP, (3, 5), (0, 5), [0]),
        # exactly through an end point: decided as if shifted a hair to +x
        (H, (0, -5), (0, 5), [1]),
        (H, (10, -5), (10, 5), [0]),
        (UP, (-3, 0), (3, 0), [1]),
        # a V: straight through the vertex crosses once (the +x arm, as shifted +x),
        # grazing it not at all
        (V, (5, 0), (5, 10), [0, 1]),
        (V, (5, 10), (5, 0), [0, -1]),
        (V, (0, 5), (10, 5), [0, 0]),
        (V, (2, 10), (2, -10), [-1, 0]),
        # one movement across both arms: into the V (its left side) and out again
        (V, (0, 2), (10, 2), [-1, 1]),
        # non-finite points cross nothing
        (H, (5, np.nan), (5, 5), [0]),
        (H, (5, -np.inf), (5, 5), [0]),
    ],
)
def test_crossings_table(
    line: list[list[float]], p: tuple[float, float], q: tuple[float, float], want: list[int]
) -> None:
    got = segment_polyline_crossings([p], [q], line)
    assert got.dtype == np.int8 and got.shape == (1, len(line) - 1)
    assert got[0].tolist() == want


def test_empty_and_bad_shapes() -> None:
    assert segment_polyline_crossings(np.zeros((0, 2)), np.zeros((0, 2)), V).shape == (0, 2)
    d, s = point_polyline_distance(np.zeros((0, 2)), V)
    assert d.shape == (0,) and s.shape == (0,) and s.dtype == np.int8
    with pytest.raises(ValueError, match="same shape"):
        segment_polyline_crossings([[0, 0]], [[1, 1], [2, 2]], H)
    with pytest.raises(ValueError, match="K >= 1"):
        segment_polyline_crossings([[0, 0]], [[1, 1]], [[0, 0]])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        point_polyline_distance([1, 2, 3], H)


def _random_polyline(rng: np.random.Generator, k: int) -> np.ndarray:
    while True:
        pts = rng.uniform(0, 100, (k + 1, 2))
        if shapely.LineString(pts).is_simple:
            return pts


@pytest.mark.parametrize("k", [1, 2, 5, MAX_LINE_POINTS - 1])
def test_matches_shapely_on_random_segments(k: int) -> None:
    """Float coordinates (no ties): a movement crosses as many segments as GEOS finds
    intersection points, and crosses at all exactly when GEOS says they intersect."""
    rng = np.random.default_rng(k)
    line = _random_polyline(rng, k)
    p = rng.uniform(-10, 110, (3000, 2))
    q = p + rng.normal(0, 30, (3000, 2))
    got = segment_polyline_crossings(p, q, line)
    assert got.shape == (3000, k)
    moves = shapely.linestrings(np.stack([p, q], axis=1))
    inter = shapely.intersection(moves, shapely.LineString(line))
    counts = np.array([len(shapely.get_coordinates(g)) for g in inter])
    np.testing.assert_array_equal(np.count_nonzero(got, axis=1), counts)
    np.testing.assert_array_equal(
        got.any(axis=1), shapely.intersects(moves, shapely.LineString(line))
    )
    assert 100 < np.count_nonzero(got) < 3000 * k  # the sample has crossings and misses
    # the sign is the side the movement ends on, for the segment it crossed
    rows, cols = np.nonzero(got)
    a, b = line[cols], line[cols + 1]
    end = q[rows]
    cross = (b[:, 0] - a[:, 0]) * (end[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
        end[:, 0] - a[:, 0]
    )
    np.testing.assert_array_equal(got[rows, cols], np.sign(cross))


LINES_ACROSS = [
    [[-1000, 0], [1000, 0]],
    [[-1000, 0], [0, 0], [3, 5], [1000, 5]],
    [[-1000, -2], [-2, -2], [0, 3], [2, -2], [4, 3], [1000, 3]],
    [[-1000, 4], [0, 0], [1000, 4]],
    [[-1000, 1], [1, 1], [1, -3], [4, -3], [4, 6], [1000, 6]],  # vertical segments too
]


@pytest.mark.parametrize("line", LINES_ACROSS)
def test_crossings_add_up_to_the_change_of_side(line: list[list[int]]) -> None:
    """Integer tracks on a grid, a third of their points snapped onto the line's
    vertices, many more on its segments: for a line that cuts the grid in two, the
    crossings of a track's movements always sum to (side at the end) - (side at the
    start), whatever the ties on the way. That is what makes one event per crossing."""
    arr = np.asarray(line, dtype=np.float64)
    below = shapely.Polygon(np.vstack([arr, [[1000, 3000], [-1000, 3000]]]))  # right side
    geom = shapely.LineString(arr)
    rng = np.random.default_rng(len(line))
    checked = 0
    for _ in range(3000):
        n = int(rng.integers(2, 9))
        pts = rng.integers(-8, 9, (n, 2)).astype(np.float64)
        snap = rng.random(n) < 0.35
        snap[0] = snap[-1] = False
        pts[snap] = arr[rng.integers(1, len(arr) - 1, int(snap.sum()))] if len(arr) > 2 else 0
        if geom.distance(shapely.Point(pts[0])) == 0 or geom.distance(shapely.Point(pts[-1])) == 0:
            continue
        net = int(segment_polyline_crossings(pts[:-1], pts[1:], arr).sum())
        want = int(below.contains(shapely.Point(pts[-1]))) - int(
            below.contains(shapely.Point(pts[0]))
        )
        assert net == want, (line, pts.tolist())
        checked += 1
    assert checked > 1500


def test_distance_and_side_match_shapely() -> None:
    rng = np.random.default_rng(7)
    line = _random_polyline(rng, 4)
    pts = rng.uniform(-20, 120, (2000, 2))
    dist, side = point_polyline_distance(pts, line)
    want = shapely.distance(shapely.points(pts), shapely.LineString(line))
    np.testing.assert_allclose(dist, want, rtol=1e-9, atol=1e-9)
    # the side is that of the nearest segment (by GEOS's distances)
    segs = shapely.linestrings(np.stack([line[:-1], line[1:]], axis=1))
    per_seg = shapely.distance(shapely.points(pts)[:, None], segs[None, :])
    near = np.argmin(per_seg, axis=1)
    two = np.sort(per_seg, axis=1)[:, :2]
    clear = two[:, 1] - two[:, 0] > 1e-6  # not equally near two segments (at a vertex)
    assert clear.mean() > 0.7
    a, b = line[near], line[near + 1]
    cross = (b[:, 0] - a[:, 0]) * (pts[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
        pts[:, 0] - a[:, 0]
    )
    np.testing.assert_array_equal(side[clear], np.where(cross > 0, 1, -1)[clear])
    assert set(side.tolist()) == {-1, 1}
    d, s = point_polyline_distance([[5, 3], [5, -3], [15, 0], [5, 0], [np.nan, 1]], H)
    np.testing.assert_allclose(d[:4], [3, 3, 5, 0])
    assert np.isnan(d[4])
    assert s[:4].tolist() == [1, -1, 1, 1]  # on the line or its extension: the +y side


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[0, 0]], "at least 2 distinct"),
        ([[1, 1], [1, 1]], "at least 2 distinct"),
        ([[0, 0], [np.nan, 1]], "finite"),
        ([[0, 0, 0]], "list of"),
        ([[0, 0], [10, 0], [10, 10], [5, -5]], "crosses or touches itself"),
        ([[0, 0], [10, 0], [5, 0]], "crosses or touches itself"),
        ([[i, i % 2] for i in range(MAX_LINE_POINTS + 1)], "at most"),
    ],
)
def test_validate_polyline_refuses(points: list[list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_polyline(points)


def test_validate_polyline_keeps_order_and_drops_repeats() -> None:
    got = validate_polyline([[0, 0], [0, 0], [10, 0], [10, 5], [10, 5]])
    assert got.tolist() == [[0, 0], [10, 0], [10, 5]] and got.dtype == np.float64
