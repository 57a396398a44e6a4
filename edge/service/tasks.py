"""Camera tasks from the config: :class:`~edge.config.CameraTaskConfig` -> stream-layer
:class:`~edge.stream.pipeline.TaskSpec`.

The three task kinds are one zone machine with different classes (see
:mod:`edge.stream.zones`):

- ``fence``: the zone's ``classes`` (default ``person``) inside the polygon;
- ``hardhat``: bare heads (classes the hard-hat task reads as ``no_hat``: ``head``,
  ``no_helmet``, ...) inside the zone for ``min_dwell_s``; events are labelled
  ``no_hat``;
- ``workwear``: people detected as not wearing workwear (``no_wear``, ...); label
  ``no_workwear``.

``hardhat``/``workwear`` without zones watch the whole frame through one zone named
``frame`` with the :class:`~edge.config.ZoneConfig` defaults.

Counting lines (:mod:`edge.stream.lines`) take the same default classes and labels as
the task's zones.

**Subjects.** ``safety-edge run`` wraps hard-hat/workwear models in
:class:`~edge.tasks.compliance.SubjectDetector`: the tracked objects are people with
their three-way status, classed by the answer's classnames (``no_hat``, ``red_hat``,
..., ``cannot_tell``). A zone's ``classes`` may still name the model's classes (``head``,
``none``, ``helmet``, ``no_wear``, ...); they are read as the classnames they give. A
zone with ``require`` counts every person seen (not ``cannot_tell``) and keeps those who
break the rule (:func:`build_zone_rules`); its events are labelled with the classname
seen (``yellow_hat``, ``no_hat``). Every event of such a task carries
``attributes.compliance``, ``compliance_reason``, ``classname`` and, for a broken rule,
``rule``.

**Tracker.** Subject tasks track people whose classname (the hat colour, ``no_hat``)
flickers from frame to frame, so their tracker is not class-aware (a track takes the
class of its latest detection); fence tasks keep class-aware tracks (a person and a
vehicle never share one). A track is kept at least as long as the longest ``cooldown_s``
of the task's zones (``max_age_s`` is raised to it, logged once at INFO): a person unseen
for less than the cooldown keeps the incident open, and must come back with the same
track id, not start a second incident.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from edge.config import CameraTaskConfig, FiltersConfig, TaskKind, ZoneConfig
from edge.stream.pipeline import TaskSpec
from edge.stream.tracker import TrackerConfig
from edge.stream.zones import Condition, Explain
from edge.tasks.compliance import CANNOT_TELL_CLASS
from edge.tasks.hardhat import NO_HAT, hat_classname
from edge.tasks.rules import AttrValue, Requirement
from edge.tasks.workwear import NO_WORKWEAR
from edge.types import BoolArray, Detections

__all__ = [
    "DEFAULT_LABELS",
    "WHOLE_FRAME_ZONE",
    "build_task_spec",
    "build_zone_rules",
    "default_zone_classes",
]

DEFAULT_LABELS: dict[TaskKind, str | None] = {
    "fence": None,
    "hardhat": NO_HAT,
    "workwear": NO_WORKWEAR,
}
"""Event label per task kind (``None``: the track's class name)."""
_log = logging.getLogger(__name__)
WHOLE_FRAME_ZONE = "frame"
_NO_WEAR = frozenset({"no_wear", "no_workwear", "no_vest", "no_uniform"})
_WEAR = frozenset({"wear", "workwear", "vest", "uniform"})


def default_zone_classes(kind: TaskKind, class_names: Sequence[str]) -> tuple[str, ...]:
    """Classes of the model that count in a zone without ``classes``, per task kind."""
    if kind == "fence":
        return tuple(c for c in ("person",) if c in class_names)
    if kind == "hardhat":
        return tuple(c for c in class_names if hat_classname(c) == NO_HAT)
    return tuple(c for c in class_names if c.strip().lower() in _NO_WEAR)


def _is_subjects(class_names: Sequence[str]) -> bool:
    """The classes are a :class:`~edge.tasks.compliance.SubjectDetector`'s."""
    return CANNOT_TELL_CLASS in class_names


def _answer_classes(
    kind: TaskKind, configured: Sequence[str], class_names: Sequence[str]
) -> list[str]:
    """Zone/line classes naming the model's classes -> the subjects' classnames
    (``head`` -> ``no_hat``, ``helmet`` -> every hat colour, ``wear`` -> every colour);
    names already among ``class_names`` (or unknown) are kept as they are."""
    colours = [c for c in class_names if c not in (NO_HAT, NO_WORKWEAR, CANNOT_TELL_CLASS)]
    out: list[str] = []
    for c in configured:
        mapped: list[str] = [c]
        if c not in class_names and kind == "hardhat":
            m = hat_classname(c)
            mapped = colours if m == "" else [m] if m is not None else [c]
        elif c not in class_names and kind == "workwear":
            low = c.strip().lower()
            if low in _NO_WEAR:
                mapped = [NO_WORKWEAR]
            elif low in _WEAR:
                mapped = colours
        out += [m for m in mapped if m not in out]
    return out


def _resolve_classes(
    what: str,
    name: str,
    configured: Sequence[str] | None,
    kind: TaskKind,
    class_names: Sequence[str],
) -> tuple[str, ...]:
    classes = tuple(configured) if configured else default_zone_classes(kind, class_names)
    if not classes:
        raise ValueError(
            f"{what} {name!r}: the model has no {kind} classes (it knows "
            f"{list(class_names)}); set classes"
        )
    unknown = [c for c in classes if c not in class_names]
    if unknown:
        raise ValueError(
            f"{what} {name!r}: the model does not detect {unknown} (it knows {list(class_names)})"
        )
    return classes


def build_task_spec(
    kind: TaskKind,
    task: CameraTaskConfig,
    *,
    class_names: Sequence[str],
    filters: FiltersConfig,
) -> TaskSpec:
    """The stream layer's task for one camera task of the config.

    Args:
        kind: ``fence``, ``hardhat`` or ``workwear`` (also the task name in events).
        task: the camera task's config.
        class_names: the model's classes.
        filters: the gateway's filters (the task's own ``filters`` win).

    Raises:
        ValueError: no class of the model fits a zone or line (the message names it).
    """
    zones = task.zones or ([] if kind == "fence" else [ZoneConfig(name=WHOLE_FRAME_ZONE)])
    subjects = _is_subjects(class_names)
    specs = []
    for z in zones:
        configured = z.classes
        if subjects and configured:
            configured = _answer_classes(kind, configured, class_names)
        label = DEFAULT_LABELS[kind]
        if z.require is not None:
            if not subjects:
                raise ValueError(f"zone {z.name!r}: require needs the {kind} task's analysis")
            label = None  # the classname seen: yellow_hat, no_hat, ...
            if not configured:
                configured = [c for c in class_names if c != CANNOT_TELL_CLASS]
        classes = _resolve_classes("zone", z.name, configured, kind, class_names)
        specs.append(z.to_spec(classes=classes, label=label))
    lines = []
    for ln in task.lines:
        configured = ln.classes
        if subjects and configured:
            configured = _answer_classes(kind, configured, class_names)
        classes = _resolve_classes("line", ln.name, configured, kind, class_names)
        lines.append(ln.to_spec(classes=classes, label=DEFAULT_LABELS[kind]))
    f = task.filters or filters
    t = task.tracker
    max_age = t.max_age_s
    longest = max(specs, key=lambda z: z.cooldown_s, default=None)
    if longest is not None and longest.cooldown_s > max_age:
        _log.info(
            "task %s: tracker max_age_s raised from %g s to %g s, the cooldown_s of zone %r "
            "(a person unseen for less than the cooldown keeps the incident and the track id)",
            kind,
            max_age,
            longest.cooldown_s,
            longest.name,
        )
        max_age = longest.cooldown_s
    return TaskSpec(
        name=kind,
        zones=tuple(specs),
        lines=tuple(lines),
        score_threshold=f.min_score,
        min_box_area=f.min_box_area,
        tracker=TrackerConfig(
            high_score=t.high_score,
            low_score=t.low_score,
            match_iou=t.match_iou,
            n_init=t.n_init,
            max_age_s=max_age,
            # Subjects: one person whose classname flickers (yellow_hat -> other_hat).
            class_aware=not subjects,
        ),
        snapshots=task.snapshots,
    )


def build_zone_rules(
    kind: TaskKind, task: CameraTaskConfig, *, class_names: Sequence[str]
) -> tuple[dict[str, Condition], dict[str, Explain]]:
    """Per zone of a hard-hat/workwear task on subjects (``class_names`` of a
    :class:`~edge.tasks.compliance.SubjectDetector`): the condition of a zone with
    ``require`` (people who break it) and, for every zone, the event attributes
    (``compliance``, ``compliance_reason``, ``classname``, ``rule``). Zones without
    ``require`` are judged by the task's plain rule ("hardhat required"). Fence tasks,
    and models not wrapped in a subject detector, get neither.

    Returns:
        ``(conditions, explainers)`` by zone name, for
        :class:`~edge.stream.pipeline.TaskRunner`.
    """
    if kind == "fence" or not _is_subjects(class_names):
        return {}, {}
    names = tuple(class_names)
    zones = task.zones or [ZoneConfig(name=WHOLE_FRAME_ZONE)]
    conditions: dict[str, Condition] = {}
    explainers: dict[str, Explain] = {}
    for z in zones:
        req = z.require.to_requirement(kind) if z.require is not None else None
        rule = req if req is not None else Requirement(kind=kind)
        if req is not None:
            conditions[z.name] = _condition(req, names)
        explainers[z.name] = _explainer(rule, names)
    return conditions, explainers


def _condition(req: Requirement, names: tuple[str, ...]) -> Condition:
    def broken(dets: Detections) -> BoolArray:
        return req.broken(dets, names)

    return broken


def _explainer(req: Requirement, names: tuple[str, ...]) -> Explain:
    def explain(dets: Detections, i: int) -> Mapping[str, AttrValue]:
        return req.explain(dets, i, names)

    return explain
