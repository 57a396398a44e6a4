"""Zone geometry: point-in-polygon, box anchors, area strings, box/polygon overlap.

Coordinates are image pixels, x to the right, y *down*. Polygons are (M, 2) float64
arrays of vertices, the ring implicitly closed (the last vertex joins the first).

Boundary rule of :func:`points_in_polygon` (half-open crossing number): a point is
inside when a ray from it towards +x crosses the boundary an odd number of times, where
an edge from ``a`` to ``b`` is crossed when ``min(ya, yb) <= y < max(ya, yb)`` and the
point lies strictly left of the edge. For an axis-aligned rectangle this is exactly
``x0 <= x < x1 and y0 <= y < y1``: the left and top edges (and the top-left corner) are
inside, the right and bottom edges and the other three corners outside, like pixels.
Polygons that share an edge split the points of that edge between them with none lost
and none counted twice. Decisions are exact when all coordinates are integers below
2**26 in magnitude (every product is exact in float64); for other coordinates a point
within floating rounding of a slanted edge may land on either side. Self-intersecting
rings follow the even-odd rule (:func:`validate_polygon` rejects them for zones).

Lines (:func:`segment_polyline_crossings`, :func:`point_polyline_distance`) are open
polylines, (K + 1, 2) float64 vertices; their sides and tie rules are documented there.

Winding: :func:`validate_polygon` returns vertices in positive shoelace order,
``sum(x[i] * y[i+1] - x[i+1] * y[i]) > 0``: counter-clockwise in the usual x-right,
y-up frame, which is *clockwise as drawn on the image* (y down). The first vertex is kept
first.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.errors import AreaError, AreaOutsideImageError

__all__ = [
    "MAX_AREA_POINTS",
    "MAX_LINE_POINTS",
    "MIN_AREA_POINTS",
    "box_anchors",
    "box_polygon_overlap",
    "check_polygon_in_image",
    "parse_area",
    "point_polyline_distance",
    "points_in_polygon",
    "segment_polyline_crossings",
    "validate_polygon",
    "validate_polyline",
]

Polygon = npt.NDArray[np.float64]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]
_IntP = npt.NDArray[np.intp]
_I8 = npt.NDArray[np.int8]

MIN_AREA_POINTS = 4
MAX_AREA_POINTS = 9
MAX_LINE_POINTS = 16

# Decimal numbers only: no nan/inf, hex, underscores or empty strings.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Below this many points the direct edge loop is faster than building a lookup grid.
_GRID_MIN_POINTS = 16384


# -- point in polygon -----------------------------------------------------------------


def points_in_polygon(points: npt.ArrayLike, polygon: npt.ArrayLike) -> _Bool:
    """(N,) bool: which points lie inside the polygon (half-open rule, module docstring).

    Args:
        points: (N, 2) pixel coordinates (x, y). NaN or infinite points are outside.
        polygon: (M, 2) vertices, M >= 3, ring implicitly closed.

    Cost: one vectorized pass per edge for small N; for large N a lookup grid over the
    polygon's bounding box answers most points in a few array operations and only
    points near the boundary are tested edge by edge. Both give identical answers.
    """
    pts = np.ascontiguousarray(points, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    poly = _as_vertices(polygon)
    if pts.shape[0] >= _GRID_MIN_POINTS:
        grid = _Grid.build(poly, pts.shape[0])
        if grid is not None:
            return grid.contains(pts, poly)
    return _crossing_test(pts[:, 0], pts[:, 1], poly)


def _as_vertices(polygon: npt.ArrayLike) -> Polygon:
    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
        raise ValueError(f"polygon must have shape (M, 2) with M >= 3, got {poly.shape}")
    if not np.isfinite(poly).all():
        raise ValueError("polygon vertices must be finite")
    return poly


def _crossing_test(x: _F64, y: _F64, poly: Polygon) -> _Bool:
    """Half-open crossing number, one vectorized pass per edge. x, y: (N,) float64."""
    with np.errstate(invalid="ignore"):  # inf * 0 for infinite points: compares False
        return _crossing_loop(x, y, poly)


def _crossing_loop(x: _F64, y: _F64, poly: Polygon) -> _Bool:
    inside = np.zeros(x.shape, dtype=np.bool_)
    m = poly.shape[0]
    vx = poly[:, 0].tolist()
    vy = poly[:, 1].tolist()
    at_or_below = [y >= v for v in vy]  # y >= vertex y (image "below" or level)
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        dy = vy[j] - vy[i]
        if dy == 0.0:
            continue  # horizontal edges are never crossed
        dx = vx[j] - vx[i]
        spans = at_or_below[i] ^ at_or_below[j]
        # strictly left of the edge: (y - yi) * dx vs (x - xi) * dy, sign by direction
        lhs = y - vy[i]
        lhs *= dx
        rhs = x - vx[i]
        rhs *= dy
        left = lhs > rhs if dy > 0 else lhs < rhs
        spans &= left
        inside ^= spans
    return inside


class _Grid:
    """A 256 x 256 lookup of square cells over the polygon's bounding box: 0 outside,
    1 inside, 2 near the boundary (points there are tested edge by edge).

    A cell is "near" when some edge passes within ``eps`` of it; every other cell lies
    wholly on one side, and its class is the crossing parity at its centre. ``eps`` is
    far above the rounding in mapping points to cells (float32 when the coordinates'
    magnitude allows it, else float64) and in rasterizing edges, so the lookup never
    disagrees with the exact test. Two rings of padding cells surround the polygon and
    points beyond them (NaN included) are clamped into the outer ring, which is never
    near. A point's (col, row) as two uint8 read as one uint16 is its table index.
    """

    __slots__ = ("cell", "lut", "single", "x0", "y0")

    SIZE = 256
    CHUNK = 32768

    def __init__(
        self, lut: npt.NDArray[np.uint8], x0: float, y0: float, cell: float, single: bool
    ) -> None:
        self.lut = lut
        self.x0 = x0
        self.y0 = y0
        self.cell = cell
        self.single = single

    @classmethod
    def build(cls, poly: Polygon, n_points: int) -> _Grid | None:
        x0, y0 = (float(v) for v in poly.min(axis=0))
        x1, y1 = (float(v) for v in poly.max(axis=0))
        span = max(x1 - x0, y1 - y0)
        if not span > 0.0:
            return None
        size = cls.SIZE
        target = int(min(max(math.sqrt(n_points) / 3.0, 32.0), size - 5.0))
        cell = span / target
        # float32 mapping error, in cells, stays below 1e-3 when this holds:
        magnitude = max(abs(x0), abs(x1), abs(y0), abs(y1))
        single = magnitude * 2.0**-23 < 1e-4 * cell
        # Grid coordinates u = (x - x0) / cell + 2 (v likewise); cell (r, c) is
        # [c, c+1) x [r, r+1). The polygon spans [2, target + 2].
        u = (poly[:, 0] - x0) / cell + 2.0
        v = (poly[:, 1] - y0) / cell + 2.0
        eps = 2e-3 if single else 1e-6
        m = poly.shape[0]
        rows: list[_IntP] = []
        clo: list[_F64] = []
        chi: list[_F64] = []
        for i in range(m):
            j = (i + 1) % m
            ua, va, ub, vb = float(u[i]), float(v[i]), float(u[j]), float(v[j])
            vlo, vhi = min(va, vb), max(va, vb)
            r = np.arange(math.floor(vlo - eps), math.floor(vhi + eps) + 1, dtype=np.intp)
            if va == vb:
                lo = np.full(r.shape, min(ua, ub))
                hi = np.full(r.shape, max(ua, ub))
            else:
                # u over the part of the edge with v in [r - eps, r + 1 + eps]
                slope = (ub - ua) / (vb - va)
                ue = ua + (np.clip(r - eps, vlo, vhi) - va) * slope
                uf = ua + (np.clip(r + (1.0 + eps), vlo, vhi) - va) * slope
                lo = np.minimum(ue, uf)
                hi = np.maximum(ue, uf)
            rows.append(r)
            clo.append(lo - eps)
            chi.append(hi + eps)
        rr = np.clip(np.concatenate(rows), 0, size - 1)
        lo_i = np.clip(np.floor(np.concatenate(clo)), 0, size - 1).astype(np.intp)
        hi_i = np.clip(np.floor(np.concatenate(chi)), 0, size - 1).astype(np.intp)
        # near cells: a difference array along each row, +1 at lo, -1 after hi
        width = size + 1
        diff = np.bincount(rr * width + lo_i, minlength=size * width)
        diff -= np.bincount(rr * width + hi_i + 1, minlength=size * width)
        near = np.cumsum(diff.reshape(size, width), axis=1)[:, :size] > 0
        # crossing parity along each row's centre line, counted per column to the right
        yc = y0 + (np.arange(size, dtype=np.float64) - 1.5) * cell
        ya, yb = poly[:, 1], np.roll(poly[:, 1], -1)
        xa, xb = poly[:, 0], np.roll(poly[:, 0], -1)
        crossing = (yc[:, None] >= ya) ^ (yc[:, None] >= yb)  # (size, M); never horizontal
        ri, ei = np.nonzero(crossing)
        xc = xa[ei] + (yc[ri] - ya[ei]) * (xb[ei] - xa[ei]) / (yb[ei] - ya[ei])
        col = np.clip(np.floor((xc - x0) / cell + 2.0), 0, size - 1).astype(np.intp)
        hist = np.bincount(ri * size + col, minlength=size * size).reshape(size, size)
        right = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # crossings in columns >= c
        lut = np.zeros((size, size), dtype=np.uint8)
        lut[:, :-1] = right[:, 1:] & 1  # parity of crossings strictly right of column c
        lut[near] = 2
        if sys.byteorder == "big":  # the uint16 view reads (col, row) as col * 256 + row
            lut = np.ascontiguousarray(lut.T)
        return cls(lut.reshape(-1), x0, y0, cell, single)

    def contains(self, pts: _F64, poly: Polygon) -> _Bool:
        """(N,) bool for (N, 2) C-contiguous float64 points."""
        out = np.empty(pts.shape[0], dtype=np.bool_)
        step = self.CHUNK  # a chunk's temporaries stay in cache between passes
        for start in range(0, pts.shape[0], step):
            chunk = pts[start : start + step]
            out[start : start + step] = self._classify(chunk, poly)
        return out

    def _classify(self, pts: _F64, poly: Polygon) -> _Bool:
        inv = 1.0 / self.cell
        off = complex(2.0 - self.x0 * inv, 2.0 - self.y0 * inv)
        flat = pts.reshape(-1)  # x and y share the cell size: one pass for both
        with np.errstate(over="ignore", invalid="ignore"):
            if self.single:
                z = np.multiply(flat, np.float32(inv), dtype=np.float32)
                z.view(np.complex64)[:] += np.complex64(off)
            else:
                z = flat * inv
                z.view(np.complex128)[:] += off
            # Clamp into the table; NaN stays NaN and casts to 0 (x86 and ARM alike:
            # tested), the outer ring, so NaN points are outside as the exact test says.
            np.clip(z, 0.0, float(self.SIZE - 1), out=z)
            cells = z.astype(np.uint8).view(np.uint16).astype(np.intp)
        cls = self.lut[cells]
        out: _Bool = cls == 1
        near = np.flatnonzero(cls == 2)
        if near.size:
            sub = pts[near]
            out[near] = _crossing_test(sub[:, 0], sub[:, 1], poly)
        return out


# -- anchors ---------------------------------------------------------------------------


def box_anchors(xyxy: npt.ArrayLike, mode: Literal["bottom_center", "center"]) -> _F64:
    """(N, 2) float64 anchor points of (N, 4) boxes (x1, y1, x2, y2).

    ``bottom_center`` is ((x1 + x2) / 2, y2), the feet of a standing person (the fence
    contract's default); ``center`` is the box centre.
    """
    b = np.asarray(xyxy, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {b.shape}")
    out = np.empty((b.shape[0], 2), dtype=np.float64)
    np.add(b[:, 0], b[:, 2], out=out[:, 0])
    out[:, 0] *= 0.5
    if mode == "bottom_center":
        out[:, 1] = b[:, 3]
    elif mode == "center":
        np.add(b[:, 1], b[:, 3], out=out[:, 1])
        out[:, 1] *= 0.5
    else:
        raise ValueError(f"mode must be 'bottom_center' or 'center', got {mode!r}")
    return out


# -- area strings and polygon validation ---------------------------------------------------


def parse_area(text: str) -> Polygon:
    """Parse the fence contract's ``"x1,y1,x2,y2,..."`` into a validated polygon.

    Accepts 4 to 9 points (8 to 18 decimal numbers, commas between, spaces around them
    allowed). Returns :func:`validate_polygon`'s (M, 2) float64 array.

    Raises:
        AreaError: (contract code 4012) not a string, empty or non-decimal value, NaN or
            infinity, odd count, fewer than 4 or more than 9 points, or a polygon that
            :func:`validate_polygon` rejects.
    """
    if not isinstance(text, str):
        raise AreaError(f"area must be a string, got {type(text).__name__}")
    parts = text.split(",")
    values: list[float] = []
    for i, part in enumerate(parts):
        token = part.strip()
        if not token:
            raise AreaError(f"area value {i + 1} is empty (expected 'x1,y1,x2,y2,...')")
        if _NUMBER.fullmatch(token) is None:
            raise AreaError(f"area value {i + 1} is not a decimal number: {token[:32]!r}")
        value = float(token)
        if not math.isfinite(value):
            raise AreaError(f"area value {i + 1} is out of range: {token[:32]!r}")
        values.append(value)
    if len(values) % 2:
        raise AreaError(f"area has an odd number of values ({len(values)}); expected x,y pairs")
    n_points = len(values) // 2
    if not MIN_AREA_POINTS <= n_points <= MAX_AREA_POINTS:
        raise AreaError(
            f"area has {n_points} points; expected {MIN_AREA_POINTS} to {MAX_AREA_POINTS}"
        )
    return validate_polygon(np.asarray(values, dtype=np.float64).reshape(-1, 2))


def validate_polygon(points: npt.ArrayLike) -> Polygon:
    """A zone polygon checked and normalised: (M, 2) float64, positive shoelace winding.

    Consecutive repeated vertices (including a closing copy of the first) are dropped.
    The ring must then have at least 3 vertices, be simple (no self-intersection or
    self-touching, checked with shapely/GEOS) and have non-zero area.

    Raises:
        AreaError: (4012) with the reason, e.g. GEOS's ``Self-intersection[5 5]``.
    """
    import shapely

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise AreaError(f"polygon must be a list of (x, y) points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise AreaError("polygon coordinates must be finite numbers")
    if pts.shape[0]:
        step = np.any(pts != np.roll(pts, -1, axis=0), axis=1)  # differs from the next
        if not step.any():
            step[0] = True  # all vertices equal: keep one, rejected below
        pts = pts[step]
    if pts.shape[0] < 3:
        raise AreaError(f"polygon needs at least 3 distinct vertices, got {pts.shape[0]}")
    shape = shapely.Polygon(pts)
    if not shapely.is_valid(shape):
        reason = shapely.is_valid_reason(shape)
        raise AreaError(f"polygon is not simple: {reason}")
    if not shape.area > 0.0:
        raise AreaError("polygon has zero area")
    x, y = pts[:, 0], pts[:, 1]
    signed2 = float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    if signed2 < 0.0:
        pts = np.concatenate([pts[:1], pts[:0:-1]])  # reverse, first vertex stays first
    return np.ascontiguousarray(pts)


def check_polygon_in_image(polygon: npt.ArrayLike, width: int, height: int) -> None:
    """Raise unless every vertex lies in the image, ``[0, width] x [0, height]``.

    Vertices on the far borders (x == width, y == height) are allowed: they are the
    outer edges of the last pixel column and row.

    Raises:
        AreaOutsideImageError: (contract code 4013) naming the first vertex outside.
        ValueError: for a non-positive image size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    outside = ~(
        (poly[:, 0] >= 0) & (poly[:, 0] <= width) & (poly[:, 1] >= 0) & (poly[:, 1] <= height)
    )
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        x, y = poly[i]
        raise AreaOutsideImageError(
            f"area point {i + 1} ({x:g}, {y:g}) lies outside the {width}x{height} image"
        )


# -- overlap ------------------------------------------------------------------------------


def box_polygon_overlap(xyxy: npt.ArrayLike, polygon: npt.ArrayLike) -> _F64:
    """(N,) float64 in [0, 1]: the fraction of each box's area inside the polygon.

    Args:
        xyxy: (N, 4) boxes (x1, y1, x2, y2). Boxes with zero or negative width or
            height, or non-finite corners, give 0.
        polygon: (M, 2) vertices (a simple ring; see :func:`validate_polygon`).
    """
    import shapely

    b = np.asarray(xyxy, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {b.shape}")
    poly = _as_vertices(polygon)
    out = np.zeros((b.shape[0],), dtype=np.float64)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    with np.errstate(invalid="ignore", over="ignore"):
        area = w * h
    ok = np.flatnonzero((w > 0) & (h > 0) & np.isfinite(area))
    if ok.size == 0:
        return out
    bo = b[ok]
    boxes = shapely.box(bo[:, 0], bo[:, 1], bo[:, 2], bo[:, 3])
    inter = shapely.area(shapely.intersection(boxes, shapely.Polygon(poly)))
    out[ok] = np.clip(inter / area[ok], 0.0, 1.0)
    return out


# -- lines: open polylines that objects cross ----------------------------------------------


def validate_polyline(points: npt.ArrayLike) -> _F64:
    """A counting line checked: (M, 2) float64 vertices, 2 <= M <= :data:`MAX_LINE_POINTS`.

    Consecutive repeated vertices are dropped; the rest must be finite and form a simple
    open polyline (no self-intersection, no segment folding back on another, checked with
    shapely/GEOS). The order is kept: it defines the line's sides (see
    :func:`segment_polyline_crossings`).

    Raises:
        ValueError: with the reason.
    """
    import shapely

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"line must be a list of (x, y) points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("line coordinates must be finite numbers")
    if pts.shape[0]:
        keep = np.ones((pts.shape[0],), dtype=np.bool_)
        keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
        pts = pts[keep]
    if pts.shape[0] < 2:
        raise ValueError(f"line needs at least 2 distinct points, got {pts.shape[0]}")
    if pts.shape[0] > MAX_LINE_POINTS:
        raise ValueError(f"line has {pts.shape[0]} points; at most {MAX_LINE_POINTS}")
    if not shapely.LineString(pts).is_simple:
        raise ValueError("line crosses or touches itself")
    return np.ascontiguousarray(pts)


def _as_xy(points: npt.ArrayLike, name: str) -> _F64:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {arr.shape}")
    return arr


def _as_line(line: npt.ArrayLike) -> _F64:
    v = np.asarray(line, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 2:
        raise ValueError(f"line must have shape (K + 1, 2) with K >= 1, got {v.shape}")
    return v


def segment_polyline_crossings(p: npt.ArrayLike, q: npt.ArrayLike, line: npt.ArrayLike) -> _I8:
    """Signed crossings of N movements ``p[i] -> q[i]`` with the K segments of a polyline.

    Sides: walking the line from its first to its last vertex *as drawn on the image*
    (x right, y down), the **right** side is where ``cross(b - a, x - a) > 0`` for the
    segment ``a -> b``, the **left** side where it is ``< 0``. A movement crosses segment
    ``k`` when its ends lie on different sides of the segment's line and the segment's
    ends lie on different sides of the movement's line.

    Ties (a point exactly on a line, a movement exactly through a vertex) are broken as
    if every movement were shifted by an infinitesimal ``(e, e**2)``: a hair to the right
    (+x) and far less down (+y). So an anchor exactly on a segment is on the side +x
    points to (the right side of an upward or a left-to-right segment), a movement
    through a vertex crosses the polyline there once or not at all, and the crossings of
    a track's successive movements always add up to its change of side: a jitter onto
    the line and back adds up to 0, with no double count. A movement of zero length, or
    along a segment, crosses nothing. Decisions are exact when all coordinates are
    integers (or halves) below 2**25 in magnitude; non-finite points cross nothing.

    Args:
        p, q: (N, 2) movement starts and ends (pixels).
        line: (K + 1, 2) polyline vertices, K >= 1 (see :func:`validate_polyline`).

    Returns:
        (N, K) int8: ``+1`` left-to-right crossing of segment k, ``-1`` right-to-left,
        ``0`` none. ``.sum(axis=1)`` is each movement's net crossing.
    """
    p64, q64 = _as_xy(p, "p"), _as_xy(q, "q")
    if p64.shape != q64.shape:
        raise ValueError(f"p and q must have the same shape, got {p64.shape} and {q64.shape}")
    v = _as_line(line)
    a, d = v[:-1], v[1:] - v[:-1]  # (K, 2)
    n, k = p64.shape[0], a.shape[0]
    if n == 0:
        return np.zeros((0, k), dtype=np.int8)
    # On a segment's line, the shift (e, e**2) decides: cross(d, s) = -dy * e + dx * e**2.
    tie_right = (d[:, 1] < 0) | ((d[:, 1] == 0) & (d[:, 0] > 0))  # (K,)
    m = q64 - p64  # (N, 2)
    # On the movement's line, a vertex's side: cross(m, -s) = my * e - mx * e**2.
    tie_pos = (m[:, 1] > 0) | ((m[:, 1] == 0) & (m[:, 0] < 0))  # (N,)
    with np.errstate(invalid="ignore", over="ignore"):
        sp = d[:, 0] * (p64[:, None, 1] - a[:, 1]) - d[:, 1] * (p64[:, None, 0] - a[:, 0])
        sq = d[:, 0] * (q64[:, None, 1] - a[:, 1]) - d[:, 1] * (q64[:, None, 0] - a[:, 0])
        o = m[:, None, 0] * (v[:, 1] - p64[:, None, 1]) - m[:, None, 1] * (
            v[:, 0] - p64[:, None, 0]
        )
    right_p = (sp > 0) | ((sp == 0) & tie_right)
    right_q = (sq > 0) | ((sq == 0) & tie_right)
    pos = (o > 0) | ((o == 0) & tie_pos[:, None])  # (N, K + 1)
    hit = (pos[:, :-1] != pos[:, 1:]) & (right_p != right_q)
    hit &= np.isfinite(sp) & np.isfinite(sq)
    return np.where(hit, np.where(right_q, 1, -1), 0).astype(np.int8)


def point_polyline_distance(points: npt.ArrayLike, line: npt.ArrayLike) -> tuple[_F64, _I8]:
    """Distance of each point to a polyline, and its side of the nearest segment.

    Args:
        points: (N, 2) pixels.
        line: (K + 1, 2) polyline vertices, K >= 1, no zero-length segment.

    Returns:
        ``(dist, side)``: (N,) float64 Euclidean distance to the nearest point of the
        polyline (NaN for non-finite points), and (N,) int8 ``+1`` when the point is on the
        right of the nearest segment's line, ``-1`` on its left (the sides and tie rule of
        :func:`segment_polyline_crossings`; the first segment wins a tie in distance).
    """
    x = _as_xy(points, "points")
    v = _as_line(line)
    a, d = v[:-1], v[1:] - v[:-1]
    n = x.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.float64), np.zeros((0,), dtype=np.int8)
    dd = np.einsum("kj,kj->k", d, d)
    with np.errstate(invalid="ignore", over="ignore"):
        ax = x[:, None, :] - a  # (N, K, 2)
        t = np.einsum("nkj,kj->nk", ax, d) / np.where(dd > 0, dd, 1.0)
        t = np.clip(t, 0.0, 1.0)
        gap = ax - t[..., None] * d
        dist2 = np.einsum("nkj,nkj->nk", gap, gap)
        cross = d[:, 0] * ax[..., 1] - d[:, 1] * ax[..., 0]
    tie_right = (d[:, 1] < 0) | ((d[:, 1] == 0) & (d[:, 0] > 0))
    right = (cross > 0) | ((cross == 0) & tie_right)
    nearest = np.argmin(np.where(np.isnan(dist2), np.inf, dist2), axis=1)
    rows = np.arange(n)
    dist = np.sqrt(dist2[rows, nearest])
    side = np.where(right[rows, nearest], 1, -1).astype(np.int8)
    return dist, side
