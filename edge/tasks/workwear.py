"""Workwear wearing: one item per person, ``classname`` = workwear colour or ``no_workwear``.

The detector says whether a person wears workwear (class ``wear``) or not
(``no_wear``); the colour is named from HSV statistics of the torso part of the box
(:func:`edge.tasks.colour.torso_box`) by :func:`edge.tasks.colour.workwear_colour`
(contract names ``light/blue/red/dark/yellow/other``, hi-vis orange as ``yellow``).

The contract answer is the model's boxes. With a person detector, :meth:`WorkwearTask.analyse`
also gives each person the three-way result (:mod:`edge.tasks.compliance`): a wear box
belongs to the person box holding at least half of it (:func:`edge.tasks.wearing.match_workwear`);
a visible person the model said nothing about is ``cannot_tell`` (``not_detected``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from edge.tasks.base import DetectorLike, ImageBGR
from edge.tasks.colour import crop, torso_box, workwear_colour
from edge.tasks.compliance import (
    CANNOT_TELL,
    COMPLIANT,
    VIOLATION,
    Analysis,
    SubjectBuilder,
    detect_people,
    detect_ranked,
    result_item,
    sum_timings,
)
from edge.tasks.hardhat import PERSON_CLASSES, ResultItem
from edge.tasks.wearing import DEFAULT_RULE, WearingRule, match_workwear, occlusion, torso_regions
from edge.types import Detections

if TYPE_CHECKING:
    from edge.runtime.session import StageTimings

NO_WORKWEAR = "no_workwear"
WORKWEAR_CLASSNAMES = ("light", "blue", "other", "red", "dark", "yellow", NO_WORKWEAR)

_WEAR = {"wear", "workwear", "vest", "uniform"}
_NO_WEAR = {"no_wear", "no_workwear", "no_vest", "no_uniform"}
MODEL_CLASSES = frozenset(_WEAR | _NO_WEAR)
"""Model class names (lower case) the task reads; a model's other classes are ignored."""


@dataclass(frozen=True)
class WorkwearTask:
    """People with their workwear colour (or ``no_workwear``) from a wear/no_wear detector,
    and, with a ``person_detector``, the per-person three-way result."""

    detector: DetectorLike
    score_threshold: float | None = None
    box_is_torso: bool = False
    """True when the model's boxes already cover only the torso (no torso crop needed)."""
    person_detector: DetectorLike | None = None
    rule: WearingRule = field(default_factory=WearingRule)
    person_classes: tuple[str, ...] = PERSON_CLASSES

    @property
    def answer_classnames(self) -> tuple[str, ...]:
        """The classnames the answer may hold."""
        return WORKWEAR_CLASSNAMES

    @property
    def model_classes(self) -> list[str]:
        """The detector's classes this task reads (wear / no-wear); empty: none."""
        return [n for n in self.detector.class_names if n.strip().lower() in MODEL_CLASSES]

    def boxes(
        self, image_bgr: ImageBGR, *, score_threshold: float | None = None
    ) -> tuple[Detections, list[str], StageTimings | None]:
        """The model's wear/no-wear boxes, highest score first, with their contract
        classnames (colour from the torso pixels) and the call's timings."""
        names = [n.strip().lower() for n in self.detector.class_names]
        thr = self.score_threshold if score_threshold is None else score_threshold
        dets, timings = detect_ranked(
            self.detector, image_bgr, self.model_classes, score_threshold=thr
        )
        torsos = dets.xyxy if self.box_is_torso else torso_box(dets.xyxy)
        classnames: list[str] = []
        for torso, cid in zip(torsos, dets.class_ids, strict=True):
            if names[int(cid)] in _NO_WEAR:
                classnames.append(NO_WORKWEAR)
            else:
                classnames.append(workwear_colour(crop(image_bgr, torso))[0])
        return dets, classnames, timings

    def analyse(self, image_bgr: ImageBGR, *, score_threshold: float | None = None) -> Analysis:
        """The contract items and the per-person three-way result."""
        dets, classnames, t_boxes = self.boxes(image_bgr, score_threshold=score_threshold)
        people, t_people = detect_people(self.person_detector, self.person_classes, image_bgr)
        analysis = assess_workwear(dets, classnames, people, rule=self.rule)
        return replace(analysis, timings=sum_timings(t_boxes, t_people))

    def run(self, image_bgr: ImageBGR) -> list[ResultItem]:
        """The contract answer's items: one per model box, highest score first."""
        items: list[ResultItem] = self.analyse(image_bgr).items
        return items


def assess_workwear(
    boxes: Detections,
    classnames: Sequence[str],
    people: Detections | None,
    *,
    rule: WearingRule = DEFAULT_RULE,
) -> Analysis:
    """The workwear analysis of one image: items are the model's boxes; subjects are the
    people (``None``: no person detector, one subject per box) and boxes on nobody."""
    n_b = len(boxes)
    items = [result_item(boxes.xyxy[j], classnames[j], boxes.scores[j]) for j in range(n_b)]
    band = rule.uncertain_band
    lo, hi = band if band is not None else (0.0, 0.0)
    unsure_b = boxes.scores < hi
    worn = np.array([c != NO_WORKWEAR for c in classnames], dtype=np.bool_).reshape(n_b)
    out = SubjectBuilder(WORKWEAR_CLASSNAMES)

    def add_box(j: int) -> None:
        s = float(boxes.scores[j])
        if unsure_b[j]:
            st, why, txt = CANNOT_TELL, "uncertain_score", f"score {s:.2f} < {hi:.2f}"
        elif worn[j]:
            st, why, txt = COMPLIANT, "workwear_worn", f"{classnames[j]} workwear seen"
        else:
            st, why, txt = VIOLATION, "no_workwear", "no workwear seen"
        txt += " (no person box)" if people is not None else " (no person check)"
        out.add(
            box=boxes.xyxy[j],
            score=s,
            status=st,
            reason=why,
            seen=classnames[j],
            item=j,
            has_person=False,
            details=txt,
        )

    if people is None:
        for j in range(n_b):
            add_box(j)
        return out.build(items=items, not_worn=[], mode="detector")
    people = people[people.scores >= lo]
    pxy = people.xyxy
    person_box, box_person = match_workwear(pxy, boxes.xyxy)
    height = pxy[:, 3] - pxy[:, 1]
    share = occlusion(pxy, torso_regions(pxy))
    for i in range(len(people)):
        j = int(person_box[i])
        s = float(people.scores[i])
        seen = classnames[j] if j >= 0 else None
        if height[i] < rule.min_person_px:
            st, why = CANNOT_TELL, "too_small"
            txt = f"person box {height[i]:.0f} px high < {rule.min_person_px:g} px"
        elif j >= 0 and unsure_b[j]:
            st, why, txt = CANNOT_TELL, "uncertain_score", f"score {boxes.scores[j]:.2f} < {hi:.2f}"
        elif j >= 0 and worn[j]:
            st, why, txt = COMPLIANT, "workwear_worn", f"{seen} workwear on the person"
        elif j >= 0:
            st, why, txt = VIOLATION, "no_workwear", "no workwear on the person"
        elif share[i] >= rule.occluded_fraction:
            st, why = CANNOT_TELL, "occluded"
            txt = f"{share[i]:.0%} of the torso covered by a person in front"
        elif s < hi:
            st, why, txt = CANNOT_TELL, "uncertain_score", f"score {s:.2f} < {hi:.2f}"
        else:
            st, why, txt = CANNOT_TELL, "not_detected", "the model said nothing about this person"
        out.add(
            box=pxy[i],
            score=s,
            status=st,
            reason=why,
            seen=seen,
            item=j,
            has_person=True,
            details=txt,
        )
    for j in np.flatnonzero(box_person < 0).tolist():
        add_box(j)
    return out.build(items=items, not_worn=[], mode="person")
