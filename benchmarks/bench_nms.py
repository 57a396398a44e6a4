"""Greedy NMS: edge.kernels.nms against cv2.dnn.NMSBoxes and a plain Python loop.

Detector-like inputs: N boxes jittered (7 % of the size, log-normal sizes) around
round(sqrt(N) / 1.5) objects (at least 3) of 30-300 px in a 1920x1080 frame, scores the
object's base score times U(0.3, 1); the "clutter" scenario replaces 10 % of the boxes by
scattered low-score boxes, as a low confidence threshold gives. IoU threshold 0.5, score
threshold 0 (every box is a candidate). cv2 gets its (x, y, w, h) boxes precomputed, so
its time is the call alone. The three alternatives are timed interleaved in one run, and
the keep sets are asserted identical (the plain loop runs once, and only up to 5 000
boxes: beyond that it takes minutes).

Bar: at least as fast as cv2 at every N (ratio of medians); goal 2x.

    .venv/bin/python benchmarks/bench_nms.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SIZES = (100, 1_000, 5_000, 20_000)
PYTHON_MAX = 5_000
IOU = 0.5
BATCH = {100: 200, 1_000: 20, 5_000: 4, 20_000: 1}


def detector_like(
    n: int, *, seed: int, clutter: float = 0.0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(n, 4) float32 xyxy and (n,) float32 scores, clustered like a detector's output."""
    rng = np.random.default_rng(seed)
    n_obj = max(3, round(math.sqrt(n) / 1.5))
    n_bg = int(n * clutter)
    n_cl = n - n_bg
    oh = np.exp(rng.uniform(np.log(30), np.log(300), n_obj))
    ow = oh * rng.uniform(0.4, 1.2, n_obj)
    cx, cy = rng.uniform(0, 1920, n_obj), rng.uniform(0, 1080, n_obj)
    base = rng.uniform(0.4, 0.95, n_obj)
    o = rng.integers(0, n_obj, n_cl)
    j = rng.normal(0, 0.07, (n_cl, 4))
    bx, by = cx[o] + j[:, 0] * ow[o], cy[o] + j[:, 1] * oh[o]
    bw, bh = ow[o] * np.exp(j[:, 2]), oh[o] * np.exp(j[:, 3])
    xyxy = np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], 1)
    scores = base[o] * rng.uniform(0.3, 1.0, n_cl)
    if n_bg:
        h = np.exp(rng.uniform(np.log(10), np.log(200), n_bg))
        w = h * rng.uniform(0.3, 1.5, n_bg)
        x, y = rng.uniform(0, 1920, n_bg), rng.uniform(0, 1080, n_bg)
        bg = np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)
        xyxy = np.concatenate([xyxy, bg])
        scores = np.concatenate([scores, rng.uniform(0.01, 0.3, n_bg)])
    perm = rng.permutation(n)
    return xyxy[perm].astype(np.float32), scores[perm].astype(np.float32)


def plain_python_nms(xyxy: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]) -> list[int]:
    """The textbook loop over Python floats, OpenCV's float32 comparison included."""
    boxes = xyxy.astype(np.float64).tolist()
    conf = scores.tolist()
    thr = float(np.float32(IOU))
    f32 = np.float32
    order = sorted((i for i in range(len(conf)) if conf[i] > 0.0), key=lambda i: -conf[i])
    kept: list[int] = []
    kept_boxes: list[tuple[float, float, float, float, float]] = []
    for i in order:
        x1, y1, x2, y2 = boxes[i]
        area = (x2 - x1) * (y2 - y1)
        keep = True
        for a1, b1, a2, b2, ka in kept_boxes:
            iw = min(x2, a2) - max(x1, a1)
            ih = min(y2, b2) - max(y1, b1)
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            iou = inter / (area + ka - inter)
            if float(f32(1.0) - f32(1.0 - iou)) > thr:
                keep = False
                break
        if keep:
            kept.append(i)
            kept_boxes.append((x1, y1, x2, y2, area))
    return kept


def run_cv2(xywh: npt.NDArray[np.float64], scores: npt.NDArray[np.float32]) -> object:
    import cv2

    return cv2.dnn.NMSBoxes(xywh, scores, 0.0, IOU)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, default=None, help="timed batches per contender")
    args = ap.parse_args(argv)
    repeat = args.repeat or (5 if args.quick else 15)

    from benchmarks.common import interleaved, write_results
    from edge.kernels.nms import nms

    rows = []
    all_identical = True
    for scenario, clutter in (("clusters", 0.0), ("clusters + 10% clutter", 0.1)):
        for n in SIZES:
            xyxy, scores = detector_like(n, seed=n, clutter=clutter)
            xywh = xyxy.astype(np.float64)
            xywh[:, 2:] -= xywh[:, :2]
            ours = nms(xyxy, scores, iou_threshold=IOU).tolist()
            ref_cv2 = np.asarray(run_cv2(xywh, scores)).reshape(-1).tolist()
            identical = ours == ref_cv2
            python_ms = math.nan
            if n <= PYTHON_MAX:
                t0 = time.perf_counter()
                ref_py = plain_python_nms(xyxy, scores)
                python_ms = (time.perf_counter() - t0) * 1e3
                identical = identical and ours == ref_py
            all_identical &= identical
            t = interleaved(
                {
                    "cv2": functools.partial(run_cv2, xywh, scores),
                    "ours": functools.partial(nms, xyxy, scores, iou_threshold=IOU),
                },
                repeat=repeat,
                number=BATCH[n],
            )
            cv2_ms = statistics.median(t["cv2"]) * 1e3
            ours_ms = statistics.median(t["ours"]) * 1e3
            rows.append(
                {
                    "scenario": scenario,
                    "n": n,
                    "kept": len(ours),
                    "cv2_ms": cv2_ms,
                    "ours_ms": ours_ms,
                    "speedup_vs_cv2": cv2_ms / ours_ms,
                    "speedup_vs_cv2_best": min(t["cv2"]) / min(t["ours"]),
                    "python_ms": python_ms,
                    "speedup_vs_python": python_ms / ours_ms,
                    "identical": identical,
                }
            )
            r = rows[-1]
            print(
                f"{scenario:<24} n={n:>6} kept={r['kept']:>5} cv2 {cv2_ms:9.3f} ms  "
                f"ours {ours_ms:9.3f} ms  x{r['speedup_vs_cv2']:.2f} (best x"
                f"{r['speedup_vs_cv2_best']:.2f})  python {python_ms:9.1f} ms  "
                f"identical={identical}",
                flush=True,
            )
    worst = min(rows, key=lambda r: float(r["speedup_vs_cv2"]))
    bar_ok = all(float(r["speedup_vs_cv2"]) >= 1.0 for r in rows)
    notes = [
        "ratios are medians of interleaved batches in one run; `speedup_vs_cv2_best` is "
        "the ratio of the fastest batches (less sensitive to a busy machine)",
        f"IoU threshold {IOU}, score threshold 0; keep sets identical to cv2 at every N and "
        f"to the plain loop up to {PYTHON_MAX} boxes: {'yes' if all_identical else 'NO'}",
        f"bar (>= cv2 at every N): {'PASS' if bar_ok else 'FAIL'}; worst: "
        f"{worst['scenario']} n={worst['n']} x{float(worst['speedup_vs_cv2']):.2f}",
        f"{repeat} timed batches per contender; batch sizes {BATCH}",
    ]
    write_results(
        "nms",
        rows,
        title="Greedy NMS: edge.kernels.nms vs cv2.dnn.NMSBoxes vs a plain Python loop",
        columns=[
            "scenario",
            "n",
            "kept",
            "cv2_ms",
            "ours_ms",
            "speedup_vs_cv2",
            "speedup_vs_cv2_best",
            "python_ms",
            "speedup_vs_python",
            "identical",
        ],
        notes=notes,
    )
    for note in notes:
        print(note)
    return 0 if all_identical and bar_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
