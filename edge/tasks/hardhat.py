"""Hard-hat wearing: one item per head, ``classname`` = hat colour or ``no_hat``.

Works with any detector whose class names say what a box is:

- colour classes (``red``, ``blue``, ``white``, ``yellow``, ``other`` or with a
  ``_hat`` suffix) name the colour directly;
- generic hat classes (``helmet``, ``hat``, ``hardhat``) get their colour from HSV
  statistics of the box (:mod:`edge.tasks.colour`);
- bare-head classes (``none``, ``no_hat``, ``no_helmet``, ``head``) give ``no_hat``.

Other classes of the model (e.g. ``wear``) are ignored.

**Worn, not held.** With a person detector (``person_detector``) a hat counts only when it
sits on a person's head region (:mod:`edge.tasks.wearing`). The contract answer then
holds, highest score first:

- each hat worn by a detected person (the hat box and its colour),
- each hat with no detected person near it (*unattributed*: its wearer was most likely
  missed by the person detector; the model's word stands, as without the rule),
- each bare head the model saw (``no_hat``, the head box), on a person or not,
- ``no_hat`` on the derived head region of each person whose visible head region holds
  neither (a hat in the hand, on the belt, on the floor beside them, or none at all),
  scored with the person's score; not for a person the summary marks ``cannot_tell``
  (too small, head cut off, occluded, uncertain person score).

A hat held by a person (its centre in their box, below the head) or lying beside one
(below their head region, at their scale) is never in the contract answer (it would read
as "someone wears a red hat"); it is in the summary's ``not_worn`` list as ``held_hat``
or ``loose_hat``. Without a person detector the task answers from the model's boxes
alone, as the contract always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import numpy.typing as npt

from edge.tasks.base import DetectorLike, ImageBGR
from edge.tasks.colour import HAT_COLOURS, crop, crop_colour
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
    tlbr,
)
from edge.tasks.wearing import (
    DEFAULT_RULE,
    WearingRule,
    beside_body,
    head_regions,
    held_by,
    match_heads,
    occlusion,
)
from edge.types import Detections

if TYPE_CHECKING:
    from edge.runtime.session import StageTimings

NO_HAT = "no_hat"
OTHER_HAT = "other_hat"
HAT_CLASSNAMES = ("blue_hat", "white_hat", "yellow_hat", "red_hat", OTHER_HAT, NO_HAT)
HELD_HAT = "held_hat"
LOOSE_HAT = "loose_hat"
PERSON_CLASSES = ("person",)

_BARE = {"none", "no_hat", "no_helmet", "head", "nohat"}
_GENERIC = {"helmet", "hat", "hardhat", "hard_hat"}
_DIRECT = {
    "red": "red_hat",
    "blue": "blue_hat",
    "white": "white_hat",
    "yellow": "yellow_hat",
    "other": OTHER_HAT,
    "orange": OTHER_HAT,
}


class ResultItem(TypedDict):
    """One item of the hard-hat/workwear contract's result list."""

    box: list[int]
    classname: str
    score: float


def hat_classname(model_class: str) -> str | None:
    """Contract classname for a model class name; ``""`` = colour from pixels; None = ignore."""
    name = model_class.strip().lower()
    if name in _BARE:
        return NO_HAT
    if name in _GENERIC:
        return ""
    base = name[: -len("_hat")] if name.endswith("_hat") else name
    return _DIRECT.get(base)


@dataclass(frozen=True)
class HardhatTask:
    """Heads with their hat colour (or ``no_hat``) from a head/hat detector, and, with a
    ``person_detector``, the worn rule and the per-person three-way result.

    Attributes:
        detector: the head/hat model.
        score_threshold: its score threshold (``None``: the model's own).
        person_detector: people for the worn rule (e.g. the fence model); ``None``:
            the model's boxes alone.
        rule: the worn rule and visibility numbers.
        person_classes: the person detector's classes that are people.
    """

    detector: DetectorLike
    score_threshold: float | None = None
    person_detector: DetectorLike | None = None
    rule: WearingRule = field(default_factory=WearingRule)
    person_classes: tuple[str, ...] = PERSON_CLASSES

    @property
    def answer_classnames(self) -> tuple[str, ...]:
        """The classnames the answer may hold."""
        return HAT_CLASSNAMES

    @property
    def model_classes(self) -> list[str]:
        """The detector's classes this task reads (heads and hats); empty: none."""
        return [n for n in self.detector.class_names if hat_classname(n) is not None]

    def heads(
        self, image_bgr: ImageBGR, *, score_threshold: float | None = None
    ) -> tuple[Detections, list[str], StageTimings | None]:
        """The model's head and hat boxes, highest score first, with their contract
        classnames (colour from pixels for generic hat classes) and the call's timings."""
        names = list(self.detector.class_names)
        thr = self.score_threshold if score_threshold is None else score_threshold
        dets, timings = detect_ranked(
            self.detector, image_bgr, self.model_classes, score_threshold=thr
        )
        classnames: list[str] = []
        for box, cid in zip(dets.xyxy, dets.class_ids, strict=True):
            classname = hat_classname(names[int(cid)])
            if classname == "":
                colour, _ = crop_colour(crop(image_bgr, box))
                classname = HAT_COLOURS.get(colour, OTHER_HAT)
            assert classname is not None
            classnames.append(classname)
        return dets, classnames, timings

    def analyse(self, image_bgr: ImageBGR, *, score_threshold: float | None = None) -> Analysis:
        """The contract items, the per-person three-way result and the hats not worn."""
        dets, classnames, t_heads = self.heads(image_bgr, score_threshold=score_threshold)
        people, t_people = detect_people(self.person_detector, self.person_classes, image_bgr)
        analysis = assess_hats(dets, classnames, people, rule=self.rule)
        return replace(analysis, timings=sum_timings(t_heads, t_people))

    def run(self, image_bgr: ImageBGR) -> list[ResultItem]:
        """The contract answer's items (see the module docstring)."""
        items: list[ResultItem] = self.analyse(image_bgr).items
        return items


def _sorted_items(
    entries: list[tuple[ResultItem, int]],
) -> tuple[list[ResultItem], dict[int, int]]:
    """Items highest score first (stable) and ``key -> index`` into the sorted list."""
    order = sorted(range(len(entries)), key=lambda k: -entries[k][0]["score"])
    return [entries[k][0] for k in order], {entries[k][1]: n for n, k in enumerate(order)}


def assess_hats(
    heads: Detections,
    classnames: Sequence[str],
    people: Detections | None,
    *,
    rule: WearingRule = DEFAULT_RULE,
) -> Analysis:
    """The hard-hat analysis of one image (see the module docstring and
    :mod:`edge.tasks.compliance` for the reasons).

    Args:
        heads: (H) hat and bare-head boxes, highest score first.
        classnames: (H) their contract classnames (``no_hat`` = bare head).
        people: (P) person boxes, highest score first; ``None``: no person detector
            (the model's boxes alone, ``mode="detector"``).
        rule: the worn rule and visibility numbers.
    """
    n_h = len(heads)
    is_hat = np.array([c != NO_HAT for c in classnames], dtype=np.bool_).reshape(n_h)
    band = rule.uncertain_band
    hi = band[1] if band is not None else 0.0
    lo = band[0] if band is not None else 0.0
    unsure_h = heads.scores < hi
    if people is None:
        return _assess_detector_only(heads, classnames, is_hat, unsure_h, hi)
    out = SubjectBuilder(HAT_CLASSNAMES)

    people = people[people.scores >= lo]
    n_p = len(people)
    pxy = people.xyxy
    person_head, head_person = match_heads(pxy, heads.xyxy, heads.scores, rule)
    regions = head_regions(pxy, rule)
    share = occlusion(pxy, regions)
    height = pxy[:, 3] - pxy[:, 1]
    small = height < rule.min_person_px
    cut = pxy[:, 1] <= rule.edge_px
    occluded = share >= rule.occluded_fraction
    unsure_p = people.scores < hi
    # Hats on no head: held (in a person's box), loose (beside a person, below the
    # head), or unattributed (nobody near: the wearer was probably not detected).
    off_head = is_hat & (head_person < 0)
    held = np.full((n_h,), -1, dtype=np.int64)
    beside = np.full((n_h,), -1, dtype=np.int64)
    if off_head.any():
        held[off_head] = held_by(pxy, heads.xyxy[off_head], rule)
        rest = off_head & (held < 0)
        if rest.any():
            beside[rest] = beside_body(pxy, heads.xyxy[rest], rule)
    holder = np.where(held >= 0, held, beside)
    not_worn = off_head & (holder >= 0)
    unattributed = off_head & (holder < 0)
    holds = np.zeros((n_p,), dtype=np.bool_)
    holds[holder[holder >= 0]] = True
    ev = person_head
    has_ev = ev >= 0
    ev_safe = np.where(has_ev, ev, 0)
    ev_hat = has_ev & (is_hat[ev_safe] if n_h else np.zeros((n_p,), np.bool_))
    ev_unsure = has_ev & (unsure_h[ev_safe] if n_h else np.zeros((n_p,), np.bool_))
    reasons = np.array(
        [
            "too_small",
            "uncertain_score",
            "hat_worn",
            "bare_head",
            "head_cut_off",
            "occluded",
            "uncertain_score",
            "hat_not_worn",
        ],
    )
    conds = [small, ev_unsure, ev_hat, has_ev, cut, occluded, unsure_p, holds]
    statuses = [
        CANNOT_TELL,
        CANNOT_TELL,
        COMPLIANT,
        VIOLATION,
        CANNOT_TELL,
        CANNOT_TELL,
        CANNOT_TELL,
        VIOLATION,
    ]
    choice = np.select(conds, list(range(len(conds))), default=len(conds))
    status = np.append(np.array(statuses), VIOLATION)[choice]
    reason = np.append(reasons, "no_hat_on_head")[choice]
    derived = (status == VIOLATION) & ~has_ev

    entries: list[tuple[ResultItem, int]] = []
    for j in range(n_h):  # worn and unattributed hats, every bare head
        if not not_worn[j]:
            entries.append((result_item(heads.xyxy[j], classnames[j], heads.scores[j]), j))
    for i in np.flatnonzero(derived).tolist():  # no_hat on the derived head region
        entries.append((result_item(regions[i], NO_HAT, people.scores[i]), n_h + i))
    items, where = _sorted_items(entries)

    for i in range(n_p):
        j = int(ev[i])
        s = float(people.scores[i])
        why = str(reason[i])
        seen = classnames[j] if j >= 0 else (NO_HAT if status[i] == VIOLATION else None)
        item = where.get(j if j >= 0 else n_h + i, -1)
        out.add(
            box=pxy[i],
            score=s,
            status=int(status[i]),
            reason=why,
            seen=seen,
            item=item,
            has_person=True,
            details=_hat_details(
                why,
                seen=seen,
                height=float(height[i]),
                share=float(share[i]),
                score=float(heads.scores[j]) if j >= 0 else s,
                rule=rule,
                held=[classnames[k] for k in np.flatnonzero(holder == i).tolist()],
            ),
        )
    # Heads on nobody (bare heads, hats whose wearer was not detected) are subjects of
    # their own when sure; unsure ones would only add noise (their items stay).
    nobody = ((~is_hat & (head_person < 0)) | unattributed) & ~unsure_h
    for j in np.flatnonzero(nobody).tolist():
        s = float(heads.scores[j])
        if is_hat[j]:
            st, why, txt = COMPLIANT, "hat_worn", f"{classnames[j]} seen, no person box under it"
        else:
            st, why, txt = VIOLATION, "bare_head", "bare head seen (no person box)"
        out.add(
            box=heads.xyxy[j],
            score=s,
            status=st,
            reason=why,
            seen=classnames[j],
            item=where[j],
            has_person=False,
            details=txt,
        )
    hats_off = [
        {
            "box": tlbr(heads.xyxy[j]),
            "classname": HELD_HAT if held[j] >= 0 else LOOSE_HAT,
            "colour": classnames[j],
            "score": round(float(heads.scores[j]), 4),
            "person": int(holder[j]),
        }
        for j in np.flatnonzero(not_worn).tolist()
    ]
    return out.build(items=items, not_worn=hats_off, mode="person")


def _assess_detector_only(
    heads: Detections,
    classnames: Sequence[str],
    is_hat: npt.NDArray[np.bool_],
    unsure: npt.NDArray[np.bool_],
    hi: float,
) -> Analysis:
    """No person detector: every model box is an item and a subject of its own."""
    n_h = len(heads)
    out = SubjectBuilder(HAT_CLASSNAMES)
    entries = [(result_item(heads.xyxy[j], classnames[j], heads.scores[j]), j) for j in range(n_h)]
    items, where = _sorted_items(entries)
    for j in range(n_h):
        s = float(heads.scores[j])
        if unsure[j]:
            st, why, txt = CANNOT_TELL, "uncertain_score", f"score {s:.2f} < {hi:.2f}"
        elif is_hat[j]:
            st, why, txt = COMPLIANT, "hat_worn", f"{classnames[j]} seen (no person check)"
        else:
            st, why, txt = VIOLATION, "bare_head", "bare head seen"
        out.add(
            box=heads.xyxy[j],
            score=s,
            status=st,
            reason=why,
            seen=classnames[j],
            item=where[j],
            has_person=False,
            details=txt,
        )
    return out.build(items=items, not_worn=[], mode="detector")


def _hat_details(
    reason: str,
    *,
    seen: str | None,
    height: float,
    share: float,
    score: float,
    rule: WearingRule,
    held: list[str],
) -> str:
    band = rule.uncertain_band
    texts = {
        "too_small": f"person box {height:.0f} px high < {rule.min_person_px:g} px",
        "uncertain_score": f"score {score:.2f} < {band[1] if band else 0:.2f}",
        "hat_worn": f"{seen} on the head region",
        "bare_head": "bare head seen on the head region",
        "head_cut_off": "the person box touches the top edge of the image",
        "occluded": f"{share:.0%} of the head region covered by a person in front",
        "hat_not_worn": f"{', '.join(held)} held, hanging or beside, not on the head",
        "no_hat_on_head": "head region visible, no hat on it",
    }
    return texts[reason]
