"""Point in polygon: edge.kernels.geometry.points_in_polygon against shapely and matplotlib.

10^6 points uniform over each polygon's bounding box grown by 10 % on every side, for
4- and 9-vertex convex and concave polygons in pixel coordinates. Contenders, timed
interleaved in one run, each call doing all of its own set-up:

- ``shapely``: ``shapely.Polygon`` + ``shapely.prepare`` + ``shapely.contains_xy``;
- ``matplotlib``: ``matplotlib.path.Path(polygon).contains_points``;
- ``ours``: ``points_in_polygon(points, polygon)``.

Results are asserted identical for every point farther than 1e-6 px from the boundary
(on the boundary each library has its own rule; ours is documented in the module).

Bar: >= 5x faster than shapely on every polygon.

    .venv/bin/python benchmarks/bench_pip.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

N_POINTS = 1_000_000
BAR = 5.0

POLYGONS: dict[str, list[tuple[float, float]]] = {
    "convex 4": [(100, 100), (900, 150), (800, 700), (200, 650)],
    "concave 4 (dart)": [(100, 100), (900, 400), (100, 700), (400, 400)],
    "convex 9": [
        (500, 80),
        (760, 170),
        (900, 380),
        (870, 620),
        (700, 800),
        (450, 850),
        (230, 730),
        (110, 480),
        (210, 220),
    ],
    "concave 9": [
        (100, 100),
        (500, 300),
        (900, 100),
        (850, 500),
        (950, 900),
        (500, 700),
        (300, 950),
        (150, 600),
        (350, 450),
    ],
}


def points_around(poly: npt.NDArray[np.float64], n: int, seed: int) -> npt.NDArray[np.float64]:
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    margin = 0.1 * (hi - lo)
    return np.random.default_rng(seed).uniform(lo - margin, hi + margin, (n, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--points", type=int, default=N_POINTS)
    args = ap.parse_args(argv)
    repeat = 3 if args.quick else 7

    import shapely
    from matplotlib.path import Path as MplPath

    from benchmarks.common import interleaved, write_results
    from edge.kernels.geometry import points_in_polygon

    rows = []
    all_identical = True
    for seed, (name, verts) in enumerate(POLYGONS.items()):
        poly = np.asarray(verts, dtype=np.float64)
        pts = points_around(poly, args.points, seed)

        def run_shapely(
            poly: npt.NDArray[np.float64] = poly, pts: npt.NDArray[np.float64] = pts
        ) -> npt.NDArray[np.bool_]:
            shape = shapely.Polygon(poly)
            shapely.prepare(shape)
            return np.asarray(shapely.contains_xy(shape, pts[:, 0], pts[:, 1]))

        def run_mpl(
            poly: npt.NDArray[np.float64] = poly, pts: npt.NDArray[np.float64] = pts
        ) -> npt.NDArray[np.bool_]:
            return np.asarray(MplPath(poly).contains_points(pts))

        def run_ours(
            poly: npt.NDArray[np.float64] = poly, pts: npt.NDArray[np.float64] = pts
        ) -> npt.NDArray[np.bool_]:
            return points_in_polygon(pts, poly)

        ring = shapely.Polygon(poly).boundary
        off = np.asarray(shapely.distance(shapely.points(pts), ring) > 1e-6)
        ours = run_ours()
        same_shapely = bool(np.array_equal(ours[off], np.asarray(run_shapely())[off]))
        same_mpl = bool(np.array_equal(ours[off], np.asarray(run_mpl())[off]))
        identical = same_shapely and same_mpl
        all_identical &= identical
        t = interleaved(
            {"shapely": run_shapely, "matplotlib": run_mpl, "ours": run_ours}, repeat=repeat
        )
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        rows.append(
            {
                "polygon": name,
                "vertices": len(poly),
                "points": args.points,
                "inside_share": float(ours.mean()),
                "ours_ms": med["ours"],
                "shapely_ms": med["shapely"],
                "matplotlib_ms": med["matplotlib"],
                "speedup_vs_shapely": med["shapely"] / med["ours"],
                "speedup_vs_shapely_best": min(t["shapely"]) / min(t["ours"]),
                "speedup_vs_matplotlib": med["matplotlib"] / med["ours"],
                "identical_off_boundary": identical,
                "off_boundary_share": float(off.mean()),
            }
        )
        r = rows[-1]
        print(
            f"{name:<18} ours {med['ours']:8.2f} ms  shapely {med['shapely']:8.2f} ms "
            f"(x{r['speedup_vs_shapely']:.2f})  matplotlib {med['matplotlib']:8.2f} ms "
            f"(x{r['speedup_vs_matplotlib']:.2f})  identical={identical}",
            flush=True,
        )
    worst = min(rows, key=lambda r: float(r["speedup_vs_shapely"]))
    bar_ok = all(float(r["speedup_vs_shapely"]) >= BAR for r in rows)
    notes = [
        "medians of interleaved calls in one run, every call including its own set-up "
        "(shapely: Polygon + prepare; ours: its lookup grid); `speedup_vs_shapely_best` is "
        "the ratio of the fastest calls",
        "identical to shapely and matplotlib for every point > 1e-6 px from the boundary: "
        + ("yes" if all_identical else "NO"),
        f"bar (>= {BAR:g}x shapely on every polygon): {'PASS' if bar_ok else 'FAIL'}; worst: "
        f"{worst['polygon']} x{float(worst['speedup_vs_shapely']):.2f}",
        f"{repeat} timed calls per contender",
    ]
    write_results(
        "pip",
        rows,
        title=f"Point in polygon, {args.points:,} points: ours vs shapely vs matplotlib",
        columns=[
            "polygon",
            "vertices",
            "ours_ms",
            "shapely_ms",
            "matplotlib_ms",
            "speedup_vs_shapely",
            "speedup_vs_shapely_best",
            "speedup_vs_matplotlib",
            "identical_off_boundary",
        ],
        notes=notes,
    )
    for note in notes:
        print(note)
    return 0 if all_identical and bar_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
