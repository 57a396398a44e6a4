"""Multi-object tracker: stable ids for detections across frames (ByteTrack-style, numpy).

Association is by IoU between each track's (optionally velocity-predicted) box and the
frame's detections, in three greedy stages, as ByteTrack does:

1. confirmed tracks (seen last frame or coasting) vs. *high*-score detections
   (``score >= high_score``), IoU ``>= match_iou``;
2. confirmed tracks still unmatched that were seen on the previous frame vs. *low*-score
   detections (``low_score <= score < high_score``), IoU ``>= low_match_iou`` -- this keeps
   a track through a partial occlusion where the detector is unsure, without letting
   low-score clutter start or revive tracks;
3. tentative tracks vs. the remaining high-score detections, IoU ``>= match_iou``.

Stages 1 and 3 have a second pass (the C-BIoU cascade): tracks and detections the plain
IoU left unmatched are matched by the IoU of the track's box and the detection, both
widened by ``match_buffer`` of their size on each side. At a low detection rate
(2 det/s) a walking person moves more than a box width between detections and a
tentative track has no velocity yet; plain IoU then never confirmed them.

A track's box, wherever it is matched, is the better of its last detection box and an
exponential moving average of its boxes (``box_smoothing``), both moved by the velocity:
one narrow outlier box from a jittery detector does not make the next detection a
stranger.

High-score detections still unmatched start tentative tracks. A tentative track is
confirmed (and only then gets its id) after ``n_init`` hits; it is deleted after more
than ``tentative_max_misses`` misses in a row (default 1). A confirmed track that is
not matched coasts on its predicted box and is deleted when it has missed more than
``max_age_frames`` frames or has not been seen for more than ``max_age_s`` seconds
(either limit may be ``None``). Ids are positive integers, increasing, never reused by
one :class:`Tracker`.

Matching is greedy by descending IoU (ties broken by track, then detection order), which
for the well-separated boxes of a camera scene gives the same pairs as an optimal
assignment at a fraction of the cost; crossing paths are disambiguated by the
constant-velocity prediction. Time is passed in (``t``, seconds on any monotonic clock),
never read, so results are deterministic.

Not thread-safe: one tracker per camera and task, updated from one thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.types import Detections, FloatArray

__all__ = ["TRACK_IDS", "Track", "Tracker", "TrackerConfig", "greedy_match", "iou_matrix"]

TRACK_IDS = "track_ids"
"""Key of the (N,) int64 track id array the tracker adds to ``Detections.data``."""


def iou_matrix(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> FloatArray:
    """Pairwise IoU of boxes.

    Args:
        a: (A, 4) boxes ``x1, y1, x2, y2``.
        b: (B, 4) boxes.

    Returns:
        (A, B) float32 IoU in [0, 1]; 0 where either box is degenerate (zero area).
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), dtype=np.float32)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    return out.astype(np.float32)


def greedy_match(
    score: npt.NDArray[np.floating], threshold: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Greedy one-to-one assignment by descending ``score``.

    Args:
        score: (R, C) similarity (e.g. IoU).
        threshold: pairs with ``score < threshold`` are never matched.

    Returns:
        ``(rows, cols)``: equal-length intp arrays of matched pairs, in the order they were
        taken (best first). Ties go to the lower row, then the lower column.
    """
    score = np.asarray(score)
    rows, cols = np.nonzero(score >= threshold)
    if rows.size == 0:
        empty = np.zeros((0,), dtype=np.intp)
        return empty, empty.copy()
    vals = score[rows, cols]
    order = np.lexsort((cols, rows, -vals))
    used_r: set[int] = set()
    used_c: set[int] = set()
    out_r: list[int] = []
    out_c: list[int] = []
    limit = min(score.shape)
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out_r.append(r)
        out_c.append(c)
        if len(out_r) == limit:
            break
    return np.asarray(out_r, dtype=np.intp), np.asarray(out_c, dtype=np.intp)


def _widen(xyxy: FloatArray, frac: float) -> FloatArray:
    """(N, 4) boxes grown by ``frac`` of their width/height on every side."""
    wh = xyxy[:, 2:] - xyxy[:, :2]
    pad = np.concatenate([-wh, wh], axis=1) * np.float32(frac)
    out: FloatArray = (xyxy + pad).astype(np.float32)
    return out


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """Tracker settings (see the module docstring for how each is used).

    Attributes:
        high_score: detections at or above it are matched first and may start tracks.
        low_score: detections below it are ignored; between the two they only extend
            tracks seen on the previous frame.
        match_iou: minimum IoU for stages 1 and 3.
        low_match_iou: minimum IoU for stage 2 (low-score detections).
        n_init: hits before a track is confirmed and reported (>= 1).
        max_age_frames: missed frames after which a confirmed track is deleted.
        max_age_s: seconds unseen after which a confirmed track is deleted.
        class_aware: a track only matches detections of its own class; with ``False``
            the track takes the class of its latest detection (useful when a model flips
            between e.g. ``helmet`` and ``head`` for one object).
        predict: constant-velocity prediction of the box centre while matching.
        velocity_smoothing: weight of the newest velocity sample in (0, 1].
        lost_buffer: a track that missed frames also matches by *buffered IoU* (C-BIoU):
            its last box and the detections are widened by this fraction of their width
            and height on each side, and the better of that and the predicted-box IoU
            counts. It re-finds an object that stopped or turned while hidden, where the
            velocity prediction went the wrong way. 0 disables.
        match_buffer: second pass of stages 1 and 3 (C-BIoU cascade): tracks and
            high-score detections left unmatched by plain IoU are matched by the IoU of
            the track's last box and the detection both widened by this fraction on each
            side (``>= match_iou``). At a low detection rate a walking person moves more
            than a box width between detections, and a tentative track has no velocity
            yet; without it people crossing a zone at 2 det/s were never confirmed.
            0 disables.
        tentative_max_misses: misses a tentative track survives (one lost detection at
            2 det/s no longer restarts the confirmation).
        box_smoothing: weight of the newest detection in the track's smoothed box (an
            exponential moving average, moved along with the velocity), in (0, 1]. Every
            IoU above is the better of the one with the last box and the one with the
            smoothed box, so one narrow or shifted outlier box (detector jitter) does not
            lose the track. 1 disables (the last box only).
    """

    high_score: float = 0.5
    low_score: float = 0.1
    match_iou: float = 0.2
    low_match_iou: float = 0.4
    n_init: int = 2
    max_age_frames: int | None = None
    max_age_s: float | None = 3.0
    class_aware: bool = True
    predict: bool = True
    velocity_smoothing: float = 0.5
    lost_buffer: float = 0.3
    match_buffer: float = 0.5
    tentative_max_misses: int = 1
    box_smoothing: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError("need 0 <= low_score <= high_score <= 1")
        for name in ("match_iou", "low_match_iou"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        if self.n_init < 1:
            raise ValueError("n_init must be >= 1")
        if self.max_age_frames is None and self.max_age_s is None:
            raise ValueError("set max_age_frames or max_age_s (or both)")
        if self.max_age_frames is not None and self.max_age_frames < 0:
            raise ValueError("max_age_frames must be >= 0")
        if self.max_age_s is not None and self.max_age_s < 0:
            raise ValueError("max_age_s must be >= 0")
        if not 0.0 < self.velocity_smoothing <= 1.0:
            raise ValueError("velocity_smoothing must be in (0, 1]")
        if not 0.0 <= self.lost_buffer <= 2.0:
            raise ValueError("lost_buffer must be in [0, 2]")
        if not 0.0 <= self.match_buffer <= 2.0:
            raise ValueError("match_buffer must be in [0, 2]")
        if not 0.0 < self.box_smoothing <= 1.0:
            raise ValueError("box_smoothing must be in (0, 1]")
        if self.tentative_max_misses < 0:
            raise ValueError("tentative_max_misses must be >= 0")


@dataclass(frozen=True, slots=True)
class Track:
    """A read-only view of one track.

    ``box`` is the last matched detection box (x1, y1, x2, y2 pixels); ``velocity`` the
    smoothed centre velocity in pixels per second; ``last_t`` when it was last matched.
    ``track_id`` is 0 while the track is tentative.
    """

    track_id: int
    box: tuple[float, float, float, float]
    class_id: int
    score: float
    hits: int
    misses: int
    last_t: float
    velocity: tuple[float, float]
    confirmed: bool


@dataclass(slots=True)
class _Track:
    box: FloatArray
    class_id: int
    score: float
    last_t: float
    track_id: int = 0
    hits: int = 1
    misses: int = 0
    velocity: FloatArray = field(default_factory=lambda: np.zeros(2, np.float32))
    has_velocity: bool = False
    smooth: FloatArray | None = None  # EMA of the boxes at last_t (None: the box itself)

    def templates(self) -> FloatArray:
        """(2, 4): the last box and the smoothed box."""
        return np.stack([self.box, self.box if self.smooth is None else self.smooth])

    def predicted(self, t: float, predict: bool) -> FloatArray:
        """(2, 4): :meth:`templates` moved by the velocity to time ``t``."""
        boxes = self.templates()
        if not predict or not self.has_velocity:
            return boxes
        shift = self.velocity * np.float32(max(t - self.last_t, 0.0))
        out: FloatArray = (boxes + np.concatenate([shift, shift])[None, :]).astype(np.float32)
        return out

    def update(
        self, box: FloatArray, class_id: int, score: float, t: float, alpha: float, beta: float
    ) -> None:
        dt = t - self.last_t
        prev = self.box if self.smooth is None else self.smooth
        if dt > 0 and self.has_velocity:  # the smoothed box moves with the object
            shift = self.velocity * np.float32(dt)
            prev = prev + np.concatenate([shift, shift])
        self.smooth = (beta * box + (1 - beta) * prev).astype(np.float32)
        if dt > 0:
            c_new = (box[:2] + box[2:]) * 0.5
            c_old = (self.box[:2] + self.box[2:]) * 0.5
            sample = ((c_new - c_old) / np.float32(dt)).astype(np.float32)
            if self.has_velocity:
                self.velocity = (alpha * sample + (1 - alpha) * self.velocity).astype(np.float32)
            else:
                self.velocity = sample
                self.has_velocity = True
        self.box = box.astype(np.float32, copy=True)
        self.class_id = class_id
        self.score = score
        self.last_t = t
        self.hits += 1
        self.misses = 0

    def view(self) -> Track:
        b = self.box
        return Track(
            track_id=self.track_id,
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            class_id=self.class_id,
            score=self.score,
            hits=self.hits,
            misses=self.misses,
            last_t=self.last_t,
            velocity=(float(self.velocity[0]), float(self.velocity[1])),
            confirmed=self.track_id > 0,
        )


class Tracker:
    """Gives each detected object a stable ``track_id`` across frames.

    Usage::

        tracker = Tracker(config=TrackerConfig(n_init=2, max_age_s=2.0))
        for frame in frames:
            tracked = tracker.update(detector.detect(frame.image), t=frame.t)
            tracked.data["track_ids"]  # (N,) int64, one per reported detection
    """

    def __init__(self, *, config: TrackerConfig | None = None) -> None:
        self._cfg = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_t: float | None = None

    @property
    def config(self) -> TrackerConfig:
        return self._cfg

    @property
    def tracks(self) -> list[Track]:
        """Confirmed tracks alive now (matched this frame or coasting), by id."""
        return sorted(
            (tr.view() for tr in self._tracks if tr.track_id > 0), key=lambda v: v.track_id
        )

    @property
    def tentative_count(self) -> int:
        return sum(1 for tr in self._tracks if tr.track_id == 0)

    def reset(self) -> None:
        """Forget every track (ids keep increasing: an id is never reused)."""
        self._tracks.clear()
        self._last_t = None

    @staticmethod
    def _best(boxes: FloatArray, dets: FloatArray, buffer: float) -> FloatArray:
        """(T, D) IoU of each track's best template: ``boxes`` is (T, 2, 4)."""
        if buffer > 0:
            boxes = _widen(boxes.reshape(-1, 4), buffer).reshape(-1, 2, 4)
            dets = _widen(dets, buffer)
        iou = iou_matrix(boxes.reshape(-1, 4), dets).reshape(boxes.shape[0], 2, -1)
        best: FloatArray = iou.max(axis=1)
        return best

    def _similarity(self, tracks: list[_Track], dets: Detections, t: float) -> FloatArray:
        if not tracks or len(dets) == 0:
            return np.zeros((len(tracks), len(dets)), dtype=np.float32)
        boxes = np.stack([tr.predicted(t, self._cfg.predict) for tr in tracks])
        iou = self._best(boxes, dets.xyxy, 0.0)
        lost = np.array([tr.misses > 0 for tr in tracks], dtype=np.bool_)
        if self._cfg.lost_buffer > 0 and lost.any():
            last = np.stack([tracks[k].templates() for k in np.flatnonzero(lost)])
            b = self._cfg.lost_buffer
            iou[lost] = np.maximum(iou[lost], self._best(last, dets.xyxy, b))
        return self._same_class(tracks, dets, iou)

    def _same_class(self, tracks: list[_Track], dets: Detections, iou: FloatArray) -> FloatArray:
        """``iou`` with the pairs of different classes zeroed when ``class_aware``."""
        if not self._cfg.class_aware:
            return iou
        tcls = np.array([tr.class_id for tr in tracks], dtype=np.int32)
        out: FloatArray = np.where(tcls[:, None] == dets.class_ids[None, :], iou, np.float32(0))
        return out

    def _buffered(self, tracks: list[_Track], dets: Detections) -> FloatArray:
        """(T, D) IoU of the tracks' boxes (last and smoothed) and the detections, both
        widened by ``match_buffer`` (class-aware like :meth:`_similarity`)."""
        last = np.stack([tr.templates() for tr in tracks])
        iou = self._best(last, dets.xyxy, self._cfg.match_buffer)
        return self._same_class(tracks, dets, iou)

    def update(self, dets: Detections, *, t: float) -> Detections:
        """Associate one frame's detections with the tracks.

        Args:
            dets: this frame's detections (any extra ``data`` arrays are kept).
            t: the frame's time in seconds on a monotonic clock (must not decrease).

        Returns:
            The detections that belong to confirmed tracks, in their input order, with
            ``data["track_ids"]`` (N,) int64 added. Low-score detections appear only when
            they extended a track; unmatched and tentative ones are left out.
        """
        cfg = self._cfg
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"time went backwards: {t} < {self._last_t}")
        self._last_t = t
        scores = dets.scores
        high_idx = np.flatnonzero(scores >= cfg.high_score)
        low_idx = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        det_track: dict[int, _Track] = {}
        matched: set[int] = set()  # id() of the tracks matched this frame
        alpha = cfg.velocity_smoothing
        beta = cfg.box_smoothing

        def take(
            tracks: list[_Track], idx: npt.NDArray[np.intp], sim: FloatArray, thr: float
        ) -> set[int]:
            rows, cols = greedy_match(sim, thr)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                d = int(idx[c])
                tr = tracks[r]
                tr.update(dets.xyxy[d], int(dets.class_ids[d]), float(scores[d]), t, alpha, beta)
                det_track[d] = tr
                matched.add(id(tr))
            return {int(idx[c]) for c in cols.tolist()}

        def assign(
            tracks: list[_Track], idx: npt.NDArray[np.intp], thr: float, buffered: bool
        ) -> set[int]:
            """Match ``tracks`` to ``dets[idx]``; returns the matched detection indices.
            With ``buffered``, a second pass matches what is left by buffered IoU."""
            if not tracks or idx.size == 0:
                return set()
            used = take(tracks, idx, self._similarity(tracks, dets[idx], t), thr)
            if not buffered or cfg.match_buffer <= 0:
                return used
            rest = [tr for tr in tracks if id(tr) not in matched]
            left = np.array([d for d in idx.tolist() if d not in used], dtype=np.intp)
            if rest and left.size:
                used |= take(rest, left, self._buffered(rest, dets[left]), thr)
            return used

        confirmed = [tr for tr in self._tracks if tr.track_id > 0]
        tentative = [tr for tr in self._tracks if tr.track_id == 0]

        # Stage 1: confirmed tracks vs. high-score detections.
        used = assign(confirmed, high_idx, cfg.match_iou, True)
        high_left = np.array([d for d in high_idx.tolist() if d not in used], dtype=np.intp)
        # Stage 2: confirmed tracks seen on the previous frame vs. low-score detections.
        recent = [tr for tr in confirmed if id(tr) not in matched and tr.misses == 0]
        assign(recent, low_idx, cfg.low_match_iou, False)
        # Stage 3: tentative tracks vs. the remaining high-score detections.
        used3 = assign(tentative, high_left, cfg.match_iou, True)
        births = [d for d in high_left.tolist() if d not in used3]

        survivors: list[_Track] = []
        for tr in self._tracks:
            if id(tr) in matched:
                if tr.track_id == 0 and tr.hits >= cfg.n_init:
                    tr.track_id = self._take_id()
                survivors.append(tr)
            elif tr.track_id == 0:
                tr.misses += 1
                if tr.misses <= cfg.tentative_max_misses:
                    survivors.append(tr)
            else:
                tr.misses += 1
                too_many = cfg.max_age_frames is not None and tr.misses > cfg.max_age_frames
                too_old = cfg.max_age_s is not None and t - tr.last_t > cfg.max_age_s
                if not (too_many or too_old):
                    survivors.append(tr)
        for d in births:
            tr = _Track(
                box=dets.xyxy[d].astype(np.float32, copy=True),
                class_id=int(dets.class_ids[d]),
                score=float(scores[d]),
                last_t=t,
            )
            if cfg.n_init <= 1:
                tr.track_id = self._take_id()
            survivors.append(tr)
            det_track[d] = tr
        self._tracks = survivors

        keep = np.array(sorted(d for d, tr in det_track.items() if tr.track_id > 0), dtype=np.intp)
        ids = np.array([det_track[int(d)].track_id for d in keep], dtype=np.int64)
        return dets[keep].with_data(**{TRACK_IDS: ids})

    def _take_id(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid
