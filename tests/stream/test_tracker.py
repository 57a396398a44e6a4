"""Tracker: ids stay with their objects through crossing paths, occlusion gaps and jitter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edge.stream.tracker import TRACK_IDS, Tracker, TrackerConfig, greedy_match, iou_matrix
from edge.types import Detections

FPS = 10.0


def dets(
    boxes: Sequence[Sequence[float]],
    scores: Sequence[float] | None = None,
    classes: Sequence[int] | None = None,
) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_ids=np.asarray(classes if classes is not None else [0] * n, np.int32),
    )


def box_at(cx: float, cy: float, w: float = 40, h: float = 100) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ids_by_x(out: Detections) -> list[int]:
    """Track ids ordered by box centre x."""
    order = np.argsort(out.xyxy[:, 0] + out.xyxy[:, 2])
    return [int(v) for v in out.data[TRACK_IDS][order]]


# -- kernels ------------------------------------------------------------------------
def test_iou_matrix_hand_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 10]], np.float32)  # second is degenerate
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    got = iou_matrix(a, b)
    assert got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], [1.0, 50 / 150, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [0, 0, 0])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


@pytest.mark.parametrize(
    ("score", "thr", "pairs"),
    [
        ([[0.9, 0.8], [0.85, 0.1]], 0.2, [(0, 0)]),  # greedy: best pair first, row 1 left out
        ([[0.9, 0.8], [0.85, 0.3]], 0.2, [(0, 0), (1, 1)]),
        ([[0.5, 0.5], [0.5, 0.5]], 0.2, [(0, 0), (1, 1)]),  # ties: lower row, lower column
        ([[0.1, 0.15]], 0.2, []),
        (np.zeros((0, 3)), 0.2, []),
    ],
)
def test_greedy_match(score: object, thr: float, pairs: list[tuple[int, int]]) -> None:
    rows, cols = greedy_match(np.asarray(score, np.float32), thr)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == pairs


# -- tracking -----------------------------------------------------------------------
def test_crossing_paths_keep_ids() -> None:
    """Two people walk towards each other on one line, overlap fully, and walk on."""
    tr = Tracker(config=TrackerConfig(n_init=2))
    pairs: set[tuple[int, int]] = set()
    for k in range(60):
        xa = 100 + 8 * k  # moves right
        xb = 580 - 8 * k  # moves left; they cross at k = 30
        out = tr.update(dets([box_at(xa, 300), box_at(xb, 305)]), t=k / FPS)
        if k == 0:
            assert len(out) == 0  # tentative until n_init hits
            continue
        assert len(out) == 2  # input order: a, then b
        pairs.add((int(out.data[TRACK_IDS][0]), int(out.data[TRACK_IDS][1])))
    assert pairs == {(1, 2)}


def test_fast_crossing_needs_the_velocity_prediction() -> None:
    """The same crossing, but the boxes jump 30 px per frame (a slow detection rate):
    without prediction the IoU at the crossing pairs each track with the wrong person."""
    results = {}
    for predict in (True, False):
        tr = Tracker(config=TrackerConfig(n_init=1, predict=predict))
        first: dict[str, int] = {}
        swapped = False
        for k in range(16):
            xa, xb = 100 + 30 * k, 550 - 30 * k
            out = tr.update(dets([box_at(xa, 300, w=60), box_at(xb, 300, w=60)]), t=k / 2.0)
            cx = (out.xyxy[:, 0] + out.xyxy[:, 2]) / 2
            ida = int(out.data[TRACK_IDS][np.argmin(np.abs(cx - xa))])
            first.setdefault("a", ida)
            swapped |= ida != first["a"]
        results[predict] = swapped
    assert results[True] is False
    assert results[False] is True


def test_occlusion_gap_within_max_age_keeps_id_beyond_gives_new_id() -> None:
    def run(gap: int, max_age_frames: int) -> list[int]:
        tr = Tracker(config=TrackerConfig(n_init=2, max_age_frames=max_age_frames))
        seen: list[int] = []
        for k in range(40):
            x = 100 + 6 * k
            hidden = 15 <= k < 15 + gap
            out = tr.update(dets([] if hidden else [box_at(x, 300)]), t=k / FPS)
            seen += [int(v) for v in out.data[TRACK_IDS]]
        return sorted(set(seen))

    assert run(gap=6, max_age_frames=10) == [1]  # predicted box meets it again
    assert run(gap=6, max_age_frames=3) == [1, 2]  # deleted during the gap: new id
    assert run(gap=0, max_age_frames=0) == [1]


def test_max_age_seconds() -> None:
    tr = Tracker(config=TrackerConfig(n_init=1, max_age_frames=None, max_age_s=1.0))
    a = tr.update(dets([box_at(100, 100)]), t=0.0)
    tr.update(dets([]), t=0.9)
    b = tr.update(dets([box_at(100, 100)]), t=1.0)
    tr.update(dets([]), t=2.05)  # 1.05 s unseen: gone
    assert tr.tracks == []
    c = tr.update(dets([box_at(100, 100)]), t=2.1)
    assert [int(a.data[TRACK_IDS][0]), int(b.data[TRACK_IDS][0]), int(c.data[TRACK_IDS][0])] == [
        1,
        1,
        2,
    ]


def test_jitter_keeps_ids() -> None:
    rng = np.random.default_rng(7)
    tr = Tracker(config=TrackerConfig(n_init=3))
    centres = np.array([[100, 200], [300, 220], [520, 260], [700, 240]], np.float32)
    ids_seen: list[list[int]] = []
    for k in range(200):
        sway = np.array([20 * np.sin(k / 8), 0], np.float32)
        boxes = [np.array(box_at(*c)) + rng.normal(0, 4, 4) for c in centres + sway]
        scores = rng.uniform(0.55, 0.99, len(boxes))
        out = tr.update(dets([b.tolist() for b in boxes], scores.tolist()), t=k / FPS)
        if k >= 2:
            ids_seen.append(ids_by_x(out))
    assert all(row == [1, 2, 3, 4] for row in ids_seen)


def test_new_objects_get_new_ids_never_reused() -> None:
    tr = Tracker(config=TrackerConfig(n_init=1, max_age_frames=2))
    out = tr.update(dets([box_at(100, 100)]), t=0.0)
    assert out.data[TRACK_IDS].tolist() == [1]
    out = tr.update(dets([box_at(100, 100), box_at(400, 100)]), t=0.1)
    assert ids_by_x(out) == [1, 2]
    for k in range(2, 6):  # both vanish; deleted after 2 missed frames
        tr.update(dets([]), t=k / FPS)
    assert tr.tracks == []
    out = tr.update(dets([box_at(100, 100)]), t=0.6)  # same place, but a new object
    assert out.data[TRACK_IDS].tolist() == [3]
    assert out.data[TRACK_IDS].dtype == np.int64


@pytest.mark.parametrize(
    ("max_misses", "pattern", "want"),
    [
        # tentative_max_misses 0: a miss deletes the tentative track (restarts the count)
        (0, [1, 1, 0, 1, 1, 1, 1], [[], [], [], [], [], [1], [1]]),
        # default 1: one miss is survived, two in a row are not
        (1, [1, 1, 0, 1, 1, 1, 1], [[], [], [], [1], [1], [1], [1]]),
        (1, [1, 1, 0, 0, 1, 1, 1], [[], [], [], [], [], [], [1]]),
    ],
)
def test_tentative_track_needs_n_init_hits(
    max_misses: int, pattern: list[int], want: list[list[int]]
) -> None:
    tr = Tracker(config=TrackerConfig(n_init=3, tentative_max_misses=max_misses))
    reported = []
    for k, present in enumerate(pattern):
        out = tr.update(dets([box_at(100, 100)] if present else []), t=k / FPS)
        reported.append(out.data[TRACK_IDS].tolist())
    assert reported == want


def test_low_score_detection_extends_but_never_starts_a_track() -> None:
    cfg = TrackerConfig(n_init=1, high_score=0.5, low_score=0.1)
    tr = Tracker(config=cfg)
    assert tr.update(dets([box_at(100, 100)], [0.3]), t=0.0).data[TRACK_IDS].tolist() == []
    assert tr.tentative_count == 0 and tr.tracks == []
    tr.update(dets([box_at(100, 100)], [0.9]), t=0.1)
    out = tr.update(dets([box_at(103, 100)], [0.2]), t=0.2)  # partial occlusion: low score
    assert out.data[TRACK_IDS].tolist() == [1]
    assert tr.update(dets([box_at(106, 100)], [0.05]), t=0.3).data[TRACK_IDS].tolist() == []


def test_class_aware_matching_and_class_agnostic_option() -> None:
    b = box_at(100, 100)
    aware = Tracker(config=TrackerConfig(n_init=1))
    aware.update(dets([b], classes=[0]), t=0.0)
    assert aware.update(dets([b], classes=[2]), t=0.1).data[TRACK_IDS].tolist() == [2]
    agnostic = Tracker(config=TrackerConfig(n_init=1, class_aware=False))
    agnostic.update(dets([b], classes=[0]), t=0.0)
    out = agnostic.update(dets([b], classes=[2]), t=0.1)
    assert out.data[TRACK_IDS].tolist() == [1]
    assert agnostic.tracks[0].class_id == 2


def test_extra_data_is_kept_and_order_is_input_order() -> None:
    tr = Tracker(config=TrackerConfig(n_init=1))
    d = dets([box_at(400, 100), box_at(100, 100)]).with_data(flag=np.array([True, False]))
    out = tr.update(d, t=0.0)
    assert out.data["flag"].tolist() == [True, False]
    np.testing.assert_array_equal(out.xyxy, d.xyxy)


def test_empty_frames_and_time_order() -> None:
    tr = Tracker()
    out = tr.update(Detections.empty(), t=0.0)
    assert len(out) == 0 and out.data[TRACK_IDS].dtype == np.int64
    with pytest.raises(ValueError, match="backwards"):
        tr.update(Detections.empty(), t=-1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_score": 0.6, "high_score": 0.5},
        {"match_iou": 0.0},
        {"n_init": 0},
        {"max_age_frames": None, "max_age_s": None},
        {"velocity_smoothing": 0.0},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


def test_buffered_iou_refinds_an_object_that_turned_while_hidden() -> None:
    """Moving right, hidden for 5 frames, back in view a little left of where it was last
    seen (it turned round): the velocity prediction points the wrong way; the buffered IoU
    on the last box still matches it."""

    def ids(lost_buffer: float) -> list[int]:
        tr = Tracker(config=TrackerConfig(n_init=1, lost_buffer=lost_buffer, match_buffer=0))
        seen: list[int] = []
        for k in range(10):  # moving right, 10 px per frame
            seen += tr.update(dets([box_at(100 + 10 * k, 300)]), t=k / FPS).data[TRACK_IDS].tolist()
        for k in range(10, 15):
            tr.update(dets([]), t=k / FPS)
        out = tr.update(dets([box_at(165, 300)]), t=1.5)  # last seen at 190
        return sorted(set(seen + out.data[TRACK_IDS].tolist()))

    assert ids(0.3) == [1]
    assert ids(0.0) == [1, 2]
