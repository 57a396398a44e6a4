"""edge.kernels.nms against a plain-Python greedy loop and against cv2.dnn.NMSBoxes.

The reference loop below is the specification written as plainly as possible: visit
candidates in stable descending-score order, keep one unless a kept box (of its class)
overlaps it with IoU above the threshold, OpenCV's float32 comparison included. Every
code path of the kernel is forced in turn: the numba backend, and the numpy backend's
per-box loop (small inputs) and grid rounds (large ones) on the property tests; numba
and numpy (its own choice of loop or grid) on the others. How the backend is chosen
(numba when importable, numpy under ``SAFETY_EDGE_NO_NUMBA=1`` or without numba, numba
never imported at module import) is checked in fresh interpreters.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.kernels import nms as nms_mod
from edge.kernels.nms import nms, nms_detections, suppression_bound
from edge.types import Detections


def _f32(x: float) -> float:
    return float(np.float32(x))


def _ref_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU with empty boxes (w or h <= 0, or non-finite) overlapping nothing."""
    wa, ha = a[2] - a[0], a[3] - a[1]
    wb, hb = b[2] - b[0], b[3] - b[1]
    for w, h in ((wa, ha), (wb, hb)):
        if not (w > 0 and h > 0 and math.isfinite(w * h)):
            return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((wa * ha + wb * hb) - inter)


def _ref_suppresses(iou: float, iou_threshold: float) -> bool:
    # OpenCV: keep = (1.f - (float)(1.0 - iou)) <= (float)threshold
    overlap = float(np.float32(1.0) - np.float32(1.0 - iou))
    return overlap > _f32(iou_threshold)


def ref_nms(
    xyxy: npt.ArrayLike,
    scores: npt.ArrayLike,
    iou_threshold: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
    class_ids: npt.ArrayLike | None = None,
) -> list[int]:
    boxes = [[float(v) for v in row] for row in np.asarray(xyxy, np.float32).reshape(-1, 4)]
    conf = [float(v) for v in np.asarray(scores, np.float32).reshape(-1)]
    cls = None if class_ids is None else [int(c) for c in np.asarray(class_ids).reshape(-1)]
    cands = [i for i in range(len(boxes)) if conf[i] > _f32(score_threshold)]
    cands.sort(key=lambda i: -conf[i])  # list.sort is stable: ties keep index order
    if top_k is not None:
        cands = cands[:top_k]
    kept: list[int] = []
    for i in cands:
        if not any(
            (cls is None or cls[i] == cls[k])
            and _ref_suppresses(_ref_iou(boxes[i], boxes[k]), iou_threshold)
            for k in kept
        ):
            kept.append(i)
    return kept


def cv2_nms(
    xyxy: npt.ArrayLike,
    scores: npt.ArrayLike,
    iou_threshold: float,
    score_threshold: float = 0.0,
    top_k: int | None = None,
) -> list[int]:
    b = np.asarray(xyxy, np.float32).astype(np.float64).reshape(-1, 4)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    conf = np.asarray(scores, np.float32)
    out = cv2.dnn.NMSBoxes(xywh, conf, score_threshold, iou_threshold, 1.0, top_k or 0)  # type: ignore[arg-type]
    return [int(i) for i in np.asarray(out).reshape(-1)]


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def numba_kernel() -> object:
    """The compiled numba kernel (skips where numba is not installed)."""
    pytest.importorskip("numba")
    kernel = nms_mod._compile_numba_kernel()
    assert kernel is not None, "numba imports but the nms kernel did not compile"
    return kernel


def _use_backend(name: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch) -> None:
    if name == "numba":
        mp.setattr(nms_mod, "_numba_greedy", request.getfixturevalue("numba_kernel"))
        mp.setattr(nms_mod, "_backend", "numba")
    else:
        mp.setattr(nms_mod, "_numba_greedy", None)
        mp.setattr(nms_mod, "_backend", "numpy")


@pytest.fixture(params=["numba", "loop", "grid"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once through each code path: numba, numpy's loop, numpy's grid."""
    _use_backend("numba" if request.param == "numba" else "numpy", request, monkeypatch)
    if request.param == "grid":
        monkeypatch.setattr(nms_mod, "_SEQUENTIAL_MAX", 0)
        monkeypatch.setattr(nms_mod, "_TAIL_REGISTRATIONS", 0)
    elif request.param == "loop":
        monkeypatch.setattr(nms_mod, "_SEQUENTIAL_MAX", 1 << 30)
    yield request.param


@pytest.fixture(params=["numba", "numpy"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once through each backend (numpy picks its loop or grid itself)."""
    _use_backend(request.param, request, monkeypatch)
    yield request.param


# -- strategies ------------------------------------------------------------------------

_THRESHOLDS = st.one_of(
    st.sampled_from([0.0, 0.1, 0.3, 0.45, 0.5, 0.7, 0.9, 1.0]),
    st.floats(0.0, 1.0, allow_nan=False),
)


@st.composite
def positive_boxes(draw: st.DrawFn, max_n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Boxes with positive area on an integer or fractional grid: many exact ties,
    duplicates and IoUs that land exactly on common thresholds."""
    n = draw(st.integers(0, max_n))
    scale = draw(st.sampled_from([1.0, 0.5, 0.1, 7.3]))
    grid = draw(st.integers(4, 60))
    xy = draw(st.lists(st.tuples(*[st.integers(0, grid)] * 2), min_size=n, max_size=n))
    wh = draw(st.lists(st.tuples(*[st.integers(1, grid // 2 + 1)] * 2), min_size=n, max_size=n))
    boxes = np.array(
        [[x, y, x + w, y + h] for (x, y), (w, h) in zip(xy, wh, strict=True)], dtype=np.float32
    ).reshape(-1, 4) * np.float32(scale)
    levels = draw(st.sampled_from([3, 10, 1000]))
    scores = np.array(
        draw(st.lists(st.integers(1, levels), min_size=n, max_size=n)), dtype=np.float32
    ) / np.float32(levels)
    return boxes, scores


@st.composite
def any_boxes(draw: st.DrawFn, max_n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Arbitrary float32 corners, including empty, inverted, huge and non-finite ones."""
    n = draw(st.integers(0, max_n))
    coord = st.one_of(
        st.floats(-1e4, 1e4, width=32),
        st.sampled_from([0.0, 1.0, 10.0, -5.0, math.inf, -math.inf, math.nan]),
    )
    rows = draw(st.lists(st.lists(coord, min_size=4, max_size=4), min_size=n, max_size=n))
    score = st.one_of(st.floats(0.0, 1.0, width=32), st.sampled_from([0.5, math.nan, 0.0]))
    scores = draw(st.lists(score, min_size=n, max_size=n))
    return np.array(rows, np.float32).reshape(-1, 4), np.array(scores, np.float32)


_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- properties --------------------------------------------------------------------------


@_SETTINGS
@given(data=positive_boxes(), thr=_THRESHOLDS, top_k=st.sampled_from([None, 1, 3, 10]))
def test_matches_reference_and_opencv(
    path: str, data: tuple[np.ndarray, np.ndarray], thr: float, top_k: int | None
) -> None:
    boxes, scores = data
    got = nms(boxes, scores, iou_threshold=thr, top_k=top_k).tolist()
    assert got == ref_nms(boxes, scores, thr, top_k=top_k)
    assert got == cv2_nms(boxes, scores, thr, top_k=top_k)


@_SETTINGS
@given(data=positive_boxes(), thr=_THRESHOLDS, score_thr=st.sampled_from([0.0, 0.3, 0.5]))
def test_score_threshold_matches_opencv(
    path: str, data: tuple[np.ndarray, np.ndarray], thr: float, score_thr: float
) -> None:
    boxes, scores = data
    got = nms(boxes, scores, iou_threshold=thr, score_threshold=score_thr).tolist()
    assert got == cv2_nms(boxes, scores, thr, score_thr)
    assert got == ref_nms(boxes, scores, thr, score_thr)


@_SETTINGS
@given(data=any_boxes(), thr=_THRESHOLDS)
def test_degenerate_inputs_match_reference(
    path: str, data: tuple[np.ndarray, np.ndarray], thr: float
) -> None:
    boxes, scores = data
    with np.errstate(all="ignore"):
        expected = ref_nms(boxes, scores, thr)
    assert nms(boxes, scores, iou_threshold=thr).tolist() == expected


@_SETTINGS
@given(data=positive_boxes(), thr=_THRESHOLDS, classes=st.integers(1, 4), seed=st.integers(0, 99))
def test_class_aware_equals_per_class_opencv(
    path: str, data: tuple[np.ndarray, np.ndarray], thr: float, classes: int, seed: int
) -> None:
    boxes, scores = data
    cls = np.random.default_rng(seed).integers(0, classes, len(scores))
    got = nms(boxes, scores, iou_threshold=thr, class_ids=cls).tolist()
    assert got == ref_nms(boxes, scores, thr, class_ids=cls)
    per_class: list[int] = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        per_class += [int(idx[i]) for i in cv2_nms(boxes[idx], scores[idx], thr)]
    # merged per-class results in the kernel's order: descending score, ties by index
    per_class.sort(key=lambda i: (-float(scores[i]), i))
    assert got == per_class


def _clustered(n: int, seed: int, clutter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Detector-like output: boxes jittered around objects, plus optional clutter."""
    rng = np.random.default_rng(seed)
    n_obj = max(3, round(math.sqrt(n) / 1.5))
    n_bg = int(n * clutter)
    oh = np.exp(rng.uniform(np.log(30), np.log(300), n_obj))
    ow = oh * rng.uniform(0.4, 1.2, n_obj)
    cx, cy = rng.uniform(0, 1920, n_obj), rng.uniform(0, 1080, n_obj)
    o = rng.integers(0, n_obj, n - n_bg)
    j = rng.normal(0, 0.07, (n - n_bg, 4))
    bx, by = cx[o] + j[:, 0] * ow[o], cy[o] + j[:, 1] * oh[o]
    bw, bh = ow[o] * np.exp(j[:, 2]), oh[o] * np.exp(j[:, 3])
    boxes = np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], 1)
    scores = rng.uniform(0.4, 0.95, n_obj)[o] * rng.uniform(0.3, 1.0, n - n_bg)
    bg = rng.uniform(0, 1000, (n_bg, 2))
    bgw = rng.uniform(10, 150, (n_bg, 2))
    boxes = np.concatenate([boxes, np.concatenate([bg, bg + bgw], 1)])
    scores = np.concatenate([scores, rng.uniform(0.01, 0.3, n_bg)])
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize(
    ("n", "seed", "clutter", "thr"),
    [(300, 0, 0.0, 0.5), (2000, 1, 0.0, 0.45), (3000, 2, 0.2, 0.7), (5000, 3, 0.1, 0.3)],
)
def test_detector_like_clusters_match_opencv(
    backend: str, n: int, seed: int, clutter: float, thr: float
) -> None:
    boxes, scores = _clustered(n, seed, clutter)
    assert nms(boxes, scores, iou_threshold=thr).tolist() == cv2_nms(boxes, scores, thr)


def test_detector_like_clusters_class_aware_grid(backend: str) -> None:
    boxes, scores = _clustered(2500, 7, 0.1)
    cls = np.random.default_rng(7).integers(0, 3, len(scores))
    got = nms(boxes, scores, iou_threshold=0.5, class_ids=cls)
    expected: list[int] = []
    for c in range(3):
        idx = np.flatnonzero(cls == c)
        expected += [int(idx[i]) for i in cv2_nms(boxes[idx], scores[idx], 0.5)]
    expected.sort(key=lambda i: (-float(scores[i]), i))
    assert got.tolist() == expected


# -- table-driven edge cases ---------------------------------------------------------------

E = np.float32
SQ = [0.0, 0.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("boxes", "scores", "kwargs", "expected"),
    [
        pytest.param(np.zeros((0, 4)), [], {}, [], id="empty"),
        pytest.param([SQ], [0.9], {}, [0], id="one"),
        pytest.param([SQ], [0.0], {}, [], id="one-at-score-threshold"),
        pytest.param([SQ, SQ], [0.5, 0.5], {}, [0], id="tie-lower-index-wins"),
        pytest.param([SQ, SQ, SQ], [0.4, 0.6, 0.6], {}, [1], id="tie-among-best"),
        pytest.param(
            [[0, 0, 0, 0], [0, 0, 0, 0]], [0.9, 0.8], {}, [0, 1], id="zero-area-never-suppress"
        ),
        pytest.param([[0, 0, 10, 0], SQ], [0.9, 0.8], {}, [0, 1], id="zero-height"),
        pytest.param([[10, 10, 0, 0], SQ], [0.9, 0.8], {}, [0, 1], id="inverted-kept-alone"),
        pytest.param([[0, 0, -20, 5], SQ], [0.9, 0.8], {}, [0, 1], id="negative-w-area"),
        pytest.param([[0, 0, np.nan, 10], SQ], [0.9, 0.8], {}, [0, 1], id="nan-corner"),
        pytest.param([[0, 0, np.inf, 10], SQ], [0.9, 0.8], {}, [0, 1], id="inf-corner"),
        pytest.param([SQ, [0, 0, 5, 10]], [0.9, 0.8], {}, [0, 1], id="iou-equal-threshold-kept"),
        pytest.param([SQ, [0, 0, 5, 10]], [0.9, 0.8], {"iou_threshold": 0.49}, [0], id="iou-above"),
        pytest.param([SQ, [0, 0, 10, 10]], [0.8, 0.9], {}, [1], id="best-first"),
        pytest.param([SQ, [10, 0, 20, 10]], [0.9, 0.8], {"iou_threshold": 0.0}, [0, 1], id="touch"),
        pytest.param([SQ, [9, 0, 19, 10]], [0.9, 0.8], {"iou_threshold": 0.0}, [0], id="thr-0"),
        pytest.param([SQ, SQ], [0.9, 0.8], {"iou_threshold": 1.0}, [0, 1], id="thr-1-keeps-all"),
        pytest.param(
            [SQ, SQ, [50, 50, 60, 60]], [0.9, 0.8, 0.7], {"top_k": 2}, [0], id="top_k-is-pre-nms"
        ),
        pytest.param(
            [SQ, [50, 50, 60, 60], [90, 90, 99, 99]],
            [0.7, 0.9, 0.8],
            {"max_det": 2},
            [1, 2],
            id="max_det-caps-output",
        ),
        pytest.param([SQ, SQ], [0.9, 0.8], {"class_ids": [0, 1]}, [0, 1], id="classes-differ"),
        pytest.param([SQ, SQ], [0.9, 0.8], {"class_ids": [3, 3]}, [0], id="classes-same"),
        pytest.param([SQ, SQ], [np.nan, 0.8], {}, [1], id="nan-score-dropped"),
        pytest.param([SQ, SQ], [0.3, 0.3], {"score_threshold": 0.3}, [], id="score-strict"),
        pytest.param(
            [SQ, [0, 0, 10, 10]], [-1.0, -2.0], {"score_threshold": -5.0}, [0], id="neg-scores"
        ),
        pytest.param(
            [SQ, [50, 50, 60, 60], [90, 90, 99, 99]],
            [0.0, -1.0, -0.0],
            {"score_threshold": -5.0},
            [0, 2, 1],
            id="minus-zero-ties-plus-zero",
        ),
    ],
)
def test_edge_cases(
    backend: str,
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    kwargs: dict[str, object],
    expected: list[int],
) -> None:
    kw: dict[str, object] = {"iou_threshold": 0.5, **kwargs}
    got = nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), **kw)  # type: ignore[arg-type]
    assert got.dtype == np.int64
    assert got.tolist() == expected


def test_opencv_differs_only_on_empty_boxes(backend: str) -> None:
    """Documented difference: OpenCV gives two zero-area boxes IoU 1 (so one goes)."""
    boxes = np.array([[0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert cv2_nms(boxes, scores, 0.5) == [0]
    assert nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 1]


def test_no_plus_one_pixel_convention(backend: str) -> None:
    """IoU of [0,10] and [5,10] widths is 5/15 (continuous), not 6/16 (OpenCV agrees)."""
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    for thr, expected in ((0.33, [0]), (0.34, [0, 1])):
        assert nms(boxes, scores, iou_threshold=thr).tolist() == expected
        assert cv2_nms(boxes, scores, thr) == expected


def test_float32_comparison_like_opencv(backend: str) -> None:
    """An IoU within a float32 ulp above the threshold keeps the box, as in OpenCV.

    IoU is exactly 0.5 here; 0.5 - 1e-8 rounds to 0.5f, so OpenCV keeps the second box
    where a plain ``iou > threshold`` in float64 would drop it.
    """
    boxes = np.array([SQ, [0, 0, 5, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    thr = 0.5 - 1e-8
    assert thr < 0.5
    assert cv2_nms(boxes, scores, thr) == [0, 1]
    assert nms(boxes, scores, iou_threshold=thr).tolist() == [0, 1]
    assert suppression_bound(thr) > thr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iou_threshold": -0.1}, "iou_threshold"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"iou_threshold": math.nan}, "iou_threshold"),
        ({"iou_threshold": 0.5, "score_threshold": math.nan}, "score_threshold"),
        ({"iou_threshold": 0.5, "top_k": 0}, "top_k"),
        ({"iou_threshold": 0.5, "max_det": -1}, "max_det"),
        ({"iou_threshold": 0.5, "class_ids": [0.5, 1.0]}, "class_ids"),
        ({"iou_threshold": 0.5, "class_ids": [0]}, "class_ids"),
    ],
)
def test_invalid_arguments(backend: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nms(np.zeros((2, 4), np.float32), np.ones(2, np.float32), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("boxes", "scores"), [(np.zeros((3, 5)), np.ones(3)), (np.zeros((3, 4)), np.ones(2))]
)
def test_shape_errors(backend: str, boxes: np.ndarray, scores: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape"):
        nms(boxes, scores, iou_threshold=0.5)


def test_nms_detections_carries_data_and_classes(backend: str) -> None:
    dets = Detections(
        xyxy=np.array([SQ, SQ, [50, 50, 60, 60]], np.float32),
        scores=np.array([0.7, 0.9, 0.8], np.float32),
        class_ids=np.array([0, 1, 0], np.int32),
        data={"track_ids": np.array([10, 11, 12])},
    )
    aware = nms_detections(dets, iou_threshold=0.5)
    assert aware.data["track_ids"].tolist() == [11, 12, 10]
    agnostic = nms_detections(dets, iou_threshold=0.5, class_agnostic=True, max_det=1)
    assert agnostic.data["track_ids"].tolist() == [11]
    assert len(nms_detections(Detections.empty(), iou_threshold=0.5)) == 0


def test_suppression_bound_is_the_exact_switch_point() -> None:
    for thr in (0.0, 0.3, 0.45, 0.5, 0.7, 0.999):
        b = suppression_bound(thr)
        assert not _ref_suppresses(b, thr)
        assert _ref_suppresses(float(np.nextafter(b, 2.0)), thr)
    assert suppression_bound(1.0) == 1.0


@_SETTINGS
@given(
    data=positive_boxes(),
    thr=_THRESHOLDS,
    classes=st.integers(1, 3),
    seed=st.integers(0, 99),
    top_k=st.sampled_from([None, 2, 7]),
    max_det=st.sampled_from([None, 1, 2, 5]),
    score_thr=st.sampled_from([0.0, 0.4]),
)
def test_all_options_together_match_reference(
    path: str,
    data: tuple[np.ndarray, np.ndarray],
    thr: float,
    classes: int,
    seed: int,
    top_k: int | None,
    max_det: int | None,
    score_thr: float,
) -> None:
    """top_k before suppression, max_det after (numba stops early at max_det), classes."""
    boxes, scores = data
    cls = np.random.default_rng(seed).integers(0, classes, len(scores))
    got = nms(
        boxes,
        scores,
        iou_threshold=thr,
        score_threshold=score_thr,
        top_k=top_k,
        class_ids=cls,
        max_det=max_det,
    )
    expected = ref_nms(boxes, scores, thr, score_thr, top_k=top_k, class_ids=cls)
    assert got.dtype == np.int64
    assert got.tolist() == expected[:max_det]


# -- backend choice, in fresh interpreters -------------------------------------------------

_PROBE = """
import json, sys
{prelude}
import numpy as np
from edge.kernels import nms as m
imported_at_import = sys.modules.get("numba") is not None
boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 10], [0, 0, 10, 10]], np.float32)
kept = m.nms(boxes, [0.9, 0.8, 0.7, 0.6], iou_threshold=0.3, class_ids=[0, 0, 0, 1])
loaded = sys.modules.get("numba") is not None
print(json.dumps({{"backend": m.nms_backend(), "kept": kept.tolist(),
                  "numba_at_import": imported_at_import, "numba_loaded": loaded}}))
"""


def _probe(env_value: str | None, prelude: str = "") -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != nms_mod.NO_NUMBA_ENV}
    if env_value is not None:
        env[nms_mod.NO_NUMBA_ENV] = env_value
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(prelude=prelude)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kept"] == [0, 3], "both backends keep the same boxes"
    assert out["numba_at_import"] is False, "numba must not be imported at module import"
    return out


def test_env_var_forces_numpy_without_importing_numba() -> None:
    out = _probe("1")
    assert out["backend"] == "numpy"
    assert out["numba_loaded"] is False


def test_falls_back_to_numpy_when_numba_is_absent() -> None:
    # None in sys.modules makes ``import numba`` raise ModuleNotFoundError, as when
    # numba is not installed.
    out = _probe(None, prelude="sys.modules['numba'] = None")
    assert out["backend"] == "numpy"


def test_numba_is_the_default_when_installed() -> None:
    pytest.importorskip("numba")
    for value in (None, "0"):
        out = _probe(value)
        assert out["backend"] == "numba"
        assert out["numba_loaded"] is True
