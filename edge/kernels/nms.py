"""Greedy non-maximum suppression with classic semantics, vectorized in numpy.

Semantics (the textbook greedy loop, and ``cv2.dnn.NMSBoxes`` with ``eta=1``; both are
checked against this module in ``tests/kernels/test_nms.py``):

1. Candidates are the boxes whose ``score > score_threshold`` (strict, compared in
   float32 like OpenCV). NaN scores are never candidates.
2. Candidates are visited in descending score. Equal scores keep index order (a stable
   sort, as OpenCV's ``std::stable_sort``), so ties are deterministic: the lower index wins.
3. ``top_k`` keeps only the first ``top_k`` candidates of that order *before*
   suppression (OpenCV's and Caffe-SSD's ``top_k``; OpenCV's docstring says otherwise,
   its code does this). ``max_det`` caps the *output*: the first ``max_det`` kept boxes.
4. A candidate is kept unless an already kept box (of the same class, when
   ``class_ids`` is given) overlaps it with IoU above ``iou_threshold``.
   IoU = |A∩B| / (|A| + |B| - |A∩B|) on continuous coordinates, no "+1" pixel
   convention (OpenCV 5.0 has none either; measured). It is evaluated in float64 from
   the float32 inputs, bit for bit as OpenCV does, and compared as OpenCV compares it:
   suppressed iff ``float32(1 - float32(1 - iou)) > float32(iou_threshold)``. That is
   ``iou > iou_threshold`` except within a float32 ulp of the threshold; an IoU exactly
   equal to the threshold keeps the box.
5. Empty boxes (zero or negative width or height, i.e. inverted corners, or non-finite
   coordinates) have IoU 0 with every box: kept when they are candidates, never
   suppressing anything. OpenCV differs only here: it gives two zero-area boxes IoU 1,
   a box whose ``w*h`` is negative can suppress others, and boxes whose areas sum to at
   most 2.2e-16 are treated as identical.

Returned indices are int64, in descending score order (ties by index).

Backends. Two exact implementations give the same indices bit for bit (both are run
through the same tests); :func:`nms_backend` says which one this process uses.

- ``"numba"`` (default when ``numba`` is importable): the textbook loop, compiled. The
  candidates are ordered in numpy, then one compiled pass visits them in order and tests
  each against the boxes kept so far (same class only), stopping at the first
  suppressor and, with ``max_det``, at the ``max_det``-th kept box. O(N*K) IoUs at
  worst, but each is a handful of instructions, with no allocation per box; it runs
  without the GIL. numba is imported, and the kernel compiled (or loaded from numba's
  on-disk cache), on the first call of :func:`nms` or :func:`nms_backend`, never at
  import: about 1 s the first time on a 2-CPU x86 box, well under that from the cache.
- ``"numpy"`` (fallback: numba not installed, failing to compile, or the environment
  variable ``SAFETY_EDGE_NO_NUMBA`` set to anything but ``""`` or ``"0"``): vectorized
  numpy, described next.

The numpy algorithm. Greedy NMS is sequential in score order, and a Python loop per
kept box costs more than OpenCV's C++ loop, so beyond a hundred-odd boxes the work is
done in rounds over a uniform grid. If IoU(a, b) > t then |a∩b| > t/(1+t) (|a| + |b|),
so the overlap of a and b along x exceeds t/(1+t) of the sum of their widths (likewise
along y), and boxes shrunk by t/(1+t) of their size on each side still intersect: two
boxes can only suppress each other when their shrunk boxes share a grid cell. Each box is
registered in every cell its shrunk box touches. In a round, a *head* is an undecided box
that has the best rank in every cell it touches; no undecided better box can suppress
it, so it is kept, and it suppresses (IoU tested exactly) the boxes in its cells. Heads
never share a cell, the best remaining box is always a head, and each round removes
whole clusters, so a detector's output takes a handful of rounds of array operations.
The last few boxes, and small inputs, go through the plain loop vectorized per kept box.
Below a few hundred boxes that loop's per-call overhead makes the numpy backend slower
than OpenCV's C++ loop (a precomputed IoU-matrix variant was measured and is slower
still); above a thousand or so it is faster. See ``benchmarks/results/nms.md``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import struct
import threading
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.types import Detections

__all__ = ["NO_NUMBA_ENV", "nms", "nms_backend", "nms_detections", "suppression_bound"]

_log = logging.getLogger(__name__)

IndexArray = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_C128 = npt.NDArray[np.complex128]
_I64 = npt.NDArray[np.int64]
_Bool = npt.NDArray[np.bool_]

# Inputs with at most this many valid candidates use the per-kept-box loop.
_SEQUENTIAL_MAX = 128
# Once this few registrations remain, the grid rounds hand over to the per-box loop (a
# round costs about as many array calls as three kept boxes in the loop).
_TAIL_REGISTRATIONS = 2
# Grid cell size as a multiple of the mean shrunk box size (measured: 2 to 3 is best).
_CELL_FACTOR = 2.5
# At most this many cells along an axis (keeps cell ids and sort keys in int64).
_GRID_MAX = 1024

Backend = Literal["numba", "numpy"]
#: Set to anything but "" or "0" to force the numpy backend (read once, on first use).
NO_NUMBA_ENV = "SAFETY_EDGE_NO_NUMBA"
# (boxes (N, 4) float32 C-contiguous, order (M,) int64, classes (N,) int64 or (0,),
#  bound, max_det or -1) -> kept indices (K,) int64
_Kernel = Callable[
    [npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64], float, int],
    npt.NDArray[np.int64],
]
_KERNEL_SIGNATURE = "int64[::1](float32[:, ::1], int64[::1], int64[::1], float64, int64)"
_NO_CLASSES = np.zeros((0,), dtype=np.int64)
# Process-wide backend choice, resolved once under the lock (see nms_backend).
_backend: Backend | None = None
_numba_greedy: _Kernel | None = None
_backend_lock = threading.Lock()


def nms(
    xyxy: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    iou_threshold: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    class_ids: npt.ArrayLike | None = None,
    max_det: int | None = None,
) -> IndexArray:
    """Indices of the boxes that greedy NMS keeps, best score first.

    Args:
        xyxy: (N, 4) corners (x1, y1, x2, y2), converted to float32.
        scores: (N,) scores, converted to float32.
        iou_threshold: in [0, 1]; a kept box suppresses boxes with IoU above it
            (compared as OpenCV does, see the module docstring).
        score_threshold: candidates have ``score > score_threshold`` (float32 compare).
        top_k: consider only the ``top_k`` best candidates (None: all). OpenCV semantics.
        class_ids: (N,) integer classes; boxes of different classes never suppress
            each other (None: class-agnostic).
        max_det: return at most this many indices, the best ones (None: no cap).

    Returns:
        (K,) int64 indices into the inputs, descending score, ties by ascending index.

    Raises:
        ValueError: on shape mismatches or out-of-range thresholds.
    """
    boxes = np.asarray(xyxy, dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {boxes.shape}")
    n = boxes.shape[0]
    conf = np.asarray(scores, dtype=np.float32)
    if conf.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {conf.shape}")
    thr = float(iou_threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if math.isnan(float(score_threshold)):
        raise ValueError("score_threshold must not be NaN")
    _check_cap("top_k", top_k)
    _check_cap("max_det", max_det)
    classes: _I64 | None = None
    if class_ids is not None:
        cl = np.asarray(class_ids)
        if cl.shape != (n,):
            raise ValueError(f"class_ids must have shape ({n},), got {cl.shape}")
        integral = np.issubdtype(cl.dtype, np.integer) or np.array_equal(cl, np.round(cl))
        if cl.size and not integral:
            raise ValueError("class_ids must be integers")
        classes = cl.astype(np.int64)

    order = _score_order(conf, np.float32(score_threshold))
    if top_k is not None:
        order = order[:top_k]
    if order.size == 0:
        return np.zeros((0,), dtype=np.int64)

    bound = suppression_bound(thr)
    kernel = _numba_greedy if _backend is not None else _resolve_backend()
    if kernel is not None:  # the numba backend
        if bound >= 1.0:  # nothing can be suppressed
            return order if max_det is None else order[:max_det]
        return kernel(
            np.ascontiguousarray(boxes),
            order,
            _NO_CLASSES if classes is None else classes,
            bound,
            -1 if max_det is None else int(max_det),
        )
    keep_pos = _greedy_positions(boxes[order], None if classes is None else classes[order], bound)
    kept = order[keep_pos]
    if max_det is not None:
        kept = kept[:max_det]
    return kept


def nms_detections(
    dets: Detections,
    *,
    iou_threshold: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    class_agnostic: bool = False,
    max_det: int | None = None,
) -> Detections:
    """The detections greedy NMS keeps, best score first (see :func:`nms`).

    Class-aware by ``dets.class_ids`` unless ``class_agnostic``; extra ``data`` arrays
    are carried along.
    """
    keep = nms(
        dets.xyxy,
        dets.scores,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        top_k=top_k,
        class_ids=None if class_agnostic else dets.class_ids,
        max_det=max_det,
    )
    return dets[keep]


def nms_backend() -> Backend:
    """``"numba"`` or ``"numpy"``: the backend :func:`nms` uses in this process.

    The first call (of this or of :func:`nms`) decides, once per process: ``"numpy"``
    if the environment variable ``SAFETY_EDGE_NO_NUMBA`` is set to anything but ``""``
    or ``"0"``, or if numba cannot be imported or the kernel fails to compile (logged as
    a warning); ``"numba"`` otherwise. Deciding imports numba and compiles the kernel
    (or loads it from numba's cache), which takes a second or so: a service can call
    this at start-up so that its first frame does not pay for it. Thread-safe.
    """
    if _backend is None:
        _resolve_backend()
    assert _backend is not None
    return _backend


@functools.lru_cache(maxsize=256)
def suppression_bound(iou_threshold: float) -> float:
    """The largest float64 IoU that does *not* suppress at ``iou_threshold``.

    OpenCV keeps a box when ``1.f - (float)(1.0 - iou) <= (float)iou_threshold``. That
    map is monotone in ``iou``, so it is equivalent to ``iou <= bound`` for one float64
    ``bound``, found here by bisection over the bit patterns of [0, 1]. Pure; cached.
    """
    u = float(np.float32(iou_threshold))
    one = np.float32(1.0)

    def overlap(x: float) -> float:  # float32 arithmetic, exactly representable result
        return float(one - np.float32(1.0 - x))

    if overlap(1.0) <= u:
        return 1.0
    lo, hi = 0, _bits(1.0)  # overlap(0.0) == 0 <= u < overlap(1.0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if overlap(_from_bits(mid)) <= u:
            lo = mid
        else:
            hi = mid
    return _from_bits(lo)


# -- internals -----------------------------------------------------------------------


def _resolve_backend() -> _Kernel | None:
    """Decide the backend once (see :func:`nms_backend`); the numba kernel or None."""
    global _backend, _numba_greedy
    with _backend_lock:
        if _backend is None:
            kernel: _Kernel | None = None
            if os.environ.get(NO_NUMBA_ENV, "") in ("", "0"):
                kernel = _compile_numba_kernel()
            _numba_greedy = kernel
            _backend = "numpy" if kernel is None else "numba"
            _log.debug("nms backend: %s", _backend)
        return _numba_greedy


def _compile_numba_kernel() -> _Kernel | None:
    """numba's compiled :func:`_greedy_kernel`, or None when numba is unusable."""
    try:
        import numba
    except ImportError as exc:
        if not isinstance(exc, ModuleNotFoundError) or exc.name != "numba":
            _log.warning("numba does not import (%s); nms uses the numpy backend", exc)
        return None
    jit = functools.partial(numba.njit, _KERNEL_SIGNATURE, nogil=True)
    try:
        try:
            compiled: _Kernel = jit(cache=True)(_greedy_kernel)
        except RuntimeError as exc:  # no writable cache directory: compile in memory
            _log.info("numba cannot cache the nms kernel (%s); compiling without cache", exc)
            compiled = jit(cache=False)(_greedy_kernel)
    except Exception:  # a broken LLVM or numba install must not take NMS down
        _log.warning("numba failed to compile the nms kernel; using numpy", exc_info=True)
        return None
    return compiled


def _greedy_kernel(
    boxes: npt.NDArray[np.float32],
    order: npt.NDArray[np.int64],
    classes: npt.NDArray[np.int64],
    bound: float,
    max_det: int,
) -> npt.NDArray[np.int64]:
    """The greedy loop over ``order``, compiled by numba (see :func:`_compile_numba_kernel`).

    boxes (N, 4) float32; order (M,) int64 candidate indices, best first; classes (N,)
    int64, or (0,) for class-agnostic; bound from :func:`suppression_bound`; max_det the
    number of kept boxes to stop at, or -1. Returns the kept indices (K,) int64 in
    order. IoU as in :func:`_pairs_suppressed`: float64 from the float32 corners, the
    same operations in the same order, so the same bits; boxes with non-positive width
    or height or infinite area are kept and suppress nothing. Plain Python over numpy
    scalars: correct but slow when not compiled.
    """
    m = order.shape[0]
    out = np.empty(m, dtype=np.int64)
    # the kept boxes that can suppress: corners and area in float64, class
    kx1 = np.empty(m, dtype=np.float64)
    ky1 = np.empty(m, dtype=np.float64)
    kx2 = np.empty(m, dtype=np.float64)
    ky2 = np.empty(m, dtype=np.float64)
    karea = np.empty(m, dtype=np.float64)
    kcls = np.empty(m, dtype=np.int64)
    aware = classes.shape[0] > 0
    n_sup = 0
    n_out = 0
    for r in range(m):
        if n_out == max_det:
            break
        i = order[r]
        x1 = np.float64(boxes[i, 0])
        y1 = np.float64(boxes[i, 1])
        x2 = np.float64(boxes[i, 2])
        y2 = np.float64(boxes[i, 3])
        w = x2 - x1
        h = y2 - y1
        area = w * h
        if not (w > 0.0 and h > 0.0 and area < math.inf):  # NaN fails too
            out[n_out] = i
            n_out += 1
            continue
        c = classes[i] if aware else 0
        keep = True
        for k in range(n_sup):
            if aware and kcls[k] != c:
                continue
            iw = min(x2, kx2[k]) - max(x1, kx1[k])
            if iw <= 0.0:  # IoU 0, never above bound >= 0
                continue
            ih = min(y2, ky2[k]) - max(y1, ky1[k])
            if ih <= 0.0:
                continue
            inter = iw * ih
            if inter / ((karea[k] + area) - inter) > bound:
                keep = False
                break
        if keep:
            kx1[n_sup] = x1
            ky1[n_sup] = y1
            kx2[n_sup] = x2
            ky2[n_sup] = y2
            karea[n_sup] = area
            kcls[n_sup] = c
            n_sup += 1
            out[n_out] = i
            n_out += 1
    kept: npt.NDArray[np.int64] = out[:n_out].copy()
    return kept


def _check_cap(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")


def _bits(x: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", x))[0])


def _from_bits(b: int) -> float:
    return float(struct.unpack("<d", struct.pack("<q", b))[0])


def _score_order(scores: npt.NDArray[np.float32], threshold: np.float32) -> _I64:
    """Indices with ``score > threshold``, descending score, ties by ascending index."""
    idx = np.flatnonzero(scores > threshold)
    if idx.size < 2:
        return idx.astype(np.int64)
    # One int64 sort of (descending score key, index): faster than a stable argsort.
    # The bits of a positive float32 order like the float; a threshold >= 0 leaves only
    # positive scores, otherwise negative ones are remapped and -0.0 is made +0.0.
    if threshold >= 0:
        ordered = scores[idx].view(np.int32).astype(np.int64)
    else:
        b = (scores[idx] + np.float32(0.0)).view(np.int32).astype(np.int64)
        ordered = np.where(b < 0, b ^ 0x7FFFFFFF, b)
    key = (-ordered << 32) | idx
    key.sort()
    out: _I64 = key & 0xFFFFFFFF
    return out


def _greedy_positions(boxes: npt.NDArray[np.float32], classes: _I64 | None, bound: float) -> _I64:
    """Kept positions (ascending) of rank-ordered boxes (M, 4) float32."""
    m = boxes.shape[0]
    if bound >= 1.0:
        return np.arange(m, dtype=np.int64)
    b64 = boxes.astype(np.float64)  # (M, 4); as complex (M, 2): x1 + i*y1, x2 + i*y2
    bt = b64.T.copy()  # (4, M) contiguous rows x1, y1, x2, y2
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: NaN, an empty box
        wh = bt[2:] - bt[:2]
        area = wh[0] * wh[1]
        valid = (wh[0] > 0) & (wh[1] > 0) & (area < np.inf)
    if classes is not None and classes.size and classes.min() == classes.max():
        classes = None
    if valid.all():
        return _greedy_valid(bt, wh, area, b64.view(np.complex128), classes, bound)
    pos = np.flatnonzero(valid)
    sub = _greedy_valid(
        bt[:, pos],
        wh[:, pos],
        area[pos],
        b64[pos].view(np.complex128),
        None if classes is None else classes[pos],
        bound,
    )
    out: _I64 = np.sort(np.concatenate([pos[sub], np.flatnonzero(~valid)]))
    return out


def _greedy_valid(
    bt: _F64, wh: _F64, area: _F64, corners: _C128, classes: _I64 | None, bound: float
) -> _I64:
    """bt (4, n) rows x1, y1, x2, y2; wh (2, n); area (n,); corners (n, 2) complex."""
    if bt.shape[1] <= _SEQUENTIAL_MAX:
        return _greedy_loop(bt, area, classes, bound)
    return _greedy_grid(bt, wh, area, corners, classes, bound)


def _greedy_loop(bt: _F64, area: _F64, classes: _I64 | None, bound: float) -> _I64:
    """The textbook loop, one vectorized step per kept box. Positive-area boxes only."""
    x1, y1, x2, y2 = bt
    n = x1.size
    alive = np.ones(n, dtype=np.bool_)
    kept: list[int] = []
    p = 0
    while p < n:
        if not alive[p]:
            p += int(alive[p:].argmax())
            if not alive[p]:
                break
        kept.append(p)
        q = p + 1
        if q == n:
            break
        iw = np.minimum(x2[q:], x2[p])
        iw -= np.maximum(x1[q:], x1[p])
        np.maximum(iw, 0.0, out=iw)
        ih = np.minimum(y2[q:], y2[p])
        ih -= np.maximum(y1[q:], y1[p])
        np.maximum(ih, 0.0, out=ih)
        iw *= ih
        union = area[q:] + area[p]
        union -= iw
        iw /= union
        sup = iw > bound
        if classes is not None:
            sup &= classes[q:] == classes[p]
        alive[q:][sup] = False
        p = q
    return np.asarray(kept, dtype=np.int64)


def _greedy_grid(
    bt: _F64, wh: _F64, area: _F64, corners: _C128, classes: _I64 | None, bound: float
) -> _I64:
    """Greedy NMS in rounds over a grid (see the module docstring). Positive-area boxes."""
    n = bt.shape[1]
    # IoU > t means inter > t/(1+t) (|A| + |B|), so the x overlap exceeds t/(1+t) (wa + wb):
    # shrinking each side by s = t/(1+t) of the size (a little less, so that rounding can
    # never separate them) leaves any two boxes that suppress each other intersecting.
    s = bound / (1.0 + bound) * (1.0 - 1e-3) if bound >= 1e-3 else 0.0
    sw = wh * s
    lo = bt[:2] + sw  # (2, n) shrunk x1, y1
    hi = bt[2:] - sw
    origin = bt[:2].min(axis=1)  # <= every shrunk corner
    span = bt[2:].max(axis=1) - origin
    mean = wh.mean(axis=1) * (_CELL_FACTOR * (1.0 - 2.0 * s))
    size = np.maximum(np.maximum(mean, span / _GRID_MAX), 1e-300)[:, None]
    # floor((v - o) / c) is monotone in v, so intersecting intervals share a cell index.
    lo -= origin[:, None]
    lo /= size
    hi -= origin[:, None]
    hi /= size
    c0, r0 = lo.astype(np.int64)
    c1, r1 = hi.astype(np.int64)
    gx = int(c1.max()) + 1
    gy = int(r1.max()) + 1
    base: _I64 | None = None
    ncls = 1
    if classes is not None:
        dense = np.unique(classes, return_inverse=True)[1].reshape(-1)
        ncls = int(dense.max()) + 1
        base = dense * (gx * gy)
    nbits = max(n.bit_length(), 1)
    if (gx * gy * ncls).bit_length() + nbits > 62:
        return _greedy_loop(bt, area, classes, bound)

    # Registrations: one (cell, box) pair for every cell a shrunk box touches, as one
    # sorted int64 key (cell << nbits) | rank.
    nx = c1 - c0 + 1
    cnt = nx * (r1 - r0 + 1)
    total = int(cnt.sum())
    if total == n:
        cell = r0 * gx + c0
        if base is not None:
            cell += base
        key = (cell << nbits) | np.arange(n, dtype=np.int64)
    else:
        box = np.repeat(np.arange(n, dtype=np.int64), cnt)
        k = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        nxb = nx[box]
        row = ((k + 0.5) / nxb).astype(np.int64)  # == k // nxb, without integer division
        cell = (r0[box] + row) * gx + c0[box] + (k - row * nxb)
        if base is not None:
            cell += base[box]
        key = (cell << nbits) | box
    key.sort()  # by cell, then by rank
    mask = (1 << nbits) - 1

    lo_c = corners[:, 0]
    hi_c = corners[:, 1]
    alive = np.ones(n, dtype=np.bool_)
    kept: list[_I64] = []
    regs = np.bincount(key & mask, minlength=n)  # registrations per box
    while key.size > _TAIL_REGISTRATIONS:
        r = key.size
        cell = key >> nbits
        rank = key & mask
        first = np.empty(r + 1, dtype=np.bool_)
        first[0] = True
        first[r] = True  # sentinel: ends the last segment
        np.not_equal(cell[1:], cell[:-1], out=first[1:r])
        bounds = np.flatnonzero(first)
        starts = bounds[:-1]
        seg = np.diff(bounds)
        lead = rank[starts]
        # a head leads every cell it is registered in
        head_led = np.bincount(lead, minlength=n)[lead] == regs[lead]
        kept.append(lead[head_led])
        in_head_cell = np.repeat(head_led, seg)
        other = rank[in_head_cell]
        head = np.repeat(lead[head_led], seg[head_led])
        # each head also meets itself (IoU 1 > bound), which retires it
        alive[other[_pairs_suppressed(lo_c, hi_c, area, head, other, bound)]] = False
        key = key[alive[rank]]
    if key.size:
        rest = np.flatnonzero(alive)
        sub = _greedy_loop(
            bt[:, rest], area[rest], None if classes is None else classes[rest], bound
        )
        kept.append(rest[sub])
    if not kept:
        return np.zeros((0,), dtype=np.int64)
    out: _I64 = np.unique(np.concatenate(kept))
    return out


def _pairs_suppressed(
    lo: _C128, hi: _C128, area: _F64, head: _I64, other: _I64, bound: float
) -> _Bool:
    """(P,) bool: IoU(head, other) > bound, evaluated as OpenCV does. lo, hi (n,)
    complex corners x1 + i*y1 and x2 + i*y2, gathered 16 bytes at a time."""
    a = lo[head].view(np.float64)  # (2P,) x1, y1, x1, y1, ...
    np.maximum(a, lo[other].view(np.float64), out=a)
    c = hi[head].view(np.float64)
    np.minimum(c, hi[other].view(np.float64), out=c)
    c -= a
    np.maximum(c, 0.0, out=c)
    inter = c[0::2] * c[1::2]
    union = area[head] + area[other]
    union -= inter
    inter /= union
    out: _Bool = inter > bound
    return out
