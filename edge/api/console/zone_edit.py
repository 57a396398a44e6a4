"""Zone and counting-line edits from the console: validate a polygon (a zone) or a
polyline (a line), save it into ``gateway.yaml`` (with a backup of the previous file) and
apply it to the running pipeline.

Zone validation is the fence API's rule for ``area``: 4 to 9 points
(:data:`~edge.kernels.geometry.MIN_AREA_POINTS`, :data:`~edge.kernels.geometry.MAX_AREA_POINTS`),
a simple polygon with non-zero area (:func:`edge.kernels.geometry.validate_polygon`), every
point inside the frame
(:func:`edge.kernels.geometry.check_polygon_in_image`). Line validation is the config's
own (:class:`edge.config.LineConfig`: 2 to :data:`~edge.kernels.geometry.MAX_LINE_POINTS`
points once consecutive repeats are dropped, a simple open polyline --
:func:`edge.kernels.geometry.validate_polyline`), plus every point inside the frame.
The editor's JavaScript (``static/polygon.js``) mirrors these rules; the server's check is
the one that counts.

Saving edits the YAML text in place: only the zone's ``polygon`` (the line's ``points``)
value is replaced (or a ``polygon:`` line inserted after the zone's ``name``), so comments,
key order and ``${VAR}`` references elsewhere in the file stay as they were. The result
is parsed again and must equal the old document with only that value changed, and pass
the full config validation; when the in-place edit cannot guarantee that (an unusual
layout), the whole document is written out again instead (comments are then lost;
``rewritten`` says so). In every case the previous file is first copied to
``<file>.bak-<UTC time>`` (the newest :data:`KEEP_BACKUPS` are kept) and the new one
replaces it atomically and durably (:func:`edge.fsutil.write_atomic`: temporary file,
``fsync``, rename, ``fsync`` of the folder), keeping its permissions: once the save
returns, a power cut cannot bring the old file back.

The points keep the zone's or line's coordinate form: ``normalized`` ones get 0-1
coordinates (5 decimals), others pixels (1 decimal).

Applying: the service layer's hooks (:class:`~edge.api.console.backend.CameraBackend`
``apply_zone``, ``apply_line``) swap the polygon in the running zone monitor, or the
points of the running line counter (its counts go on, they are not reset); without a
running pipeline (``safety-edge serve``) the file is saved and applies at the next start.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import ValidationError

from edge.config import GatewayConfig, LineConfig, ZoneConfig, config_from_mapping
from edge.errors import EdgeError
from edge.fsutil import write_atomic
from edge.kernels.geometry import (
    MAX_AREA_POINTS,
    MAX_LINE_POINTS,
    MIN_AREA_POINTS,
    check_polygon_in_image,
    validate_polygon,
)

__all__ = [
    "KEEP_BACKUPS",
    "MAX_LINE_POINTS",
    "MIN_LINE_POINTS",
    "MIN_POINTS",
    "ApplyLine",
    "ApplyZone",
    "Kind",
    "SaveResult",
    "ZoneEditError",
    "ZoneEditor",
    "edit_text",
    "validate_line_points",
    "validate_points",
]

log = logging.getLogger("edge.api.console")

MIN_POINTS = MIN_AREA_POINTS
MIN_LINE_POINTS = 2
"""A line's fewest points (:func:`edge.kernels.geometry.validate_polyline`)."""
KEEP_BACKUPS = 20

Kind = Literal["zone", "line"]

ApplyZone = Callable[[str, str, str, Sequence[tuple[float, float]], bool], None]
"""``(camera, task, zone, polygon, normalized)``: swap the polygon of a running zone."""
ApplyLine = Callable[[str, str, str, Sequence[tuple[float, float]], bool], None]
"""``(camera, task, line, points, normalized)``: move a running counting line."""

_SECTION: dict[Kind, tuple[str, str]] = {"zone": ("zones", "polygon"), "line": ("lines", "points")}
"""Per kind: the task's list it lives in and the key of its points."""


class ZoneEditError(EdgeError):
    """A zone or line edit was refused: bad points (4012/4013 like the fence API),
    unknown camera/task/zone/line, or the config file cannot be read or written (5000)."""

    code = 4012

    def __init__(self, message: str, *, code: int = 4012, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`ZoneEditor.save` / :meth:`ZoneEditor.save_line` did; ``points`` are
    the stored polygon or line (0-1 when ``normalized``, else pixels)."""

    path: Path | None
    backup: Path | None
    points: list[tuple[float, float]]
    normalized: bool
    applied: bool
    rewritten: bool
    message: str
    kind: Kind = "zone"

    @property
    def polygon(self) -> list[tuple[float, float]]:
        """The zone's stored polygon (= ``points``)."""
        return self.points

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "saved": self.path is not None,
            "kind": self.kind,
            "path": None if self.path is None else str(self.path),
            "backup": None if self.backup is None else str(self.backup),
            "points": [list(p) for p in self.points],
            "normalized": self.normalized,
            "applied": self.applied,
            "rewritten": self.rewritten,
            "message": self.message,
        }
        if self.kind == "zone":
            out["polygon"] = out["points"]
        return out


def _number_pairs(points: Any, width: int, height: int) -> list[tuple[float, float]]:
    """``points`` as ``[(x, y), ...]`` floats, or why not (the shared structural check)."""
    if width <= 0 or height <= 0:
        raise ZoneEditError("the frame size is unknown (no frame from this camera yet)")
    if not isinstance(points, list) or not all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in points
    ):
        raise ZoneEditError("points must be a list of [x, y] number pairs")
    return [(float(x), float(y)) for x, y in points]


def validate_points(points: Any, width: int, height: int) -> list[tuple[float, float]]:
    """The polygon as ``[(x, y), ...]`` pixels, or :class:`ZoneEditError` saying why not.

    Rules (the fence API's): a list of 4..9 ``[x, y]`` number pairs, simple (no
    self-intersection), non-zero area, every point within ``[0, width] x [0, height]``.
    """
    pts = _number_pairs(points, width, height)
    if not MIN_POINTS <= len(pts) <= MAX_AREA_POINTS:
        raise ZoneEditError(
            f"a zone needs {MIN_POINTS} to {MAX_AREA_POINTS} points, got {len(pts)}"
        )
    try:
        validate_polygon(np.asarray(pts, dtype=np.float64))
        check_polygon_in_image(pts, width, height)
    except EdgeError as exc:
        raise ZoneEditError(exc.details, code=exc.code) from None
    return pts


def _line_config(data: dict[str, Any]) -> LineConfig:
    """``LineConfig`` of ``data``, its first complaint as :class:`ZoneEditError`."""
    try:
        return LineConfig.model_validate(data)
    except ValidationError as exc:
        msg = str(exc.errors()[0]["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        raise ZoneEditError(msg) from None


def validate_line_points(
    points: Any, width: int, height: int, *, name: str = "line"
) -> list[tuple[float, float]]:
    """A counting line as ``[(x, y), ...]`` pixels, or :class:`ZoneEditError` saying why.

    Rules: ``[x, y]`` number pairs, then the config's own check of a line's points
    (:class:`edge.config.LineConfig`: 2 to :data:`MAX_LINE_POINTS` points once
    consecutive repeats are dropped, no crossing or touching itself), then every point
    within ``[0, width] x [0, height]`` (code 4013). The order is kept: it sets ``in``.
    """
    pts = _number_pairs(points, width, height)
    _line_config({"name": name, "points": pts, "normalized": False})
    for i, (x, y) in enumerate(pts):
        if not (0 <= x <= width and 0 <= y <= height):
            raise ZoneEditError(
                f"line point {i + 1} ({x:g}, {y:g}) lies outside the {width}x{height} image",
                code=4013,
            )
    return pts


def _num(v: float, decimals: int) -> str:
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _flow(points: Sequence[tuple[float, float]], decimals: int) -> str:
    return "[" + ", ".join(f"[{_num(x, decimals)}, {_num(y, decimals)}]" for x, y in points) + "]"


def _key(node: yaml.MappingNode, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == name:
            return k, v
    return None


def _find_item(
    root: yaml.Node, camera: str, task: str, section: str, item: str
) -> yaml.MappingNode | None:
    """The YAML node of ``cameras[name=camera].tasks[task][section][name=item]``."""
    if not isinstance(root, yaml.MappingNode):
        return None
    cams = _key(root, "cameras")
    if cams is None or not isinstance(cams[1], yaml.SequenceNode):
        return None
    for cam in cams[1].value:
        if not isinstance(cam, yaml.MappingNode):
            continue
        name = _key(cam, "name")
        if name is None or not isinstance(name[1], yaml.ScalarNode) or name[1].value != camera:
            continue
        tasks = _key(cam, "tasks")
        if tasks is None or not isinstance(tasks[1], yaml.MappingNode):
            return None
        t = _key(tasks[1], task)
        if t is None or not isinstance(t[1], yaml.MappingNode):
            return None
        items = _key(t[1], section)
        if items is None or not isinstance(items[1], yaml.SequenceNode):
            return None
        for z in items[1].value:
            if not isinstance(z, yaml.MappingNode):
                continue
            zn = _key(z, "name")
            if zn is not None and isinstance(zn[1], yaml.ScalarNode) and zn[1].value == item:
                return z
        return None
    return None


def _item_dict(data: Any, camera: str, task: str, section: str, item: str) -> dict[str, Any] | None:
    for cam in data.get("cameras") or []:
        if isinstance(cam, dict) and cam.get("name") == camera:
            t = (cam.get("tasks") or {}).get(task)
            if not isinstance(t, dict):
                return None
            for z in t.get(section) or []:
                if isinstance(z, dict) and z.get("name") == item:
                    return z
    return None


def _content_end(node: yaml.Node) -> int:
    """Where a node's own text ends: a block collection's end mark is the next token, so
    take its last item's end instead (keeping the comments and blank lines after it)."""
    if (
        isinstance(node, yaml.SequenceNode | yaml.MappingNode)
        and not node.flow_style
        and node.value
    ):
        last = node.value[-1]
        return _content_end(last[1] if isinstance(last, tuple) else last)
    return int(node.end_mark.index)


def edit_text(
    text: str,
    *,
    camera: str,
    task: str,
    zone: str,
    polygon_text: str,
    kind: Kind = "zone",
) -> tuple[str, bool]:
    """``text`` with the zone's polygon (``kind="line"``: the line named ``zone``'s
    points) set to ``polygon_text`` (a YAML flow sequence).

    Returns ``(new_text, rewritten)``: ``rewritten`` is true when the document had to be
    dumped again (comments lost) because an in-place edit could not be verified.

    Raises:
        ZoneEditError: the file is not YAML or has no such camera/task/zone (line).
    """
    section, field = _SECTION[kind]
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ZoneEditError(f"the config file is not valid YAML: {exc}", code=5000) from None
    if not isinstance(data, dict) or root is None:
        raise ZoneEditError("the config file is not a mapping", code=5000)
    want = _item_dict(data, camera, task, section, zone)
    node = _find_item(root, camera, task, section, zone)
    if want is None or node is None:
        raise ZoneEditError(
            f"no {kind} {zone!r} in task {task!r} of camera {camera!r} in the config file",
            code=4000,
            status=404,
        )
    want[field] = yaml.safe_load(polygon_text)
    new_text: str | None = None
    poly = _key(node, field)
    if poly is not None:
        v = poly[1]
        a = int(v.start_mark.index)
        if v.start_mark.line > poly[0].start_mark.line and (
            v.start_mark.column <= poly[0].start_mark.column
        ):
            # "polygon:\n- [x, y]" (a compact block sequence): a flow value must be
            # indented more than its key, so it goes right after the key instead.
            a, polygon_text = int(poly[0].end_mark.index), ": " + polygon_text
        new_text = text[:a] + polygon_text + text[_content_end(v) :]
    else:
        name = _key(node, "name")
        if name is not None:
            at = name[1].end_mark.index
            if node.flow_style:
                insert = f", {field}: " + polygon_text
            else:
                insert = "\n" + " " * name[0].start_mark.column + f"{field}: " + polygon_text
            new_text = text[:at] + insert + text[at:]
    if new_text is not None:
        try:
            if yaml.safe_load(new_text) == data:
                return new_text, False
        except yaml.YAMLError:
            pass
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), True


class ZoneEditor:
    """Validates, saves and applies zone and line edits (see the module docstring).

    Args:
        config: the running configuration (the console shows its zones and lines;
            updated here after each save).
        config_path: the YAML file the gateway was started from (``None``: edits are
            refused -- there is nowhere to save them).
        apply: the running pipeline's zone hook, or ``None`` (saved, applied at next start).
        apply_line: the running pipeline's line hook, or ``None`` (likewise).

    Thread-safety: saves are serialized by a lock.
    """

    def __init__(
        self,
        *,
        config: GatewayConfig,
        config_path: Path | None,
        apply: ApplyZone | None = None,
        apply_line: ApplyLine | None = None,
    ) -> None:
        self.config = config
        self.config_path = None if config_path is None else Path(config_path)
        self.apply = apply
        self.apply_line = apply_line
        self._lock = threading.Lock()

    def zone(self, camera: str, task: str, zone: str) -> ZoneConfig:
        """The zone's current config, or :class:`ZoneEditError` (404)."""
        got = self._item("zone", camera, task, zone)
        assert isinstance(got, ZoneConfig)
        return got

    def line(self, camera: str, task: str, line: str) -> LineConfig:
        """The counting line's current config, or :class:`ZoneEditError` (404)."""
        got = self._item("line", camera, task, line)
        assert isinstance(got, LineConfig)
        return got

    def _item(self, kind: Kind, camera: str, task: str, name: str) -> ZoneConfig | LineConfig:
        for cam in self.config.cameras:
            for t_kind, t in cam.tasks.items():
                if cam.name == camera and t_kind == task:
                    for item in t.zones if kind == "zone" else t.lines:
                        if item.name == name:
                            return item
        raise ZoneEditError(
            f"no {kind} {name!r} in task {task!r} of camera {camera!r}", code=4000, status=404
        )

    def save(
        self,
        *,
        camera: str,
        task: str,
        zone: str,
        points: Any,
        width: int,
        height: int,
        now: datetime | None = None,
    ) -> SaveResult:
        """Validate ``points`` (pixels of a ``width`` x ``height`` frame), save them as
        the zone's polygon and apply them (see the module docstring).

        Raises:
            ZoneEditError: invalid polygon, unknown zone, no config file, I/O failure.
        """
        pts = validate_points(points, width, height)
        with self._lock:
            current = self.zone(camera, task, zone)
            normalized = bool(current.normalized) and current.polygon is not None
            stored = _stored(pts, normalized, width, height)
            check = [(x * width, y * height) for x, y in stored] if normalized else stored
            validate_points([list(p) for p in check], width, height)  # rounding kept it simple
            new_zone = ZoneConfig.model_validate(
                {**current.model_dump(), "polygon": stored, "normalized": normalized}
            )
            return self._commit(
                "zone", camera, task, zone, stored, normalized, new_zone, self.apply, now
            )

    def save_line(
        self,
        *,
        camera: str,
        task: str,
        line: str,
        points: Any,
        width: int,
        height: int,
        now: datetime | None = None,
    ) -> SaveResult:
        """Validate ``points`` (pixels of a ``width`` x ``height`` frame, in order: they
        set ``in``/``out``), save them as the line's ``points`` and move the running line
        (its counts go on; see :meth:`edge.stream.lines.LineCounter.set_points`).

        Raises:
            ZoneEditError: invalid line, unknown line, no config file, I/O failure.
        """
        pts = validate_line_points(points, width, height, name=line)
        with self._lock:
            current = self.line(camera, task, line)
            normalized = bool(current.normalized)
            stored = _stored(pts, normalized, width, height)
            # The stored (rounded) form passes the config's own check, as the file will.
            new_line = _line_config(
                {**current.model_dump(), "points": stored, "normalized": normalized}
            )
            check = [(x * width, y * height) for x, y in stored] if normalized else stored
            validate_line_points([list(p) for p in check], width, height, name=line)
            return self._commit(
                "line", camera, task, line, stored, normalized, new_line, self.apply_line, now
            )

    def _commit(
        self,
        kind: Kind,
        camera: str,
        task: str,
        name: str,
        stored: list[tuple[float, float]],
        normalized: bool,
        new_item: ZoneConfig | LineConfig,
        apply: ApplyZone | ApplyLine | None,
        now: datetime | None,
    ) -> SaveResult:
        """Write ``stored`` into the file, update :attr:`config`, apply (lock held)."""
        if self.config_path is None:
            raise ZoneEditError(
                "the gateway was not started from a config file (safety-edge run "
                f"--config FILE): there is nowhere to save the {kind}",
                code=5000,
                status=409,
            )
        path, backup, rewritten = self._write(
            kind, camera, task, name, _flow(stored, 5 if normalized else 1), now
        )
        self.config = _with_item(self.config, camera, task, new_item)
        applied = False
        message = "saved"
        if apply is not None:
            try:
                apply(camera, task, name, stored, normalized)
                applied = True
                message = "saved and applied"
                if kind == "line":
                    message += " (its in/out counts go on)"
            except (EdgeError, KeyError, ValueError) as exc:
                message = f"saved; not applied to the running pipeline: {exc}"
                log.warning("%s %s/%s/%s: %s", kind, camera, task, name, message)
        else:
            message = "saved; applies when the gateway next starts"
        if rewritten:
            message += " (the file was rewritten: its comments were not kept; see the backup)"
        log.info(
            "%s %s/%s/%s %s set to %s by the console (%s; backup %s)",
            kind,
            camera,
            task,
            name,
            _SECTION[kind][1],
            stored,
            message,
            backup,
        )
        return SaveResult(
            path=path,
            backup=backup,
            points=stored,
            normalized=normalized,
            applied=applied,
            rewritten=rewritten,
            message=message,
            kind=kind,
        )

    def _write(
        self,
        kind: Kind,
        camera: str,
        task: str,
        name: str,
        points_text: str,
        now: datetime | None,
    ) -> tuple[Path, Path, bool]:
        assert self.config_path is not None
        path = self.config_path.resolve()
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode & 0o7777
        except OSError as exc:
            raise ZoneEditError(
                f"cannot read the config file {str(path)!r}: {exc.strerror or exc}",
                code=5000,
                status=500,
            ) from None
        new_text, rewritten = edit_text(
            text, camera=camera, task=task, zone=name, polygon_text=points_text, kind=kind
        )
        try:
            config_from_mapping(yaml.safe_load(new_text), source=f"config {str(path)!r}")
        except EdgeError as exc:
            raise ZoneEditError(
                f"the edited config would not be valid: {exc}", code=5000, status=500
            ) from None
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        try:
            shutil.copy2(path, backup)
            write_atomic(path, new_text.encode("utf-8"), mode=mode)
        except OSError as exc:  # write_atomic removed its temporary file
            raise ZoneEditError(
                f"cannot write the config file {str(path)!r}: {exc.strerror or exc}",
                code=5000,
                status=500,
            ) from None
        self._prune_backups(path)
        return path, backup, rewritten

    @staticmethod
    def _prune_backups(path: Path) -> None:
        backups = sorted(path.parent.glob(f"{path.name}.bak-*"))
        for old in backups[:-KEEP_BACKUPS]:
            try:
                old.unlink()
            except OSError as exc:
                log.warning("cannot delete old config backup %s: %s", old, exc)


def _stored(
    pts: Sequence[tuple[float, float]], normalized: bool, width: int, height: int
) -> list[tuple[float, float]]:
    """Pixels -> the stored form: 0-1 with 5 decimals (normalized), else 1-decimal pixels."""
    if normalized:
        return [(round(x / width, 5), round(y / height, 5)) for x, y in pts]
    return [(round(x, 1), round(y, 1)) for x, y in pts]


def _with_item(
    config: GatewayConfig, camera: str, task: str, item: ZoneConfig | LineConfig
) -> GatewayConfig:
    """``config`` with the zone (or line) of that name in the camera's task replaced."""
    key = "zones" if isinstance(item, ZoneConfig) else "lines"
    cameras = []
    for cam in config.cameras:
        if cam.name == camera:
            tasks = dict(cam.tasks)
            t = tasks[task]  # type: ignore[index]
            items = [item if z.name == item.name else z for z in getattr(t, key)]
            tasks[task] = t.model_copy(update={key: items})  # type: ignore[index]
            cam = cam.model_copy(update={"tasks": tasks})
        cameras.append(cam)
    return config.model_copy(update={"cameras": cameras})
