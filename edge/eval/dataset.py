"""Read a YOLO / Ultralytics data set: ``data.yaml``, image lists and label files.

``data.yaml`` keys used (others are ignored)::

    path: .              # data set root; relative paths resolve against the YAML's folder
                         #   (unlike Ultralytics, which uses its datasets_dir or the cwd);
                         #   absent = the YAML's folder
    train: images/train  # per split: a folder of images, a .txt list of image paths, or a
    val: images/val      #   list of those; relative to the root
    nc: 5                # optional; must equal the number of names when given
    names: {0: none, 1: red}   # or a list [none, red]

Labels follow the Ultralytics rule: the label file of ``.../images/<rest>/<stem>.<ext>`` is
``.../labels/<rest>/<stem>.txt`` (the last ``images`` path component is replaced). Each line
is ``class cx cy w h`` normalised to 0..1, or a segment ``class x1 y1 x2 y2 ...`` (turned into
its bounding box). A missing label file means an image with no boxes (background).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from edge.errors import ConfigError

__all__ = [
    "IMAGE_SUFFIXES",
    "DataConfig",
    "DatasetError",
    "Labels",
    "Sample",
    "label_path_for",
    "load_data_config",
    "merge_data_configs",
    "read_labels",
]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


class DatasetError(ConfigError):
    """A data set YAML, image list or label file is missing or malformed (code 5000)."""


@dataclass(frozen=True)
class Labels:
    """Ground truth of one image, normalised.

    Attributes:
        class_ids: (G,) int32 data set class ids.
        cxcywh: (G, 4) float32 box centre and size, normalised to 0..1 of the image.
    """

    class_ids: npt.NDArray[np.int32]
    cxcywh: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    def xyxy(self, width: int, height: int) -> npt.NDArray[np.float32]:
        """(G, 4) float32 boxes in pixels ``x1, y1, x2, y2`` of a ``width x height`` image."""
        b = self.cxcywh.astype(np.float64)
        half = b[:, 2:] / 2.0
        xyxy = np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)
        xyxy *= np.array([width, height, width, height], dtype=np.float64)
        return xyxy.astype(np.float32)


@dataclass(frozen=True)
class Sample:
    """One image of a split and the label file that belongs to it (which may not exist)."""

    image_path: Path
    label_path: Path

    def labels(self, num_classes: int | None = None) -> Labels:
        """:func:`read_labels` of :attr:`label_path`."""
        return read_labels(self.label_path, num_classes=num_classes)


def label_path_for(image_path: Path) -> Path:
    """Ultralytics rule: replace the last ``images`` folder by ``labels``, suffix ``.txt``.

    Raises:
        DatasetError: no ``images`` folder in the path.
    """
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    raise DatasetError(
        f"image {image_path} is not under an 'images' folder, so its label file cannot be "
        "found (YOLO layout: images/<split>/x.jpg <-> labels/<split>/x.txt)"
    )


def read_labels(path: Path, *, num_classes: int | None = None) -> Labels:
    """Parse one YOLO label file (missing file = no boxes).

    Raises:
        DatasetError: a line is not ``class cx cy w h`` / a segment, a class id is not an
            integer in ``[0, num_classes)``, a value is not finite, or a box has ``w`` or
            ``h`` <= 0 (the message names file and line).
    """
    if not path.is_file():
        return Labels(np.zeros(0, np.int32), np.zeros((0, 4), np.float32))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"label file {path}: cannot read: {exc}") from exc
    ids: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"label file {path} line {n}"
        if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
            raise DatasetError(
                f"{where}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 ...', "
                f"got {len(fields)} fields"
            )
        try:
            cls_f = float(fields[0])
            vals = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError as exc:
            raise DatasetError(f"{where}: not a number ({exc})") from exc
        if not cls_f.is_integer() or cls_f < 0:
            raise DatasetError(f"{where}: class id {fields[0]!r} is not an integer >= 0")
        cls = int(cls_f)
        if num_classes is not None and cls >= num_classes:
            raise DatasetError(f"{where}: class id {cls} not in [0, {num_classes})")
        if not np.isfinite(vals).all():
            raise DatasetError(f"{where}: non-finite coordinate")
        if vals.size == 4:
            cx, cy, w, h = (float(v) for v in vals)
        else:  # segment -> bounding box
            xs, ys = vals[0::2], vals[1::2]
            x1, x2, y1, y2 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: box width and height must be > 0")
        ids.append(cls)
        boxes.append((cx, cy, w, h))
    return Labels(
        np.asarray(ids, dtype=np.int32).reshape(-1),
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
    )


def _names(raw: Any, nc: Any, where: str) -> list[str]:
    if isinstance(raw, Mapping):
        try:
            keyed = {int(k): str(v) for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: 'names' keys must be integers") from exc
        if sorted(keyed) != list(range(len(keyed))):
            raise DatasetError(f"{where}: 'names' ids must be 0..{len(keyed) - 1} without gaps")
        names = [keyed[i] for i in range(len(keyed))]
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        names = [str(v) for v in raw]
    else:
        raise DatasetError(f"{where}: 'names' must be a mapping id -> name or a list")
    if not names:
        raise DatasetError(f"{where}: 'names' is empty")
    if len(set(names)) != len(names):
        raise DatasetError(f"{where}: duplicate class names {names}")
    if nc is not None and nc != len(names):
        raise DatasetError(f"{where}: nc is {nc} but {len(names)} names are given")
    return names


@dataclass(frozen=True)
class DataConfig:
    """A parsed ``data.yaml``.

    Attributes:
        yaml_path: the YAML file (absolute).
        root: the data set root (``path`` resolved against the YAML's folder).
        class_names: class names in id order.
        splits: split name -> the raw entries (paths relative to ``root`` or absolute).
    """

    yaml_path: Path
    root: Path
    class_names: tuple[str, ...]
    splits: Mapping[str, tuple[str, ...]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def samples(self, split: str) -> list[Sample]:
        """The images of ``split`` in sorted path order, with their label paths.

        Raises:
            DatasetError: unknown split, a listed folder/file is missing, or no images.
        """
        if split not in self.splits:
            raise DatasetError(
                f"data set {self.yaml_path}: no split {split!r} "
                f"(has: {', '.join(sorted(self.splits)) or 'none'})"
            )
        images: list[Path] = []
        for entry in self.splits[split]:
            images.extend(self._expand(entry))
        images = sorted(set(images))
        if not images:
            raise DatasetError(f"data set {self.yaml_path}: split {split!r} has no images")
        return [Sample(p, label_path_for(p)) for p in images]

    def _expand(self, entry: str) -> Iterator[Path]:
        p = Path(entry)
        p = p if p.is_absolute() else self.root / p
        if p.is_dir():
            yield from (
                f.resolve()
                for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
            )
        elif p.is_file() and p.suffix.lower() == ".txt":
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(
                    f"data set {self.yaml_path}: image list {p}: cannot read: {exc}"
                ) from exc
            for line in text.splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    yield (q if q.is_absolute() else p.parent / q).resolve()
        else:
            raise DatasetError(
                f"data set {self.yaml_path}: split entry {entry!r} -> {p} is not a folder or "
                ".txt image list"
            )


def load_data_config(path: str | Path) -> DataConfig:
    """Parse and check a ``data.yaml`` (see the module docstring).

    Raises:
        DatasetError: missing/unreadable file, invalid YAML, no ``names``, a bad ``nc``.
    """
    p = Path(path).resolve()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"data set YAML {p}: cannot read: {exc}") from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"data set YAML {p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"data set YAML {p}: expected a mapping")
    if "names" not in data:
        raise DatasetError(f"data set YAML {p}: missing 'names'")
    names = _names(data["names"], data.get("nc"), f"data set YAML {p}")
    raw_root = data.get("path")
    root = p.parent if raw_root in (None, "") else Path(str(raw_root))
    if not root.is_absolute():
        root = p.parent / root
    splits: dict[str, tuple[str, ...]] = {}
    for key in ("train", "val", "test"):
        v = data.get(key)
        if v is None or v == "":
            continue
        if isinstance(v, str):
            splits[key] = (v,)
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            splits[key] = tuple(v)
        else:
            raise DatasetError(f"data set YAML {p}: {key!r} must be a path or list of paths")
    return DataConfig(yaml_path=p, root=root.resolve(), class_names=tuple(names), splits=splits)


def merge_data_configs(configs: Sequence[DataConfig], split: str) -> DataConfig:
    """Several data sets with the same class names as one: each split lists every set's
    entries (as absolute paths); the first set's YAML and root name the result.

    Raises:
        DatasetError: no data set, class names that differ, or a set without ``split``
            (or with no images in it: each set must contribute).
    """
    if not configs:
        raise DatasetError("no data set given")
    first = configs[0]
    if len(configs) == 1:
        return first
    splits: dict[str, list[str]] = {}
    for c in configs:
        if c.class_names != first.class_names:
            raise DatasetError(
                f"data sets {first.yaml_path} and {c.yaml_path} have different classes: "
                f"{list(first.class_names)} vs {list(c.class_names)}"
            )
        c.samples(split)  # raises when the split is missing or empty
        for name, entries in c.splits.items():
            splits.setdefault(name, []).extend(
                str(Path(e) if Path(e).is_absolute() else c.root / e) for e in entries
            )
    return DataConfig(
        yaml_path=first.yaml_path,
        root=first.root,
        class_names=first.class_names,
        splits={k: tuple(v) for k, v in splits.items()},
    )
