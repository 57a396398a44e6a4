"""Greedy NMS: edge.kernels.nms (numba and numpy backends) vs cv2.dnn.NMSBoxes vs plain Python.

Detector-like inputs: N boxes jittered (7 % of the size, log-normal sizes) around
round(sqrt(N) / 1.5) objects (at least 3) of 30-300 px in a 1920x1080 frame, scores the
object's base score times U(0.3, 1); the "clutter" scenario replaces 10 % of the boxes by
scattered low-score boxes, as a low confidence threshold gives. IoU threshold 0.5, score
threshold 0 (every box is a candidate). cv2 gets its (x, y, w, h) boxes precomputed, so
its time is the call alone. Both backends go through the public ``nms()`` (the backend
is switched between batches), cv2 and both backends are timed interleaved in one run,
and the keep sets are asserted identical (the plain loop runs once, and only up to
5 000 boxes: beyond that it takes minutes). The numba kernel is compiled (or loaded
from its cache) and called once before any timing; that one-off cost is measured in
fresh interpreters, with an empty and with a filled numba cache, and reported in the
notes.

Bar: the default backend (numba when installed) at least as fast as cv2 at every N
(ratio of medians); goal 2x. The numpy backend's ratio is reported beside it.

    .venv/bin/python benchmarks/bench_nms.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


_STARTUP_PROBE = """
import time
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
from edge.kernels import nms as m
t2 = time.perf_counter()
backend = m.nms_backend()
t3 = time.perf_counter()
print(backend, t1 - t0, t3 - t2)
"""


def startup_cost() -> dict[str, float]:
    """Seconds for ``import numba`` and for the first ``nms_backend()`` (compile or cache
    load), in fresh interpreters: first with an empty numba cache, then with it filled."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
        env.pop("SAFETY_EDGE_NO_NUMBA", None)
        for label in ("cold", "cached"):
            proc = subprocess.run(
                [sys.executable, "-c", _STARTUP_PROBE],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            backend, t_import, t_first = proc.stdout.split()
            if backend != "numba":
                raise RuntimeError(f"fresh interpreter chose backend {backend!r}")
            out[f"import_numba_{label}_s"] = float(t_import)
            out[f"compile_{label}_s"] = float(t_first)
    return out


@functools.cache
def _numba_kernel() -> Any:
    """The compiled kernel (compiled or loaded from the cache once per process)."""
    from edge.kernels import nms as nms_mod

    kernel = nms_mod._compile_numba_kernel()
    if kernel is None:
        raise RuntimeError("numba backend unavailable")
    return kernel


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """Make ``nms()`` use ``name`` ("numba" or "numpy") inside the block."""
    from edge.kernels import nms as nms_mod

    saved = nms_mod._backend, nms_mod._numba_greedy
    if name == "numpy":
        nms_mod._backend, nms_mod._numba_greedy = "numpy", None
    else:
        nms_mod._backend, nms_mod._numba_greedy = "numba", _numba_kernel()
    try:
        yield
    finally:
        nms_mod._backend, nms_mod._numba_greedy = saved


def timed_batches(
    contenders: dict[str, tuple[Callable[[], object], str | None]], *, repeat: int, number: int
) -> dict[str, list[float]]:
    """Seconds per call for each contender, taking turns batch by batch (as
    ``benchmarks.common.interleaved``); each batch of an nms backend runs with that
    backend forced."""
    from benchmarks.common import timings

    out: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, (fn, backend) in contenders.items():
            ctx = forced_backend(backend) if backend else contextlib.nullcontext()
            with ctx:
                out[name] += timings(fn, repeat=1, number=number)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, default=None, help="timed batches per contender")
    args = ap.parse_args(argv)
    repeat = args.repeat or (5 if args.quick else 15)

    from benchmarks.common import write_results
    from edge.kernels.nms import nms, nms_backend

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    default = nms_backend()  # imports numba, compiles or loads the kernel
    with forced_backend("numba"):  # the first call, not timed
        nms(*detector_like(100, seed=0), iou_threshold=IOU)
    warm_in_process = time.perf_counter() - t0
    startup = startup_cost()
    print(f"default backend {default}; startup {startup}", flush=True)

    rows: list[dict[str, Any]] = []
    all_identical = True
    for scenario, clutter in (("clusters", 0.0), ("clusters + 10% clutter", 0.1)):
        for n in SIZES:
            xyxy, scores = detector_like(n, seed=n, clutter=clutter)
            xywh = xyxy.astype(np.float64)
            xywh[:, 2:] -= xywh[:, :2]
            call = functools.partial(nms, xyxy, scores, iou_threshold=IOU)
            with forced_backend("numba"):
                ours = call().tolist()
            with forced_backend("numpy"):
                identical = call().tolist() == ours
            identical = identical and np.asarray(run_cv2(xywh, scores)).reshape(-1).tolist() == ours
            python_ms = math.nan
            if n <= PYTHON_MAX:
                t0 = time.perf_counter()
                ref_py = plain_python_nms(xyxy, scores)
                python_ms = (time.perf_counter() - t0) * 1e3
                identical = identical and ours == ref_py
            all_identical &= identical
            t = timed_batches(
                {
                    "cv2": (functools.partial(run_cv2, xywh, scores), None),
                    "numba": (call, "numba"),
                    "numpy": (call, "numpy"),
                },
                repeat=repeat,
                number=BATCH[n],
            )
            ms = {k: statistics.median(v) * 1e3 for k, v in t.items()}
            rows.append(
                {
                    "scenario": scenario,
                    "n": n,
                    "kept": len(ours),
                    "cv2_ms": ms["cv2"],
                    "numba_ms": ms["numba"],
                    "numpy_ms": ms["numpy"],
                    "numba_vs_cv2": ms["cv2"] / ms["numba"],
                    "numba_vs_cv2_best": min(t["cv2"]) / min(t["numba"]),
                    "numpy_vs_cv2": ms["cv2"] / ms["numpy"],
                    "numpy_vs_cv2_best": min(t["cv2"]) / min(t["numpy"]),
                    "python_ms": python_ms,
                    "numba_vs_python": python_ms / ms["numba"],
                    "identical": identical,
                }
            )
            r = rows[-1]
            print(
                f"{scenario:<24} n={n:>6} kept={r['kept']:>5} cv2 {ms['cv2']:9.4f} ms  "
                f"numba {ms['numba']:9.4f} ms x{r['numba_vs_cv2']:.2f}  "
                f"numpy {ms['numpy']:9.4f} ms x{r['numpy_vs_cv2']:.2f}  "
                f"python {python_ms:9.1f} ms  identical={identical}",
                flush=True,
            )
    load_end = os.getloadavg()

    def verdict(key: str) -> tuple[bool, bool, dict[str, Any]]:
        worst = min(rows, key=lambda r: float(r[key]))
        return (
            all(float(r[key]) >= 1.0 for r in rows),
            all(float(r[key]) >= 2.0 for r in rows),
            worst,
        )

    bar_ok, goal_ok, worst = verdict("numba_vs_cv2")
    np_bar, _, np_worst = verdict("numpy_vs_cv2")
    notes = [
        "ratios are medians of interleaved batches in one run (`*_vs_cv2`: cv2 time / ours); "
        "`*_best` is the ratio of the fastest batches (less sensitive to a busy machine)",
        f"IoU threshold {IOU}, score threshold 0; keep sets identical (numba, numpy, cv2, "
        f"and the plain loop up to {PYTHON_MAX} boxes): {'yes' if all_identical else 'NO'}",
        f"default backend in this environment: {default}. Bar (default backend >= cv2 at "
        f"every N): {'PASS' if bar_ok else 'FAIL'}; goal 2x at every N: "
        f"{'PASS' if goal_ok else 'not met'}; worst: {worst['scenario']} n={worst['n']} "
        f"x{float(worst['numba_vs_cv2']):.2f}",
        f"numpy backend alone (numba not installed or SAFETY_EDGE_NO_NUMBA=1): bar "
        f"{'PASS' if np_bar else 'FAIL'}; worst: {np_worst['scenario']} n={np_worst['n']} "
        f"x{float(np_worst['numpy_vs_cv2']):.2f}",
        "one-off numba cost, not in the timings, in fresh interpreters: with an empty numba "
        f"cache, import numba {startup['import_numba_cold_s']:.2f} s + first nms_backend() "
        f"(compile) {startup['compile_cold_s']:.2f} s; with the cache filled, import numba "
        f"{startup['import_numba_cached_s']:.2f} s + first nms_backend() (cache load) "
        f"{startup['compile_cached_s']:.2f} s. In this process (cache filled): "
        f"{warm_in_process:.2f} s to the end of the first call",
        f"{repeat} timed batches per contender; batch sizes {BATCH}",
        f"machine shared with a training job and other work: load average (1, 5, 15 min) "
        f"{tuple(round(v, 2) for v in load_start)} at start, "
        f"{tuple(round(v, 2) for v in load_end)} at end",
    ]
    write_results(
        "nms",
        rows,
        title="Greedy NMS: edge.kernels.nms (numba, numpy) vs cv2.dnn.NMSBoxes vs plain Python",
        columns=[
            "scenario",
            "n",
            "kept",
            "cv2_ms",
            "numba_ms",
            "numpy_ms",
            "numba_vs_cv2",
            "numba_vs_cv2_best",
            "numpy_vs_cv2",
            "python_ms",
            "numba_vs_python",
            "identical",
        ],
        notes=notes,
    )
    for note in notes:
        print(note)
    return 0 if all_identical and bar_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
