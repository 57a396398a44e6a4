"""The built default detector (models/person_vehicle.onnx) on real photos, hand-labelled.

Boxes below were drawn by hand on the images (pixel corners x1, y1, x2, y2 of the
original image), not copied from the model's output. ``clear`` people must each be
found with IoU >= 0.5; ``partial`` ones (overlapping, occluded, back-turned, cut by the
frame) may or may not be, so the person count must lie in
``[len(clear), len(clear) + len(partial) + 1]`` (one spare for a duplicate/false box).

Runs through the project's :class:`~edge.runtime.detector.Detector` (letterbox,
onnxruntime on CPU, YOLOv3 decode, NMS), so it checks the converter, the manifest
(anchors, masks, channel order, pad value) and the runtime together: the manifest's
anchor mask fix alone moves the IoU of stride-16 boxes from ~0.3 to > 0.5.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.runtime.detector import Detector
from edge.runtime.registry import load_manifest
from edge.types import Detections

REPO = Path(__file__).resolve().parents[1]
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
SCORE, IOU_NMS = 0.25, 0.45
VEHICLES = ("car", "truck", "bus")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Labelled:
    """One hand-labelled photo."""

    name: str
    clear: list[Box]
    partial: list[Box] = field(default_factory=list)
    vehicles: list[Box] = field(default_factory=list)


VTEST_SAMPLE = Labelled(
    "samples/vtest_frame.jpg",
    clear=[(469, 207, 506, 297), (510, 203, 542, 289), (621, 239, 656, 348)],
    # the group of three behind the sign on the left overlap each other
    partial=[(379, 178, 401, 259), (369, 171, 392, 236), (402, 183, 426, 263)],
    # white van parked top right, and the car cut by the right edge
    vehicles=[(652, 44, 724, 100), (735, 50, 768, 93)],
)
VTEST_FRAME_600 = Labelled(
    "vtest.avi#600",
    clear=[
        (189, 144, 214, 214),
        (284, 432, 331, 576),
        (456, 303, 506, 418),
        (569, 199, 597, 287),
        (669, 208, 704, 297),
        (642, 305, 671, 412),
    ],
    vehicles=[(652, 44, 724, 100)],
)
BASKETBALL = Labelled(
    "basketball1.png",
    clear=[(35, 79, 155, 480)],
    partial=[(436, 23, 640, 480)],  # back-turned, grayscale, cut by the right edge
)


@functools.cache
def _load(name: str) -> npt.NDArray[np.uint8]:
    """The photo ``name`` as BGR uint8 (read-only, cached: two tests use each photo)."""
    if name.startswith("samples/"):
        img = cv2.imread(str(REPO / name))
    elif name.startswith("vtest.avi#"):
        video, frame = OPENCV_DATA / "vtest.avi", int(name.split("#")[1])
        if not video.is_file():
            pytest.skip(f"{video} missing (Debian package opencv-doc, `make deps`)")
        cap = cv2.VideoCapture(str(video))
        try:
            for _ in range(frame):
                assert cap.grab(), f"{video} has fewer than {frame} frames"
            ok, img = cap.read()
            assert ok
        finally:
            cap.release()
    else:
        path = OPENCV_DATA / name
        if not path.is_file():
            pytest.skip(f"{path} missing (Debian package opencv-doc, `make deps`)")
        img = cv2.imread(str(path))
    assert img is not None and img.ndim == 3
    out = np.asarray(img, np.uint8)
    out.flags.writeable = False
    return out


def _iou(box: Box, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """IoU of one box against (N, 4) boxes."""
    b = np.asarray(box, np.float32)
    lt = np.maximum(b[:2], boxes[:, :2])
    rb = np.minimum(b[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(b[2:] - b[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return np.asarray(inter / (area - inter), np.float32)


@pytest.fixture(scope="module")
def detector(default_model_manifest: Path) -> Iterator[Detector]:
    with Detector(
        load_manifest(default_model_manifest), providers=("CPUExecutionProvider",)
    ) as det:
        yield det


def _of(det: Detector, dets: Detections, names: tuple[str, ...]) -> Detections:
    return dets[np.isin(dets.class_ids, det.class_ids_for(names))]


@pytest.mark.parametrize("photo", [VTEST_SAMPLE, VTEST_FRAME_600, BASKETBALL], ids=lambda p: p.name)
def test_hand_labelled_people_are_found(detector: Detector, photo: Labelled) -> None:
    img = _load(photo.name)
    people = _of(
        detector,
        detector.detect(img, score_threshold=SCORE, iou_threshold=IOU_NMS),
        ("person",),
    )
    for box in photo.clear:
        best = float(_iou(box, people.xyxy).max(initial=0.0))
        assert best >= 0.5, f"{photo.name}: person {box} best IoU {best:.2f}; got {people.xyxy}"
    n_max = len(photo.clear) + len(photo.partial) + 1
    assert len(photo.clear) <= len(people) <= n_max, f"{photo.name}: {len(people)} people"
    h, w = img.shape[:2]
    assert np.all(people.xyxy >= 0) and np.all(people.xyxy[:, [2]] <= w)
    assert np.all(people.xyxy[:, [3]] <= h) and np.all(people.scores >= SCORE)


@pytest.mark.parametrize("photo", [VTEST_SAMPLE, VTEST_FRAME_600], ids=lambda p: p.name)
def test_hand_labelled_vehicles_are_found(detector: Detector, photo: Labelled) -> None:
    img = _load(photo.name)
    dets = detector.detect(img, score_threshold=SCORE, iou_threshold=IOU_NMS)
    vehicles = _of(detector, dets, VEHICLES)
    for box in photo.vehicles:
        best = float(_iou(box, vehicles.xyxy).max(initial=0.0))
        assert best >= 0.5, f"{photo.name}: vehicle {box} best IoU {best:.2f}; got {vehicles.xyxy}"
    # the only vehicles in this static scene are the two parked ones (top right)
    assert len(vehicles) <= 2 * len(photo.vehicles)
    assert np.all(vehicles.xyxy[:, 1] < 150)


def test_no_people_in_an_empty_scene(detector: Detector) -> None:
    """A photo without people or vehicles (opencv-doc's building.jpg has one tiny car at
    the bottom, so the check is on people only)."""
    dets = detector.detect(_load("building.jpg"), score_threshold=SCORE)
    assert len(_of(detector, dets, ("person",))) == 0


@pytest.mark.xfail(
    strict=True,
    reason="known failure mode of YOLOv3-tiny (see models/MODEL_CARD.md): the astronaut "
    "close-up in a spacesuit scores ~0.09 as a person, below the 0.25 threshold",
)
def test_astronaut_close_up_is_found(detector: Detector) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    img = np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])
    people = _of(detector, detector.detect(img, score_threshold=SCORE), ("person",))
    # hand-labelled: the one astronaut, hair to the bottom edge (helmet not included)
    assert float(_iou((18, 15, 370, 512), people.xyxy).max(initial=0.0)) >= 0.5
