"""Model manifests: one YAML file per ONNX model, validated into :class:`ModelManifest`.

Models are data. A user drops ``models/<name>.onnx`` plus ``models/<name>.yaml`` into the
models folder and the detector runs it without code changes. Every ``models/*.yaml`` is
taken for a manifest; one that does not validate (a misspelt key, or a stray YAML that is
no manifest, e.g. an Ultralytics ``data.yaml``) is reported by :func:`scan_models` with its
file name and skipped: the other models in the folder still load.

Manifest schema (YAML; unknown keys are rejected)::

    name: person_vehicle           # required, [A-Za-z0-9][A-Za-z0-9_.-]*, unique in the folder
    file: person_vehicle.onnx      # required, ONNX file, relative to this YAML (or absolute)
    sha256: 3f1c...                # required, 64 hex digits of the ONNX file
    family: yolov3                 # required: yolov3 | yolov5 | yolov8 | yolo11 | yolox | ssd
    input_size: [416, 416]         # required, network input [width, height] in pixels
    input_name: images             # optional, default: the model's only input
    output_names: [out13, out26]   # optional, order in which the decoder takes the outputs;
                                   #   default: the model's output order
    channel_order: rgb             # rgb | bgr (order the network expects), default rgb
    scale: 0.00392156862745098     # pixel multiplier, default 1/255
    mean: [0.0, 0.0, 0.0]          # per channel, in network channel order, default 0
    std: [1.0, 1.0, 1.0]           # per channel, > 0, default 1
                                   #   network value = (pixel * scale - mean) / std
    letterbox: true                # true: keep aspect, pad; false: plain resize; default true
    pad_position: center           # center | top_left (YOLOX pads bottom/right), default center
    pad_value: 127.5               # border pixel value in 0..255 (before scale/mean/std),
                                   #   default 114 (Ultralytics/YOLOX); Darknet uses 127.5
    dtype: auto                    # auto | float32 | float16 input tensor; auto reads the model
    class_names: [person, bicycle, car, motorcycle, bus, truck]   # required, unique
    anchors:                       # yolov3 only (required there): per output, in the order of
      - [[81, 82], [135, 169], [344, 319]]   #   the outputs, anchor [w, h] in input pixels
      - [[10, 14], [23, 27], [37, 58]]
    strides: [8, 16, 32]           # yolox only, default [8, 16, 32]
    decoded: false                 # yolox only: true when the export already decoded boxes
    box_format: xyxy               # ssd only: xyxy | yxyx, default xyxy
    box_normalized: true           # ssd only: boxes in 0..1 of the input size, default true
    has_background: false          # ssd only: score column 0 is background, default false
    score_threshold: 0.25          # default thresholds, overridable per call
    iou_threshold: 0.45
    max_detections: 300            # kept after NMS
    licence: "weights: ... ; code: ..."   # required, free text
    source: "https://..."          # required, where the weights came from
    produced_by: "tools/convert_darknet.py ..."   # how the ONNX file was made, default ""
    description: ""                # free text, default ""

Output tensors per family (batch 1), all decoded in network-input pixels:

- ``yolov3``: one raw head per anchor group, ``(1, A*(5+C), H, W)`` Darknet logits.
- ``yolov5``: ``(1, N, 5+C)`` = cx, cy, w, h, objectness, class scores (already sigmoid).
- ``yolov8`` / ``yolo11``: ``(1, 4+C, N)`` = cx, cy, w, h, class scores (no objectness).
- ``yolox``: ``(1, N, 5+C)`` raw grid offsets (``decoded: false``) or decoded boxes.
- ``ssd``: boxes ``(1, N, 4)`` and scores ``(1, N, C)`` (``C+1`` with background).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.errors import ModelError

__all__ = [
    "NOT_A_MANIFEST",
    "Family",
    "ManifestProblem",
    "ModelManifest",
    "ModelScan",
    "discover_models",
    "file_sha256",
    "load_manifest",
    "scan_models",
    "sha256_ok",
]

logger = logging.getLogger("edge.runtime")

Family = Literal["yolov3", "yolov5", "yolov8", "yolo11", "yolox", "ssd"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")

_FAMILY_ONLY: dict[str, tuple[str, ...]] = {
    "anchors": ("yolov3",),
    "strides": ("yolox",),
    "decoded": ("yolox",),
    "box_format": ("ssd",),
    "box_normalized": ("ssd",),
    "has_background": ("ssd",),
}


class ModelManifest(BaseModel):
    """A validated model manifest (see the module docstring for the YAML schema).

    Instances are immutable. :attr:`model_path` resolves ``file`` against the folder of the
    YAML file the manifest was loaded from (:func:`load_manifest`), or against the current
    directory for a manifest built in code without :meth:`with_manifest_path`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    file: str
    sha256: str
    family: Family
    input_size: tuple[int, int] = Field(description="network input (width, height) in pixels")
    input_name: str | None = None
    output_names: list[str] | None = None
    channel_order: Literal["rgb", "bgr"] = "rgb"
    scale: float = Field(default=1.0 / 255.0, gt=0.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    letterbox: bool = True
    pad_position: Literal["center", "top_left"] = "center"
    pad_value: float = Field(default=114.0, ge=0.0, le=255.0)
    dtype: Literal["auto", "float32", "float16"] = "auto"
    class_names: list[str]
    anchors: list[list[tuple[float, float]]] | None = None
    strides: list[int] | None = None
    decoded: bool = False
    box_format: Literal["xyxy", "yxyx"] = "xyxy"
    box_normalized: bool = True
    has_background: bool = False
    score_threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0)
    max_detections: int = Field(default=300, ge=1)
    licence: str
    source: str
    produced_by: str = ""
    description: str = ""

    _manifest_path: Path | None = PrivateAttr(default=None)

    # -- field checks -------------------------------------------------------------
    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must match [A-Za-z0-9][A-Za-z0-9_.-]*")
        return v

    @field_validator("file")
    @classmethod
    def _check_file(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("sha256")
    @classmethod
    def _check_sha(cls, v: str) -> str:
        if not _SHA_RE.match(v):
            raise ValueError("must be 64 hex digits")
        return v.lower()

    @field_validator("input_size")
    @classmethod
    def _check_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1 or v[1] < 1:
            raise ValueError("width and height must be >= 1")
        return v

    @field_validator("std")
    @classmethod
    def _check_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0.0 for s in v):
            raise ValueError("every std must be > 0")
        return v

    @field_validator("class_names")
    @classmethod
    def _check_classes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one class name is required")
        if any(not c.strip() for c in v):
            raise ValueError("class names must not be blank")
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"duplicate class names: {dup}")
        return v

    @field_validator("anchors")
    @classmethod
    def _check_anchors(
        cls, v: list[list[tuple[float, float]]] | None
    ) -> list[list[tuple[float, float]]] | None:
        if v is None:
            return v
        if not v or any(not head for head in v):
            raise ValueError("need at least one output with at least one anchor")
        if any(w <= 0 or h <= 0 for head in v for w, h in head):
            raise ValueError("anchor sizes must be > 0")
        return v

    @field_validator("strides")
    @classmethod
    def _check_strides(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(s < 1 for s in v)):
            raise ValueError("strides must be a non-empty list of integers >= 1")
        return v

    @model_validator(mode="after")
    def _check_family_fields(self) -> ModelManifest:
        for key, families in _FAMILY_ONLY.items():
            if key in self.model_fields_set and self.family not in families:
                raise ValueError(
                    f"{key!r} only applies to family {' / '.join(families)}, not {self.family!r}"
                )
        if self.family == "yolov3" and self.anchors is None:
            raise ValueError("family 'yolov3' requires 'anchors' (per output, input pixels)")
        return self

    # -- derived values -----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def yolox_strides(self) -> list[int]:
        """Strides for the YOLOX grid decode (``[8, 16, 32]`` unless the manifest says)."""
        return list(self.strides) if self.strides is not None else [8, 16, 32]

    @property
    def manifest_path(self) -> Path | None:
        """The YAML file this manifest was loaded from, if any."""
        return self._manifest_path

    @property
    def model_path(self) -> Path:
        """Absolute path of the ONNX file (``file`` resolved against the manifest folder)."""
        p = Path(self.file)
        if not p.is_absolute():
            base = self._manifest_path.parent if self._manifest_path is not None else Path.cwd()
            p = base / p
        return p.resolve()

    def with_manifest_path(self, path: str | Path) -> ModelManifest:
        """A copy whose relative ``file`` resolves against ``path``'s folder."""
        copy = self.model_copy()
        copy._manifest_path = Path(path).resolve()
        return copy


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(manifest)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


NOT_A_MANIFEST = "not a model manifest (no 'family'/'file' keys): move it out of the models folder"
"""The problem text of a YAML file in the models folder that is no manifest at all."""


def _read_manifest_data(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model manifest {p}: cannot read: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"model manifest {p}: invalid YAML: {exc}") from exc


def _manifest_from_data(p: Path, data: Any) -> ModelManifest:
    if not isinstance(data, dict):
        raise ModelError(
            f"model manifest {p}: expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ModelError(f"model manifest {p}: {_format_validation_error(exc)}") from exc
    return manifest.with_manifest_path(p)


def load_manifest(path: str | Path) -> ModelManifest:
    """Read and validate one manifest YAML file.

    Raises:
        ModelError: the file is missing or unreadable, is not valid YAML, is not a mapping,
            or a field is missing, unknown or invalid (the message names every bad field).
    """
    p = Path(path)
    return _manifest_from_data(p, _read_manifest_data(p))


@dataclass(frozen=True, kw_only=True)
class ManifestProblem:
    """A YAML file in the models folder that gives no usable manifest.

    Attributes:
        path: the file.
        message: what is wrong, naming the file (and every bad field).
        name: the model name the file declares (``name:``), ``None`` when it declares none
            readable; lets a task that wants that model say why it is off.
    """

    path: Path
    message: str
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelScan:
    """What :func:`scan_models` found: the valid manifests by name, and the bad files."""

    manifests: dict[str, ModelManifest]
    problems: list[ManifestProblem]

    def problem_for(self, name: str) -> ManifestProblem | None:
        """The problem of the file that declares model ``name`` (``None``: none does)."""
        for p in self.problems:
            if p.name == name:
                return p
        return None

    def summary(self) -> str:
        """One line naming every bad file with its problem (``""`` when there is none)."""
        return "; ".join(p.message for p in self.problems)


def scan_models(models_dir: str | Path) -> ModelScan:
    """Load every ``*.yaml`` / ``*.yml`` in ``models_dir`` (not recursive), keyed by
    ``name``, and report each file that gives no usable manifest instead of failing for
    the whole folder: invalid YAML, a mapping without both ``family`` and ``file`` (no
    manifest at all, e.g. a training ``data.yaml``: :data:`NOT_A_MANIFEST`), a missing,
    unknown or invalid field, or a name two files declare (both are left out: which one
    was meant is unknown).

    A manifest whose ONNX file is missing is still returned (the detector reports it when
    loading); check :func:`sha256_ok` to list usable models.

    Raises:
        ModelError: the folder does not exist or is a file.
    """
    d = Path(models_dir)
    if not d.is_dir():
        why = "is not a folder" if d.exists() else "does not exist"
        raise ModelError(f"models folder {d} {why}")
    found: dict[str, ModelManifest] = {}
    problems: list[ManifestProblem] = []
    dup: dict[str, list[Path]] = {}
    for path in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
        declared: str | None = None
        try:
            data = _read_manifest_data(path)
            if isinstance(data, dict):
                raw = data.get("name")
                declared = raw if isinstance(raw, str) else None
                if "family" not in data and "file" not in data:
                    raise ModelError(f"{path}: {NOT_A_MANIFEST}")
            m = _manifest_from_data(path, data)
        except ModelError as exc:
            problems.append(ManifestProblem(path=path, message=exc.details, name=declared))
            continue
        if m.name in found or m.name in dup:
            first = found.pop(m.name, None)
            paths = dup.setdefault(m.name, [])
            if first is not None and first.manifest_path is not None:
                paths.append(first.manifest_path)
            paths.append(path)
            continue
        found[m.name] = m
    for name, paths in dup.items():
        files = " and ".join(str(p) for p in paths)
        for p in paths:
            problems.append(
                ManifestProblem(
                    path=p,
                    message=f"model name {name!r} is declared by both {files} (neither is "
                    "loaded: rename one)",
                    name=name,
                )
            )
    problems.sort(key=lambda p: str(p.path))
    return ModelScan(manifests=found, problems=problems)


def discover_models(models_dir: str | Path) -> dict[str, ModelManifest]:
    """The valid manifests of :func:`scan_models`, keyed by ``name``; each bad file is
    logged as an ERROR naming it (use :func:`scan_models` to get them).

    Raises:
        ModelError: the folder does not exist or is a file.
    """
    scan = scan_models(models_dir)
    for p in scan.problems:
        logger.error("models: %s", p.message)
    return scan.manifests


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_ok(manifest: ModelManifest) -> bool | None:
    """``True`` when the ONNX file matches ``manifest.sha256``, ``False`` when it differs,
    ``None`` when the file does not exist."""
    path = manifest.model_path
    if not path.is_file():
        return None
    return file_sha256(path) == manifest.sha256
