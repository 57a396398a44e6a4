"""The tracker a camera task gets from the config (:func:`build_task_spec`), driven
through the real :class:`TaskRunner` (tracker + zone monitors): one person makes one
incident when the hat colour flickers between frames and when a zone's cooldown is
longer than the tracker's ``max_age_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from edge.config import CameraTaskConfig, FiltersConfig, TaskKind
from edge.service.tasks import build_task_spec, build_zone_rules
from edge.stream.events import ZoneEvent
from edge.stream.pipeline import TaskRunner
from edge.tasks.compliance import (
    CANNOT_TELL_CLASS,
    CLASSNAME,
    COMPLIANT,
    HAS_PERSON,
    ITEM,
    REASON,
    STATUS,
    VIOLATION,
    reason_id,
)
from edge.tasks.hardhat import HAT_CLASSNAMES
from edge.tasks.workwear import WORKWEAR_CLASSNAMES
from edge.types import Detections

SUBJECTS = (*HAT_CLASSNAMES, CANNOT_TELL_CLASS)
PERSON = ("person", "car")
T0 = 1000.0


class Replay:
    """A detector whose answer the test sets frame by frame (``step`` takes detections)."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)

    def detect(self, *args: object, **kwargs: object) -> Detections:
        return Detections.empty()


def subject(box: Sequence[float], seen: str) -> Detections:
    """One person as :class:`SubjectDetector` reports it, classed ``seen``."""
    ci = SUBJECTS.index(seen)
    status, reason = (VIOLATION, "bare_head") if seen == "no_hat" else (COMPLIANT, "hat_worn")
    return Detections(
        xyxy=np.asarray([box], np.float32),
        scores=np.array([0.8], np.float32),
        class_ids=np.array([ci], np.int32),
        data={
            STATUS: np.array([status], np.int8),
            REASON: np.array([reason_id(reason)], np.int8),
            CLASSNAME: np.array([ci], np.int16),
            ITEM: np.array([0], np.int64),
            HAS_PERSON: np.array([True]),
        },
    )


def person(box: Sequence[float] | None) -> Detections:
    if box is None:
        return Detections.empty()
    return Detections(
        xyxy=np.asarray([box], np.float32),
        scores=np.array([0.8], np.float32),
        class_ids=np.array([0], np.int32),
    )


def run(runner: TaskRunner, frames: Sequence[tuple[float, Detections]]) -> list[ZoneEvent]:
    out: list[ZoneEvent] = []
    for t, d in frames:
        _, evs = runner.step(
            d,
            t=T0 + t,
            wall_ms=int(1_700_000_000_000 + t * 1000),
            frame_size=(768, 576),
            mono_s=T0 + t,
        )
        out += [e for e in evs if e.type != "update"]
    return out


def most_open(events: Sequence[ZoneEvent]) -> int:
    level = peak = 0
    for e in events:
        level += 1 if e.type == "start" else -1
        peak = max(peak, level)
    return peak


# -- finding 4: class flicker on subjects ------------------------------------------------------
@pytest.mark.parametrize(("p_other", "p_no"), [(0.1, 0.0), (0.2, 0.05), (0.3, 0.1)])
def test_a_flickering_hat_colour_makes_one_incident(p_other: float, p_no: float) -> None:
    """A worker with a yellow hat in a zone that requires red or white, 60 s at 10 det/s;
    the colour answer flickers to other_hat / no_hat on some frames (each breaks the rule
    too). Before: a class-aware tracker started a new track at every flicker, 2-3
    incidents open at once for the one worker."""
    task = CameraTaskConfig.model_validate(
        {
            "zones": [
                {
                    "name": "bay",
                    "polygon": "0.1,0.3,0.9,0.3,0.9,1,0.1,1",
                    "require": {"hardhat": {"colours": ["red", "white"]}},
                }
            ]
        }
    )
    spec = build_task_spec("hardhat", task, class_names=SUBJECTS, filters=FiltersConfig())
    conds, expl = build_zone_rules("hardhat", task, class_names=SUBJECTS)
    runner = TaskRunner(
        spec=spec, detector=Replay(SUBJECTS), camera="dock", conditions=conds, explainers=expl
    )
    rng = np.random.default_rng(1)
    frames = []
    for i in range(600):
        u = rng.random()
        seen = "other_hat" if u < p_other else "no_hat" if u < p_other + p_no else "yellow_hat"
        box = np.array([300, 200, 360, 380.0]) + rng.normal(0, 2, 4)
        frames.append((i / 10, subject(box.tolist(), seen)))
    events = run(runner, frames)
    starts = [e for e in events if e.type == "start"]
    assert len(starts) == 1, [(e.type, e.track_id, e.label) for e in events]
    assert most_open(events) == 1


def test_fence_tracks_stay_class_aware() -> None:
    """A person and a car are different objects: the fence task keeps class-aware
    tracking; subject tasks (hard-hat/workwear people) do not."""
    task = CameraTaskConfig.model_validate({"zones": [{"name": "z", "polygon": "0,0,1,0,1,1"}]})
    fence = build_task_spec("fence", task, class_names=PERSON, filters=FiltersConfig())
    assert fence.tracker.class_aware
    plain = CameraTaskConfig.model_validate({})
    kinds: tuple[tuple[TaskKind, tuple[str, ...]], ...] = (
        ("hardhat", SUBJECTS),
        ("workwear", (*WORKWEAR_CLASSNAMES, CANNOT_TELL_CLASS)),
    )
    for kind, names in kinds:
        spec = build_task_spec(kind, plain, class_names=names, filters=FiltersConfig())
        assert not spec.tracker.class_aware, kind


# -- finding 5: cooldown longer than max_age ---------------------------------------------------
def walk_with_gap(gap_s: float) -> list[tuple[float, Detections]]:
    """One person walking slowly inside the zone for 40 s at 10 det/s, undetected for
    ``gap_s`` seconds from t = 10 s; then 15 s of empty frames."""
    frames = []
    for i in range(550):
        t = i / 10
        cx = 200 + 10 * t
        gone = 10 <= t < 10 + gap_s or t >= 40
        box = None if gone else [cx - 20, 300, cx + 20, 400]
        frames.append((t, person(box)))
    return frames


def test_a_gap_shorter_than_the_cooldown_keeps_one_incident(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """cooldown_s 10 s, tracker max_age_s 3 s (default), the person unseen for 5 s: the
    zone keeps the incident open (5 < 10) but the tracker had deleted the track at 3 s and
    gave the person a new id -> a second start while the first was open, then a ``lost``
    end. Now the task's tracker keeps tracks as long as the longest cooldown, and says so
    once at INFO."""
    task = CameraTaskConfig.model_validate(
        {
            "zones": [
                {"name": "walkway", "polygon": "0.1,0.1,0.9,0.1,0.9,0.9,0.1,0.9", "cooldown_s": 10},
                {"name": "short", "polygon": "0,0,0.05,0,0.05,0.05", "cooldown_s": 2},
            ]
        }
    )
    with caplog.at_level(logging.INFO, logger="edge.service.tasks"):
        spec = build_task_spec("fence", task, class_names=PERSON, filters=FiltersConfig())
    assert spec.tracker.max_age_s == 10.0
    said = [r for r in caplog.records if r.name == "edge.service.tasks"]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "walkway" in said[0].getMessage() and "10" in said[0].getMessage()
    runner = TaskRunner(spec=spec, detector=Replay(PERSON), camera="cam")
    events = [e for e in run(runner, walk_with_gap(5.0)) if e.zone == "walkway"]
    assert [e.type for e in events] == ["start", "end"], [
        (e.type, e.track_id, e.attributes.get("reason")) for e in events
    ]


def test_max_age_is_kept_when_it_already_covers_the_cooldowns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = CameraTaskConfig.model_validate(
        {
            "zones": [{"name": "z", "polygon": "0,0,1,0,1,1", "cooldown_s": 2}],
            "tracker": {"max_age_s": 5},
        }
    )
    with caplog.at_level(logging.INFO, logger="edge.service.tasks"):
        spec = build_task_spec("fence", task, class_names=PERSON, filters=FiltersConfig())
    assert spec.tracker.max_age_s == 5.0
    assert not [r for r in caplog.records if r.name == "edge.service.tasks"]
