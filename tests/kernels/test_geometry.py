"""edge.kernels.geometry: point-in-polygon (against shapely and the half-open rule),
anchors, area-string parsing and validation, image bounds, box/polygon overlap."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import AreaError, AreaOutsideImageError
from edge.kernels import geometry as geo
from edge.kernels.geometry import (
    box_anchors,
    box_polygon_overlap,
    check_polygon_in_image,
    parse_area,
    points_in_polygon,
    validate_polygon,
)

SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
# concave "C"/arrow shapes with 4..9 vertices, in the ranges an area string uses
POLYGONS = {
    "square": SQUARE,
    "quad": np.array([[100, 100], [900, 150], [800, 700], [200, 650]], np.float64),
    "dart4": np.array([[0, 0], [10, 5], [0, 10], [4, 5]], np.float64),  # concave at (4, 5)
    "concave6": np.array([[0, 0], [12, 0], [12, 12], [6, 4], [0, 12], [3, 6]], np.float64),
    "concave9": np.array(
        [
            [100, 100],
            [500, 300],
            [900, 100],
            [850, 500],
            [950, 900],
            [500, 700],
            [300, 950],
            [150, 600],
            [350, 450],
        ],
        np.float64,
    ),
    "thin": np.array([[0, 0], [1000, 1], [1000, 2], [0, 1]], np.float64),
}


def _shapely_inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    p = shapely.Polygon(poly)
    shapely.prepare(p)
    return np.asarray(shapely.contains_xy(p, points[:, 0], points[:, 1]))


def _off_boundary(points: np.ndarray, poly: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    ring = shapely.Polygon(poly).boundary
    return np.asarray(shapely.distance(shapely.points(points), ring) > tol)


# -- points_in_polygon ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POLYGONS))
@pytest.mark.parametrize("n", [500, 60_000])  # the edge loop, and the lookup grid
def test_matches_shapely_off_the_boundary(name: str, n: int) -> None:
    poly = POLYGONS[name]
    rng = np.random.default_rng(n)
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    margin = 0.1 * (hi - lo)
    pts = rng.uniform(lo - margin, hi + margin, (n, 2))
    keep = _off_boundary(pts, poly)
    assert keep.mean() > 0.99
    got = points_in_polygon(pts, poly)
    assert got.dtype == np.bool_ and got.shape == (n,)
    np.testing.assert_array_equal(got[keep], _shapely_inside(pts[keep], poly))


@pytest.mark.parametrize("name", sorted(POLYGONS))
def test_lookup_grid_agrees_with_edge_loop_everywhere(name: str) -> None:
    """Including integer points exactly on edges and vertices, and non-finite points."""
    poly = POLYGONS[name]
    rng = np.random.default_rng(3)
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    ints = rng.integers(lo - 3, hi + 4, (40_000, 2)).astype(np.float64)
    floats = rng.uniform(lo - 5, hi + 5, (40_000, 2))
    special = np.array(
        [[np.nan, 1], [1, np.nan], [np.inf, 5], [-np.inf, 5], [5, np.inf], [1e300, -1e300]]
    )
    pts = np.concatenate([ints, floats, poly, special])
    assert len(pts) >= geo._GRID_MIN_POINTS
    exact = geo._crossing_test(pts[:, 0].copy(), pts[:, 1].copy(), poly)
    np.testing.assert_array_equal(points_in_polygon(pts, poly), exact)
    assert not exact[-len(special) :].any()


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        ((0, 0), True),  # top-left corner
        ((10, 0), False),  # top-right
        ((0, 10), False),  # bottom-left
        ((10, 10), False),  # bottom-right
        ((5, 0), True),  # top edge
        ((0, 5), True),  # left edge
        ((10, 5), False),  # right edge
        ((5, 10), False),  # bottom edge
        ((5, 5), True),
        ((9.999, 9.999), True),
        ((-0.001, 5), False),
        ((5, -0.001), False),
        ((np.nan, 5), False),
    ],
)
def test_square_half_open_rule(point: tuple[float, float], inside: bool) -> None:
    """[0,10] x [0,10] contains exactly 0 <= x < 10 and 0 <= y < 10, like pixels."""
    assert points_in_polygon([point], SQUARE).tolist() == [inside]
    # winding does not matter
    assert points_in_polygon([point], SQUARE[::-1]).tolist() == [inside]


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        ((4, 5), True),  # reflex vertex of the dart, a left boundary point
        ((0, 0), False),  # top tip: nothing of the polygon lies right of it at y = 0
        ((10, 5), False),  # rightmost vertex
        ((0, 10), False),  # bottom vertex
        ((2, 5), False),  # in the notch
        ((6, 5), True),
        ((2, 1), False),  # on the edge (0,0)-(10,5): the right end of the row y = 1
        ((2, 7.5), True),  # on the edge (0,10)-(4,5): the left end of the row y = 7.5
        ((2, 9), False),  # on the edge (10,5)-(0,10): a right boundary
    ],
)
def test_concave_dart_vertices_and_edges(point: tuple[float, float], inside: bool) -> None:
    assert points_in_polygon([point], POLYGONS["dart4"]).tolist() == [inside]


def test_nine_vertex_polygon_vertices() -> None:
    poly = POLYGONS["concave9"]
    got = points_in_polygon(poly, poly)
    # each vertex follows the rule: inside iff the ray to +x crosses an odd number of edges
    expected = [
        sum(
            1
            for i in range(len(poly))
            if (vy >= poly[i, 1]) != (vy >= poly[(i + 1) % len(poly), 1])
            and vx
            < poly[i, 0]
            + (vy - poly[i, 1])
            * (poly[(i + 1) % len(poly), 0] - poly[i, 0])
            / (poly[(i + 1) % len(poly), 1] - poly[i, 1])
        )
        % 2
        == 1
        for vx, vy in poly
    ]
    assert got.tolist() == expected


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(1, 9), seed=st.integers(0, 1000))
def test_shared_edges_split_points_exactly_once(cut: int, seed: int) -> None:
    """Tiles sharing edges (slanted ones too): every integer point of the big square's
    half-open extent lies in exactly one tile."""
    tiles = [
        np.array([[0, 0], [cut, 0], [10 - cut, 10], [0, 10]], np.float64),
        np.array([[cut, 0], [10, 0], [10, 5], [7, 6], [10 - cut, 10]], np.float64),
        np.array([[10, 5], [10, 10], [10 - cut, 10], [7, 6]], np.float64),
    ]
    rng = np.random.default_rng(seed)
    pts = np.concatenate(
        [
            np.stack(np.meshgrid(np.arange(0, 10), np.arange(0, 10)), -1).reshape(-1, 2),
            rng.integers(0, 10, (200, 2)) + rng.integers(0, 2, (200, 2)) * 0.5,
        ]
    ).astype(np.float64)
    pts = pts[(pts[:, 0] < 10) & (pts[:, 1] < 10)]
    counts = np.sum([points_in_polygon(pts, t) for t in tiles], axis=0)
    assert (counts == 1).all()


def test_empty_and_shape_errors() -> None:
    assert points_in_polygon(np.zeros((0, 2)), SQUARE).shape == (0,)
    with pytest.raises(ValueError, match="points"):
        points_in_polygon(np.zeros((3, 3)), SQUARE)
    with pytest.raises(ValueError, match="polygon"):
        points_in_polygon(np.zeros((3, 2)), SQUARE[:2])
    with pytest.raises(ValueError, match="finite"):
        points_in_polygon(np.zeros((3, 2)), np.array([[0, 0], [1, np.nan], [1, 1]]))


# -- anchors -------------------------------------------------------------------------------


def test_box_anchors() -> None:
    boxes = np.array([[0, 0, 10, 20], [4, 6, 8, 8]], np.float32)
    np.testing.assert_array_equal(box_anchors(boxes, "bottom_center"), [[5, 20], [6, 8]])
    np.testing.assert_array_equal(box_anchors(boxes, "center"), [[5, 10], [6, 7]])
    assert box_anchors(np.zeros((0, 4)), "center").shape == (0, 2)
    with pytest.raises(ValueError, match="mode"):
        box_anchors(boxes, "top")  # type: ignore[arg-type]


# -- parse_area / validate_polygon -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,0,10,0,10,10,0,10", SQUARE.tolist()),
        (" 0, 0 ,10,0, 10,10 , 0,10 ", SQUARE.tolist()),
        ("0,0,0,10,10,10,10,0", SQUARE.tolist()),  # other winding, first vertex kept
        ("0,0,10,0,10,10,0,10,0,0", SQUARE.tolist()),  # explicit closing point dropped
        ("1.5,2,1e1,2,+10,8.25,.5,8", [[1.5, 2], [10, 2], [10, 8.25], [0.5, 8]]),
        (
            "0,0,4,0,8,0,8,4,8,8,4,8,0,8,0,4,2,2",  # 9 points, collinear ones allowed
            [[0, 0], [4, 0], [8, 0], [8, 4], [8, 8], [4, 8], [0, 8], [0, 4], [2, 2]],
        ),
    ],
)
def test_parse_area_valid(text: str, expected: list[list[float]]) -> None:
    poly = parse_area(text)
    assert poly.dtype == np.float64
    assert poly.tolist() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("0,0,10,0,10,10,0,", "empty"),
        ("0,0,10,0,10,10,0,a", "not a decimal"),
        ("0,0,10,0,10,10,0,nan", "not a decimal"),
        ("0,0,10,0,10,10,0,inf", "not a decimal"),
        ("0,0,10,0,10,10,0,0x10", "not a decimal"),
        ("0,0,10,0,10,10,0,1_0", "not a decimal"),
        ("0,0,10,0,10,10,0,1e999", "out of range"),
        ("0,0,10,0,10,10,0", "odd number"),
        ("0,0,10,0,10,10", "3 points"),
        (",".join(["1,2"] * 10), "10 points"),
        ("0,0,10,10,10,0,0,10", "not simple"),  # bow-tie
        ("0,0,5,0,10,0,15,0", "not simple|zero area"),  # collinear
        ("0,0,0,0,0,0,0,0", "3 distinct"),
        ("0,0,10,0,10,0,10,0", "3 distinct"),
    ],
)
def test_parse_area_errors(text: str, message: str) -> None:
    with pytest.raises(AreaError, match=message) as info:
        parse_area(text)
    assert info.value.code == 4012


def test_parse_area_rejects_non_string() -> None:
    with pytest.raises(AreaError, match="string"):
        parse_area([0, 0, 1, 1])  # type: ignore[arg-type]


def test_validate_polygon_winding_and_errors() -> None:
    cw = validate_polygon(SQUARE[::-1])  # negative shoelace order in
    assert cw[0].tolist() == SQUARE[-1].tolist()
    x, y = cw[:, 0], cw[:, 1]
    assert float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0
    with pytest.raises(AreaError, match="finite"):
        validate_polygon(np.array([[0, 0], [1, np.inf], [1, 1]]))
    with pytest.raises(AreaError, match="shape"):
        validate_polygon([0, 1, 2])
    with pytest.raises(AreaError, match="not simple"):  # touches itself at a vertex
        validate_polygon([[0, 0], [10, 0], [5, 5], [10, 10], [0, 10], [5, 5]])


# -- image bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("poly", "ok"),
    [
        ([[0, 0], [640, 0], [640, 480], [0, 480]], True),  # the far borders are allowed
        ([[10, 10], [20, 10], [20, 20]], True),
        ([[0, 0], [641, 0], [640, 480]], False),
        ([[0, -1], [640, 0], [640, 480]], False),
        ([[0, 0], [640, 0], [640, 480.5]], False),
    ],
)
def test_check_polygon_in_image(poly: list[list[float]], ok: bool) -> None:
    if ok:
        check_polygon_in_image(np.asarray(poly, np.float64), 640, 480)
    else:
        with pytest.raises(AreaOutsideImageError, match="outside the 640x480") as info:
            check_polygon_in_image(np.asarray(poly, np.float64), 640, 480)
        assert info.value.code == 4013


def test_check_polygon_in_image_bad_size() -> None:
    with pytest.raises(ValueError):
        check_polygon_in_image(SQUARE, 0, 10)


# -- box/polygon overlap -----------------------------------------------------------------------


def test_box_polygon_overlap_table() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # the square itself
            [5, 0, 15, 10],  # half in
            [20, 20, 30, 30],  # out
            [2, 2, 4, 4],  # inside
            [0, 0, 0, 5],  # zero width
            [10, 10, 0, 0],  # inverted
            [0, 0, np.nan, 5],
        ],
        np.float32,
    )
    got = box_polygon_overlap(boxes, SQUARE)
    np.testing.assert_allclose(got, [1, 0.5, 0, 1, 0, 0, 0])
    assert box_polygon_overlap(np.zeros((0, 4)), SQUARE).shape == (0,)


def test_box_polygon_overlap_matches_shapely() -> None:
    poly = POLYGONS["concave6"]
    rng = np.random.default_rng(5)
    xy = rng.uniform(-2, 12, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 6, (300, 2))], axis=1)
    got = box_polygon_overlap(boxes, poly)
    shape = shapely.Polygon(poly)
    expected = [shapely.box(*b).intersection(shape).area / shapely.box(*b).area for b in boxes]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()
