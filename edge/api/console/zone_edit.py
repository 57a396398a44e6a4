"""Zone edits from the console: validate a polygon, save it into ``gateway.yaml`` (with a
backup of the previous file) and apply it to the running pipeline.

Validation is the fence API's rule for ``area``: 4 to 9 points
(:data:`~edge.kernels.geometry.MIN_AREA_POINTS`, :data:`~edge.kernels.geometry.MAX_AREA_POINTS`),
a simple polygon with non-zero area (:func:`edge.kernels.geometry.validate_polygon`), every
point inside the frame
(:func:`edge.kernels.geometry.check_polygon_in_image`). The editor's JavaScript mirrors
these rules; the server's check is the one that counts.

Saving edits the YAML text in place: only the zone's ``polygon`` value is replaced (or
a ``polygon:`` line inserted after its ``name``), so comments, key order and
``${VAR}`` references elsewhere in the file stay as they were. The result is parsed
again and must equal the old document with only that polygon changed, and pass the
full config validation; when the in-place edit cannot guarantee that (an unusual
layout), the whole document is written out again instead (comments are then lost;
``rewritten`` says so). In every case the previous file is first copied to
``<file>.bak-<UTC time>`` (the newest :data:`KEEP_BACKUPS` are kept) and the new one
replaces it atomically (temporary file, ``fsync``, rename), keeping its permissions.

The polygon keeps the zone's coordinate form: a ``normalized`` zone gets 0-1
coordinates (5 decimals), others pixels (1 decimal).

Applying: the service layer's hook (:class:`~edge.api.console.backend.CameraBackend`
``apply_zone``) swaps the polygon in the running zone monitor; without a running
pipeline (``safety-edge serve``) the file is saved and applies at the next start.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.config import GatewayConfig, ZoneConfig, config_from_mapping
from edge.errors import EdgeError
from edge.kernels.geometry import (
    MAX_AREA_POINTS,
    MIN_AREA_POINTS,
    check_polygon_in_image,
    validate_polygon,
)

__all__ = [
    "KEEP_BACKUPS",
    "MIN_POINTS",
    "ApplyZone",
    "SaveResult",
    "ZoneEditError",
    "ZoneEditor",
    "validate_points",
]

log = logging.getLogger("edge.api.console")

MIN_POINTS = MIN_AREA_POINTS
KEEP_BACKUPS = 20

ApplyZone = Callable[[str, str, str, Sequence[tuple[float, float]], bool], None]
"""``(camera, task, zone, polygon, normalized)``: swap the polygon of a running zone."""


class ZoneEditError(EdgeError):
    """A zone edit was refused: bad polygon (4012/4013 like the fence API), unknown
    camera/task/zone, or the config file cannot be read or written (5000)."""

    code = 4012

    def __init__(self, message: str, *, code: int = 4012, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`ZoneEditor.save` did."""

    path: Path | None
    backup: Path | None
    polygon: list[tuple[float, float]]
    normalized: bool
    applied: bool
    rewritten: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "saved": self.path is not None,
            "path": None if self.path is None else str(self.path),
            "backup": None if self.backup is None else str(self.backup),
            "polygon": [list(p) for p in self.polygon],
            "normalized": self.normalized,
            "applied": self.applied,
            "rewritten": self.rewritten,
            "message": self.message,
        }


def validate_points(points: Any, width: int, height: int) -> list[tuple[float, float]]:
    """The polygon as ``[(x, y), ...]`` pixels, or :class:`ZoneEditError` saying why not.

    Rules (the fence API's): a list of 4..9 ``[x, y]`` number pairs, simple (no
    self-intersection), non-zero area, every point within ``[0, width] x [0, height]``.
    """
    if width <= 0 or height <= 0:
        raise ZoneEditError("the frame size is unknown (no frame from this camera yet)")
    if not isinstance(points, list) or not all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in points
    ):
        raise ZoneEditError("points must be a list of [x, y] number pairs")
    if not MIN_POINTS <= len(points) <= MAX_AREA_POINTS:
        raise ZoneEditError(
            f"a zone needs {MIN_POINTS} to {MAX_AREA_POINTS} points, got {len(points)}"
        )
    pts = [(float(x), float(y)) for x, y in points]
    try:
        validate_polygon(np.asarray(pts, dtype=np.float64))
        check_polygon_in_image(pts, width, height)
    except EdgeError as exc:
        raise ZoneEditError(exc.details, code=exc.code) from None
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


def _find_zone(root: yaml.Node, camera: str, task: str, zone: str) -> yaml.MappingNode | None:
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
        zones = _key(t[1], "zones")
        if zones is None or not isinstance(zones[1], yaml.SequenceNode):
            return None
        for z in zones[1].value:
            if not isinstance(z, yaml.MappingNode):
                continue
            zn = _key(z, "name")
            if zn is not None and isinstance(zn[1], yaml.ScalarNode) and zn[1].value == zone:
                return z
        return None
    return None


def _zone_dict(data: Any, camera: str, task: str, zone: str) -> dict[str, Any] | None:
    for cam in data.get("cameras") or []:
        if isinstance(cam, dict) and cam.get("name") == camera:
            t = (cam.get("tasks") or {}).get(task)
            if not isinstance(t, dict):
                return None
            for z in t.get("zones") or []:
                if isinstance(z, dict) and z.get("name") == zone:
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
    text: str, *, camera: str, task: str, zone: str, polygon_text: str
) -> tuple[str, bool]:
    """``text`` with the zone's polygon set to ``polygon_text`` (a YAML flow sequence).

    Returns ``(new_text, rewritten)``: ``rewritten`` is true when the document had to be
    dumped again (comments lost) because an in-place edit could not be verified.

    Raises:
        ZoneEditError: the file is not YAML or has no such camera/task/zone.
    """
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ZoneEditError(f"the config file is not valid YAML: {exc}", code=5000) from None
    if not isinstance(data, dict) or root is None:
        raise ZoneEditError("the config file is not a mapping", code=5000)
    want = _zone_dict(data, camera, task, zone)
    node = _find_zone(root, camera, task, zone)
    if want is None or node is None:
        raise ZoneEditError(
            f"no zone {zone!r} in task {task!r} of camera {camera!r} in the config file",
            code=4000,
            status=404,
        )
    want["polygon"] = yaml.safe_load(polygon_text)
    new_text: str | None = None
    poly = _key(node, "polygon")
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
                insert = ", polygon: " + polygon_text
            else:
                insert = "\n" + " " * name[0].start_mark.column + "polygon: " + polygon_text
            new_text = text[:at] + insert + text[at:]
    if new_text is not None:
        try:
            if yaml.safe_load(new_text) == data:
                return new_text, False
        except yaml.YAMLError:
            pass
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), True


class ZoneEditor:
    """Validates, saves and applies zone edits (see the module docstring).

    Args:
        config: the running configuration (the console shows its zones; updated here
            after each save).
        config_path: the YAML file the gateway was started from (``None``: edits are
            refused -- there is nowhere to save them).
        apply: the running pipeline's hook, or ``None`` (saved, applied at next start).

    Thread-safety: saves are serialized by a lock.
    """

    def __init__(
        self,
        *,
        config: GatewayConfig,
        config_path: Path | None,
        apply: ApplyZone | None = None,
    ) -> None:
        self.config = config
        self.config_path = None if config_path is None else Path(config_path)
        self.apply = apply
        self._lock = threading.Lock()

    def zone(self, camera: str, task: str, zone: str) -> ZoneConfig:
        """The zone's current config, or :class:`ZoneEditError` (404)."""
        for cam in self.config.cameras:
            for kind, t in cam.tasks.items():
                if cam.name == camera and kind == task:
                    for z in t.zones:
                        if z.name == zone:
                            return z
        raise ZoneEditError(
            f"no zone {zone!r} in task {task!r} of camera {camera!r}", code=4000, status=404
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
            if normalized:
                stored = [(round(x / width, 5), round(y / height, 5)) for x, y in pts]
            else:
                stored = [(round(x, 1), round(y, 1)) for x, y in pts]
            check = [(x * width, y * height) for x, y in stored] if normalized else stored
            validate_points([list(p) for p in check], width, height)  # rounding kept it simple
            if self.config_path is None:
                raise ZoneEditError(
                    "the gateway was not started from a config file (safety-edge run "
                    "--config FILE): there is nowhere to save the zone",
                    code=5000,
                    status=409,
                )
            path, backup, rewritten = self._write(
                camera, task, zone, _flow(stored, 5 if normalized else 1), now
            )
            new_zone = ZoneConfig.model_validate(
                {**current.model_dump(), "polygon": stored, "normalized": normalized}
            )
            self.config = _with_zone(self.config, camera, task, new_zone)
            applied = False
            message = "saved"
            if self.apply is not None:
                try:
                    self.apply(camera, task, zone, stored, normalized)
                    applied = True
                    message = "saved and applied"
                except (EdgeError, KeyError, ValueError) as exc:
                    message = f"saved; not applied to the running pipeline: {exc}"
                    log.warning("zone %s/%s/%s: %s", camera, task, zone, message)
            else:
                message = "saved; applies when the gateway next starts"
            if rewritten:
                message += " (the file was rewritten: its comments were not kept; see the backup)"
            log.info(
                "zone %s/%s/%s polygon set to %s by the console (%s; backup %s)",
                camera,
                task,
                zone,
                stored,
                message,
                backup,
            )
            return SaveResult(
                path=path,
                backup=backup,
                polygon=stored,
                normalized=normalized,
                applied=applied,
                rewritten=rewritten,
                message=message,
            )

    def _write(
        self, camera: str, task: str, zone: str, polygon_text: str, now: datetime | None
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
            text, camera=camera, task=task, zone=zone, polygon_text=polygon_text
        )
        try:
            config_from_mapping(yaml.safe_load(new_text), source=f"config {str(path)!r}")
        except EdgeError as exc:
            raise ZoneEditError(
                f"the edited config would not be valid: {exc}", code=5000, status=500
            ) from None
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            shutil.copy2(path, backup)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new_text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                log.debug("could not remove %s", tmp)
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


def _with_zone(config: GatewayConfig, camera: str, task: str, zone: ZoneConfig) -> GatewayConfig:
    cameras = []
    for cam in config.cameras:
        if cam.name == camera:
            tasks = dict(cam.tasks)
            t = tasks[task]  # type: ignore[index]
            zones = [zone if z.name == zone.name else z for z in t.zones]
            tasks[task] = t.model_copy(update={"zones": zones})  # type: ignore[index]
            cam = cam.model_copy(update={"tasks": tasks})
        cameras.append(cam)
    return config.model_copy(update={"cameras": cameras})
