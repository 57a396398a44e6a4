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
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.config import CameraTaskConfig, FiltersConfig, TaskKind, ZoneConfig
from edge.stream.pipeline import TaskSpec
from edge.stream.tracker import TrackerConfig
from edge.tasks.hardhat import NO_HAT, hat_classname
from edge.tasks.workwear import NO_WORKWEAR

__all__ = ["DEFAULT_LABELS", "WHOLE_FRAME_ZONE", "build_task_spec", "default_zone_classes"]

DEFAULT_LABELS: dict[TaskKind, str | None] = {
    "fence": None,
    "hardhat": NO_HAT,
    "workwear": NO_WORKWEAR,
}
"""Event label per task kind (``None``: the track's class name)."""
WHOLE_FRAME_ZONE = "frame"
_NO_WEAR = frozenset({"no_wear", "no_workwear", "no_vest", "no_uniform"})


def default_zone_classes(kind: TaskKind, class_names: Sequence[str]) -> tuple[str, ...]:
    """Classes of the model that count in a zone without ``classes``, per task kind."""
    if kind == "fence":
        return tuple(c for c in ("person",) if c in class_names)
    if kind == "hardhat":
        return tuple(c for c in class_names if hat_classname(c) == NO_HAT)
    return tuple(c for c in class_names if c.strip().lower() in _NO_WEAR)


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
    specs = []
    for z in zones:
        classes = _resolve_classes("zone", z.name, z.classes, kind, class_names)
        specs.append(z.to_spec(classes=classes, label=DEFAULT_LABELS[kind]))
    lines = []
    for ln in task.lines:
        classes = _resolve_classes("line", ln.name, ln.classes, kind, class_names)
        lines.append(ln.to_spec(classes=classes, label=DEFAULT_LABELS[kind]))
    f = task.filters or filters
    t = task.tracker
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
            max_age_s=t.max_age_s,
        ),
        snapshots=task.snapshots,
    )
