"""Worn, not held: who wears which hat (or workwear), decided from where it is on a person.

A hard hat the model sees is *worn* only when it sits on a person's head region; a hat in
a hand, on a belt, on a table or on the floor beside someone is not. The rule (fractions
of the person box ``x1, y1, x2, y2`` with width ``w`` and height ``h``, image pixels):

- **head region** of a person: ``[x1 + 0.1 w, y1, x2 - 0.1 w, y1 + 0.25 h]`` -- the top
  25 % of the box, the middle 80 % of its width. It is also the box reported for a
  person with no hat on it (a head box derived from the person box).
- a hat (or bare-head) box with centre ``(cx, cy)`` and width ``bw`` is **on the head**
  of that person when its centre is in the head region, extended 10 % of ``h`` above the
  box (person boxes often stop at the forehead or the hat brim), and
  ``0.1 w <= bw <= 1.2 w`` (about a head wide; a side view makes the person box narrow).
- each head box goes to at most one person and each person gets at most one head box:
  greedy by distance of the box centre to the expected head centre
  ``((x1 + x2) / 2, y1 + 0.1 h)`` in units of ``w`` and ``h`` (ties: higher score).
- a hat on no head is **held** when its centre is inside a person's box below the head
  region (``cy > y1 + 0.25 h``) and its width fits that person (the smallest such box):
  in a hand, on a belt. A hat at head height that lost the one-to-one match (two people
  in one merged box) is not held;
- it is **loose** when it lies beside a person at that person's scale, below the head
  region: centre ``y1 + 0.25 h < cy <= y2 + 0.1 h``, at most ``w`` left or right of the
  box, width fitting the person: on a table, on the floor;
- any other hat is **unattributed**: nobody detected near it, most likely because the
  person detector missed its wearer (close-ups, crowds). It is not judged.

The numbers come from the hard-hat validation set (``shared/data/hardhat``, 479 labelled
head boxes, the default person detector): of the labelled heads inside a detected
person's box, the centre lies at 1..99 % percentiles ``-0.08 .. 0.41 h`` below the top
(median 0.10), ``0.04 .. 0.97 w`` across (5..95 %: 0.16 .. 0.85) and the width is
``0.12 .. 1.18 w``. A hand hanging at the side or a belt is at about half the height.

Visibility, for the three-way result (:mod:`edge.tasks.compliance`): a person is
``too_small`` when ``h < min_person_px``; the ``head_cut_off`` when the box touches the
top edge of the image (``y1 <= edge_px``); ``occluded`` when at least
``occluded_fraction`` of the head region is covered by the box of another person whose
feet are lower in the image (closer to the camera, so in front).

Workwear uses the same machinery with another region: a wear/no-wear box belongs to the
person whose box holds most of it (intersection over the wear box's area >= 0.5),
greedy by IoU; occlusion is measured on the torso region
(:func:`edge.tasks.colour.torso_box`).

Everything is numpy over ``(N, 4)`` float32 ``xyxy`` arrays, one broadcast per rule;
correct for zero people or zero boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.tasks.colour import torso_box

__all__ = [
    "DEFAULT_RULE",
    "WearingRule",
    "beside_body",
    "containing_box",
    "greedy_assign",
    "head_regions",
    "held_by",
    "match_heads",
    "match_workwear",
    "occlusion",
    "on_head",
    "torso_regions",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, kw_only=True)
class WearingRule:
    """The numbers of the worn rule and of the visibility checks (module docstring).

    Attributes:
        head_height: head region = top ``head_height`` of the person box.
        head_width: head region = middle ``head_width`` of the person box width.
        head_above: a hat centre may be this fraction of ``h`` above the box top.
        hat_width: (min, max) hat box width as a fraction of the person box width.
        min_person_px: person boxes lower than this (pixels) are ``too_small``.
        edge_px: a box top at or above this row (pixels) touches the top edge.
        occluded_fraction: this share of the head (torso) region covered by a person in
            front makes it ``occluded``.
        uncertain_band: ``[low, high)`` scores that decide nothing (``cannot_tell``);
            ``None``: no band.
    """

    head_height: float = 0.25
    head_width: float = 0.8
    head_above: float = 0.1
    hat_width: tuple[float, float] = (0.1, 1.2)
    min_person_px: float = 64.0
    edge_px: float = 1.0
    occluded_fraction: float = 0.5
    uncertain_band: tuple[float, float] | None = (0.3, 0.5)

    def __post_init__(self) -> None:
        if not (0.0 < self.head_height <= 1.0 and 0.0 < self.head_width <= 1.0):
            raise ValueError("head_height and head_width must be in (0, 1]")
        if not 0.0 <= self.head_above <= 1.0:
            raise ValueError("head_above must be in [0, 1]")
        lo, hi = self.hat_width
        if not 0.0 <= lo < hi:
            raise ValueError("hat_width must be (min, max) with 0 <= min < max")
        if self.min_person_px < 0 or self.edge_px < 0:
            raise ValueError("min_person_px and edge_px must be >= 0")
        if not 0.0 < self.occluded_fraction <= 1.0:
            raise ValueError("occluded_fraction must be in (0, 1]")
        if self.uncertain_band is not None:
            b_lo, b_hi = self.uncertain_band
            if not 0.0 <= b_lo < b_hi <= 1.0:
                raise ValueError("uncertain_band must be [low, high) with 0 <= low < high <= 1")

    def uncertain(self, scores: npt.NDArray[np.floating]) -> Bool:
        """(N,) bool: scores inside the uncertain band."""
        s = np.asarray(scores, dtype=np.float32)
        if self.uncertain_band is None:
            return np.zeros(s.shape, dtype=np.bool_)
        lo, hi = self.uncertain_band
        return np.asarray((s >= lo) & (s < hi))


DEFAULT_RULE = WearingRule()
"""The documented defaults."""


def _xyxy(a: npt.ArrayLike) -> F32:
    return np.asarray(a, dtype=np.float32).reshape(-1, 4)


def head_regions(people: npt.ArrayLike, rule: WearingRule = DEFAULT_RULE) -> F32:
    """(P, 4) person boxes -> (P, 4) float32 head regions (top ``head_height``, middle
    ``head_width``)."""
    p = _xyxy(people)
    w, h = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    side = (1.0 - rule.head_width) / 2.0
    out = np.stack(
        [p[:, 0] + side * w, p[:, 1], p[:, 2] - side * w, p[:, 1] + rule.head_height * h],
        axis=1,
    )
    return out.astype(np.float32)


def on_head(people: npt.ArrayLike, boxes: npt.ArrayLike, rule: WearingRule = DEFAULT_RULE) -> Bool:
    """(P, 4) person boxes, (H, 4) hat/head boxes -> (P, H) bool: box j is on person i's
    head (centre in the head region, width within ``hat_width`` of the person's)."""
    p, b = _xyxy(people), _xyxy(boxes)
    w = (p[:, 2] - p[:, 0])[:, None]
    h = (p[:, 3] - p[:, 1])[:, None]
    cx = ((b[:, 0] + b[:, 2]) / 2.0)[None, :]
    cy = ((b[:, 1] + b[:, 3]) / 2.0)[None, :]
    bw = (b[:, 2] - b[:, 0])[None, :]
    side = (1.0 - rule.head_width) / 2.0
    x1, y1, x2 = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    lo, hi = rule.hat_width
    ok = (
        (cx >= x1 + side * w)
        & (cx <= x2 - side * w)
        & (cy >= y1 - rule.head_above * h)
        & (cy <= y1 + rule.head_height * h)
        & (bw >= lo * w)
        & (bw <= hi * w)
        & (w > 0)
        & (h > 0)
    )
    return np.asarray(ok)


def greedy_assign(
    allowed: Bool, cost: npt.NDArray[np.floating], tie: npt.NDArray[np.floating] | None = None
) -> tuple[I64, I64]:
    """One-to-one assignment of rows to columns by ascending ``cost`` among ``allowed``
    pairs (ties: descending ``tie[col]``, then lower row, then lower column).

    Args:
        allowed: (R, C) bool.
        cost: (R, C) float.
        tie: (C,) float, higher wins a cost tie (e.g. scores); ``None``: no preference.

    Returns:
        ``(row_to_col (R,), col_to_row (C,))`` int64, ``-1`` where unassigned.
    """
    r_n, c_n = allowed.shape
    row_to_col = np.full((r_n,), -1, dtype=np.int64)
    col_to_row = np.full((c_n,), -1, dtype=np.int64)
    rows, cols = np.nonzero(allowed)
    if rows.size == 0:
        return row_to_col, col_to_row
    c = np.asarray(cost, dtype=np.float64)[rows, cols]
    t = np.zeros_like(c) if tie is None else -np.asarray(tie, dtype=np.float64)[cols]
    order = np.lexsort((cols, rows, t, c))
    for k in order.tolist():  # at most R*C candidate pairs; stops when one side is used up
        r, col = int(rows[k]), int(cols[k])
        if row_to_col[r] < 0 and col_to_row[col] < 0:
            row_to_col[r], col_to_row[col] = col, r
    return row_to_col, col_to_row


def match_heads(
    people: npt.ArrayLike,
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike | None = None,
    rule: WearingRule = DEFAULT_RULE,
) -> tuple[I64, I64]:
    """Which hat/head box is on which person's head.

    Args:
        people: (P, 4) person boxes.
        boxes: (H, 4) hat and bare-head boxes.
        scores: (H,) their scores (cost ties go to the higher score).

    Returns:
        ``(person_box (P,), box_person (H,))`` int64 indices, ``-1`` = none.
    """
    p, b = _xyxy(people), _xyxy(boxes)
    allowed = on_head(p, b, rule)
    w = np.maximum(p[:, 2] - p[:, 0], 1e-6)[:, None]
    h = np.maximum(p[:, 3] - p[:, 1], 1e-6)[:, None]
    ex = ((p[:, 0] + p[:, 2]) / 2.0)[:, None]
    ey = (p[:, 1] + 0.1 * (p[:, 3] - p[:, 1]))[:, None]
    cx = ((b[:, 0] + b[:, 2]) / 2.0)[None, :]
    cy = ((b[:, 1] + b[:, 3]) / 2.0)[None, :]
    cost = np.abs(cx - ex) / w + np.abs(cy - ey) / h
    tie = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    return greedy_assign(allowed, cost, tie)


def containing_box(points_from: npt.ArrayLike, boxes: npt.ArrayLike) -> I64:
    """(N, 4) boxes, (P, 4) boxes -> (N,) int64: the smallest of ``boxes`` that contains
    the centre of each of ``points_from`` (``-1``: none)."""
    a, p = _xyxy(points_from), _xyxy(boxes)
    out = np.full((a.shape[0],), -1, dtype=np.int64)
    if a.shape[0] == 0 or p.shape[0] == 0:
        return out
    cx = ((a[:, 0] + a[:, 2]) / 2.0)[:, None]
    cy = ((a[:, 1] + a[:, 3]) / 2.0)[:, None]
    inside = (cx >= p[None, :, 0]) & (cx <= p[None, :, 2]) & (cy >= p[None, :, 1])
    inside &= cy <= p[None, :, 3]
    area = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    masked = np.where(inside, area[None, :], np.inf)
    best = np.argmin(masked, axis=1)
    hit = np.isfinite(masked[np.arange(a.shape[0]), best])
    out[hit] = best[hit]
    return out


def _fits(people: F32, boxes: F32, rule: WearingRule) -> Bool:
    """(P, H) bool: box j is head-sized for person i (width within ``hat_width``)."""
    w = (people[:, 2] - people[:, 0])[:, None]
    bw = (boxes[:, 2] - boxes[:, 0])[None, :]
    lo, hi = rule.hat_width
    return np.asarray((bw >= lo * w) & (bw <= hi * w) & (w > 0))


def _smallest(allowed: Bool, people: F32) -> I64:
    """(P, H) allowed pairs -> (H,) the smallest allowed person per box (``-1``: none)."""
    out = np.full((allowed.shape[1],), -1, dtype=np.int64)
    if allowed.size == 0:
        return out
    area = (people[:, 2] - people[:, 0]) * (people[:, 3] - people[:, 1])
    masked = np.where(allowed, area[:, None], np.inf)
    best = np.argmin(masked, axis=0)
    hit = np.isfinite(masked[best, np.arange(allowed.shape[1])])
    out[hit] = best[hit]
    return out


def held_by(people: npt.ArrayLike, boxes: npt.ArrayLike, rule: WearingRule = DEFAULT_RULE) -> I64:
    """(P, 4) people, (H, 4) hats -> (H,) int64: the smallest person box that holds the
    hat's centre below its head region and whose width the hat fits (``-1``: none).

    Meant for hats on no head. A hat at head height that lost the one-to-one match (two
    people in one merged box, a crowd) is not held: it is on somebody's head."""
    p, b = _xyxy(people), _xyxy(boxes)
    h = (p[:, 3] - p[:, 1])[:, None]
    cx = ((b[:, 0] + b[:, 2]) / 2.0)[None, :]
    cy = ((b[:, 1] + b[:, 3]) / 2.0)[None, :]
    inside = (cx >= p[:, 0:1]) & (cx <= p[:, 2:3]) & (cy <= p[:, 3:4])
    inside &= cy > p[:, 1:2] + rule.head_height * h
    return _smallest(inside & _fits(p, b, rule), p)


def beside_body(
    people: npt.ArrayLike, boxes: npt.ArrayLike, rule: WearingRule = DEFAULT_RULE
) -> I64:
    """(P, 4) people, (H, 4) hats -> (H,) int64: a person the hat lies beside, below the
    head region and at that person's scale (on a table, on the floor), else ``-1``:
    ``y1 + head_height h < cy <= y2 + 0.1 h``, at most ``w`` outside the box sideways,
    width within ``hat_width`` (the smallest such person box)."""
    p, b = _xyxy(people), _xyxy(boxes)
    w = (p[:, 2] - p[:, 0])[:, None]
    h = (p[:, 3] - p[:, 1])[:, None]
    cx = ((b[:, 0] + b[:, 2]) / 2.0)[None, :]
    cy = ((b[:, 1] + b[:, 3]) / 2.0)[None, :]
    low = (cy > p[:, 1:2] + rule.head_height * h) & (cy <= p[:, 3:4] + 0.1 * h)
    near = (cx >= p[:, 0:1] - w) & (cx <= p[:, 2:3] + w)
    return _smallest(low & near & _fits(p, b, rule), p)


def _intersection(a: F32, b: F32) -> F32:
    """(A, 4), (B, 4) -> (A, B) intersection areas."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    out: F32 = (wh[..., 0] * wh[..., 1]).astype(np.float32)
    return out


def occlusion(people: npt.ArrayLike, regions: npt.ArrayLike) -> F32:
    """(P, 4) person boxes and (P, 4) regions of them (head or torso) -> (P,) float32: the
    largest share of each region covered by one other person's box whose bottom edge is
    lower in the image (that person stands closer to the camera, so in front)."""
    p, r = _xyxy(people), _xyxy(regions)
    n = p.shape[0]
    if n < 2:
        return np.zeros((n,), dtype=np.float32)
    inter = _intersection(r, p)  # (P region, P other)
    area = np.maximum((r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1]), 1e-6)
    in_front = p[None, :, 3] > p[:, None, 3]
    np.fill_diagonal(in_front, False)
    share = np.where(in_front, inter / area[:, None], 0.0)
    return np.asarray(share.max(axis=1), dtype=np.float32)


def match_workwear(
    people: npt.ArrayLike, boxes: npt.ArrayLike, *, min_inside: float = 0.5
) -> tuple[I64, I64]:
    """Which wear/no-wear box belongs to which person: at least ``min_inside`` of the box
    lies in the person box; greedy by IoU (highest first).

    Returns:
        ``(person_box (P,), box_person (H,))`` int64, ``-1`` = none.
    """
    p, b = _xyxy(people), _xyxy(boxes)
    inter = _intersection(p, b)
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_b = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    iou = inter / np.maximum(area_p[:, None] + area_b[None, :] - inter, 1e-6)
    allowed = inter / area_b[None, :] >= min_inside
    return greedy_assign(allowed, -iou)


def torso_regions(people: npt.ArrayLike) -> F32:
    """(P, 4) person boxes -> (P, 4) torso regions (:func:`edge.tasks.colour.torso_box`)."""
    return torso_box(_xyxy(people))
