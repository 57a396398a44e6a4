"""The three-way result of a hard-hat or workwear check, per person: ``compliant``,
``violation`` or ``cannot_tell``, with the reason.

:class:`Analysis` is what :meth:`edge.tasks.hardhat.HardhatTask.analyse` and
:meth:`edge.tasks.workwear.WorkwearTask.analyse` return for one image: the contract
items (exactly what the API answers), the *subjects* (one per person, plus bare heads or
wear boxes on nobody) with their status as parallel arrays, the hats seen but not worn,
and :meth:`Analysis.summary`, the JSON of the opt-in ``summary`` field.

Reasons (:data:`REASONS`):

- ``compliant``: ``hat_worn`` (a hat on the head region), ``workwear_worn``;
- ``violation``: ``bare_head`` (the model saw a bare head), ``hat_not_worn`` (a hat on
  this person's body but not on the head: in a hand, on a belt), ``no_hat_on_head`` (the
  head region is visible and holds neither a hat nor a head box), ``no_workwear``;
- ``cannot_tell``: ``too_small`` (person box lower than ``min_person_px``),
  ``head_cut_off`` (the box touches the top edge of the image), ``occluded`` (a person in
  front covers the head/torso region), ``uncertain_score`` (the deciding score is below
  the uncertain band's upper edge), ``not_detected`` (workwear: the model said nothing
  about a visible person).

A zone rule (:mod:`edge.tasks.rules`) adds ``colour_not_allowed``: a hat or workwear is
worn but its colour is not one the zone allows (a ``violation`` in that zone's events).

:class:`SubjectDetector` wraps a task so the camera pipeline tracks subjects (person
boxes with their status) instead of raw model boxes; its classes are the contract's
classnames plus ``cannot_tell``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from edge.tasks.base import DetectorLike, ImageBGR
from edge.types import Detections

if TYPE_CHECKING:  # onnxruntime is not imported for config validation
    from edge.runtime.session import StageTimings

__all__ = [
    "CANNOT_TELL",
    "CANNOT_TELL_CLASS",
    "COMPLIANT",
    "REASONS",
    "STATUSES",
    "VIOLATION",
    "Analyser",
    "Analysis",
    "SubjectBuilder",
    "SubjectDetector",
    "detect_people",
    "detect_ranked",
    "detect_timed",
    "reason_id",
    "result_item",
    "sum_timings",
    "tlbr",
]

STATUSES: tuple[str, ...] = ("compliant", "violation", "cannot_tell")
COMPLIANT, VIOLATION, CANNOT_TELL = 0, 1, 2
REASONS: tuple[str, ...] = (
    "hat_worn",
    "bare_head",
    "hat_not_worn",
    "no_hat_on_head",
    "workwear_worn",
    "no_workwear",
    "not_detected",
    "too_small",
    "head_cut_off",
    "occluded",
    "uncertain_score",
    "colour_not_allowed",
)
CANNOT_TELL_CLASS = "cannot_tell"
"""Subject class of every ``cannot_tell`` subject (never counted by a default zone)."""

Mode = Literal["person", "detector"]
STATUS = "status"
REASON = "reason"
CLASSNAME = "classname"
ITEM = "item"
HAS_PERSON = "has_person"
"""Keys of the subjects' parallel ``data`` arrays (see :class:`Analysis`)."""


def reason_id(name: str) -> int:
    """Index of a reason in :data:`REASONS` (ValueError for an unknown one)."""
    return REASONS.index(name)


def detect_timed(
    detector: DetectorLike,
    image_bgr: ImageBGR,
    *,
    score_threshold: float | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[Detections, StageTimings | None]:
    """``detector.detect``, with this call's stage timings when the detector reports them
    (``detect_with_timings``; else ``None``)."""
    timed = getattr(detector, "detect_with_timings", None)
    if timed is not None:
        dets, timings = timed(image_bgr, score_threshold=score_threshold, classes=classes)
        return dets, timings
    return detector.detect(image_bgr, score_threshold=score_threshold, classes=classes), None


def sum_timings(*parts: StageTimings | None) -> StageTimings | None:
    """The sum of the timings given (``None`` parts skipped; all ``None``: ``None``)."""
    known = [p for p in parts if p is not None]
    if not known:
        return None
    total = known[0]
    for p in known[1:]:
        total = total + p
    return total


def detect_ranked(
    detector: DetectorLike,
    image_bgr: ImageBGR,
    classes: Sequence[str],
    *,
    score_threshold: float | None = None,
) -> tuple[Detections, StageTimings | None]:
    """The detector's boxes of ``classes``, highest score first (stable), and the call's
    timings; empty (and no call) when ``classes`` is empty."""
    if not classes:
        return Detections.empty(), None
    dets, timings = detect_timed(
        detector, image_bgr, score_threshold=score_threshold, classes=classes
    )
    return dets[np.argsort(-dets.scores, kind="stable")], timings


def detect_people(
    detector: DetectorLike | None, classes: Sequence[str], image_bgr: ImageBGR
) -> tuple[Detections | None, StageTimings | None]:
    """People (``classes`` the detector knows) highest score first, and the call's
    timings; ``None`` without a detector, empty when it knows none of ``classes``."""
    if detector is None:
        return None, None
    return detect_ranked(detector, image_bgr, [c for c in classes if c in detector.class_names])


def result_item(box: npt.ArrayLike, classname: str, score: float) -> Any:
    """One contract item ``{"box": [top, left, bottom, right], "classname", "score"}``
    from an ``x1, y1, x2, y2`` box (a :class:`edge.tasks.hardhat.ResultItem`)."""
    return {"box": tlbr(box), "classname": classname, "score": round(float(score), 4)}


def tlbr(box: npt.ArrayLike) -> list[int]:
    """One ``x1, y1, x2, y2`` box as the contract's ``[top, left, bottom, right]`` ints."""
    b = np.rint(np.asarray(box, dtype=np.float64).reshape(4)).astype(np.int64)
    return [int(b[1]), int(b[0]), int(b[3]), int(b[2])]


@dataclass(frozen=True)
class Analysis:
    """One image's hard-hat/workwear analysis.

    Attributes:
        items: the contract answer's list (``box``/``classname``/``score``), highest
            score first.
        subjects: (S) boxes -- the person box, or the model's box for a head/wear box on
            no detected person -- and their scores (person score, or the box's). Classes
            index :attr:`classnames`. ``data``: ``status`` (S,) int8 (:data:`STATUSES`),
            ``reason`` (S,) int8 (:data:`REASONS`), ``classname`` (S,) int16 index into
            :attr:`classnames` of what was seen on the person (``-1``: nothing),
            ``item`` (S,) int64 index into :attr:`items` (``-1``: none), ``has_person``
            (S,) bool.
        classnames: the task's contract classnames, then ``cannot_tell``.
        details: (S) human-readable line per subject (why that status).
        not_worn: hats seen on no head: ``{"box", "classname": "held_hat"|"loose_hat",
            "colour", "score", "person"}`` (``person``: index into the subjects, or null).
        mode: ``person`` (the worn rule with a person detector) or ``detector`` (the
            model's boxes alone: no person detector, or the rule is off).
        timings: the models' stage timings for this image, summed (``None``: the
            detectors report none).
    """

    items: list[Any]
    subjects: Detections
    classnames: tuple[str, ...]
    details: list[str] = field(default_factory=list)
    not_worn: list[dict[str, Any]] = field(default_factory=list)
    mode: Mode = "detector"
    timings: StageTimings | None = None

    def counts(self) -> dict[str, int]:
        """Subjects per status."""
        st = self.subjects.data.get(STATUS, np.zeros((0,), np.int8))
        return {name: int(np.count_nonzero(st == i)) for i, name in enumerate(STATUSES)}

    def summary(self) -> dict[str, Any]:
        """The opt-in ``summary`` field of a hard-hat/workwear answer (JSON-ready)::

            {"rule": "person" | "detector",
             "counts": {"compliant": 1, "violation": 1, "cannot_tell": 0},
             "people": [{"status": "violation", "reason": "hat_not_worn",
                         "details": "...", "person": [t, l, b, r] | null,
                         "person_score": 0.91 | null, "classname": "no_hat" | null,
                         "item": 1 | null}, ...],
             "not_worn": [{"box": [t, l, b, r], "classname": "held_hat",
                           "colour": "yellow_hat", "score": 0.8, "person": 1}]}

        ``item`` indexes the answer's ``result`` list (the per-person answer this entry
        qualifies); ``person`` in ``not_worn`` indexes ``people``.
        """
        s = self.subjects
        people: list[dict[str, Any]] = []
        for i in range(len(s)):
            cls = int(s.data[CLASSNAME][i])
            item = int(s.data[ITEM][i])
            has_person = bool(s.data[HAS_PERSON][i])
            people.append(
                {
                    "status": STATUSES[int(s.data[STATUS][i])],
                    "reason": REASONS[int(s.data[REASON][i])],
                    "details": self.details[i] if i < len(self.details) else "",
                    "person": tlbr(s.xyxy[i]) if has_person else None,
                    "person_score": round(float(s.scores[i]), 4) if has_person else None,
                    "classname": self.classnames[cls] if cls >= 0 else None,
                    "item": item if item >= 0 else None,
                }
            )
        return {
            "rule": self.mode,
            "counts": self.counts(),
            "people": people,
            "not_worn": [dict(h) for h in self.not_worn],
        }


class SubjectBuilder:
    """Collects subjects one by one (a handful per image) into an :class:`Analysis`."""

    def __init__(self, classnames: Sequence[str]) -> None:
        self.classnames = (*classnames, CANNOT_TELL_CLASS)
        self._rows: list[tuple[Any, ...]] = []
        self.details: list[str] = []

    def add(
        self,
        *,
        box: npt.ArrayLike,
        score: float,
        status: int,
        reason: str,
        seen: str | None,
        item: int,
        has_person: bool,
        details: str,
    ) -> None:
        """One subject; ``seen``: the contract classname seen on it (``None``: nothing)."""
        seen_id = self.classnames.index(seen) if seen is not None else -1
        cls = self.classnames.index(CANNOT_TELL_CLASS) if status == CANNOT_TELL else seen_id
        if cls < 0:
            raise ValueError("a decided subject needs the classname seen")
        b = np.asarray(box, dtype=np.float32).reshape(4)
        self._rows.append((b, score, cls, status, reason_id(reason), seen_id, item, has_person))
        self.details.append(details)

    def build(self, *, items: list[Any], not_worn: list[dict[str, Any]], mode: Mode) -> Analysis:
        rows = self._rows
        n = len(rows)
        subjects = Detections(
            xyxy=np.array([r[0] for r in rows], np.float32).reshape(n, 4),
            scores=np.array([r[1] for r in rows], np.float32),
            class_ids=np.array([r[2] for r in rows], np.int32),
            data={
                STATUS: np.array([r[3] for r in rows], np.int8),
                REASON: np.array([r[4] for r in rows], np.int8),
                CLASSNAME: np.array([r[5] for r in rows], np.int16),
                ITEM: np.array([r[6] for r in rows], np.int64),
                HAS_PERSON: np.array([r[7] for r in rows], np.bool_),
            },
        )
        return Analysis(
            items=items,
            subjects=subjects,
            classnames=self.classnames,
            details=list(self.details),
            not_worn=not_worn,
            mode=mode,
        )


class Analyser(Protocol):
    """A task that can analyse one image (hard-hat or workwear)."""

    @property
    def answer_classnames(self) -> tuple[str, ...]: ...

    def analyse(self, image_bgr: ImageBGR, *, score_threshold: float | None = None) -> Analysis: ...


class SubjectDetector:
    """A :class:`~edge.tasks.base.DetectorLike` over a task's :class:`Analysis`: each
    "detection" is a subject (a person with their status), classed by the contract
    classname seen on them, or ``cannot_tell``.

    The camera pipeline tracks these, so a zone counts people (with the person box's
    feet as anchor when a person detector is used) and events carry the status, reason
    and classname from the ``data`` arrays. ``score_threshold`` goes to the task's
    hat/wear model; ``iou_threshold`` is not used; ``classes`` filters subjects.

    Thread-safety: as the wrapped task's detectors.
    """

    def __init__(self, *, task: Analyser, model: str = "") -> None:
        self.task = task
        self.model = model
        self._names = (*task.answer_classnames, CANNOT_TELL_CLASS)

    @property
    def class_names(self) -> list[str]:
        return list(self._names)

    def analyse(self, image_bgr: ImageBGR, *, score_threshold: float | None = None) -> Analysis:
        return self.task.analyse(image_bgr, score_threshold=score_threshold)

    def detect(
        self,
        image_bgr: ImageBGR,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> Detections:
        subjects = self.analyse(image_bgr, score_threshold=score_threshold).subjects
        if classes is None or len(subjects) == 0:
            return subjects
        wanted = np.array([self._names.index(c) for c in classes if c in self._names], np.int32)
        return subjects[np.isin(subjects.class_ids, wanted)]

    def detect_with_timings(
        self,
        image_bgr: ImageBGR,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> tuple[Detections, StageTimings]:
        """:meth:`detect` and the models' stage timings (both models summed)."""
        from edge.runtime.session import StageTimings

        analysis = self.analyse(image_bgr, score_threshold=score_threshold)
        subjects = analysis.subjects
        if classes is not None and len(subjects):
            ids = [self._names.index(c) for c in classes if c in self._names]
            subjects = subjects[np.isin(subjects.class_ids, np.array(ids, np.int32))]
        return subjects, analysis.timings or StageTimings()
