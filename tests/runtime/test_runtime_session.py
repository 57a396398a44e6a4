"""onnxruntime sessions: provider fallback with log lines, threads, errors, timings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.errors import ConfigError, InferenceError, ModelError
from edge.runtime.session import CPU, OnnxSession, StageTimings, resolve_providers
from tests.runtime.graphs import planted_model, yolov8_output

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    out = yolov8_output([(10, 10, 4, 4)], [[0.9]], num_anchors=3)
    onnx.save(planted_model({"out": out}, input_size=(64, 32)), str(path))
    return path


def test_gpu_providers_fall_back_to_cpu_with_a_log_line(
    model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = [p for p in GPU_PROVIDERS if p not in ort.get_available_providers()]
    if not missing:
        pytest.skip("this machine has the GPU providers; the fallback cannot be observed")
    caplog.set_level(logging.WARNING, logger="edge.runtime")
    with OnnxSession(model_path=model_file, providers=(*GPU_PROVIDERS, CPU)) as s:
        assert s.providers[-1] == CPU
        assert s.run(np.zeros((1, 3, 32, 64), np.float32))[0].shape == (1, 5, 3)
    lines = [r for r in caplog.records if r.name == "edge.runtime" and r.levelno == logging.WARNING]
    for name in missing:
        assert any(name in r.getMessage() and "falling back to" in r.getMessage() for r in lines), (
            name
        )


def test_resolve_providers_order_aliases_and_cpu_last(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.runtime")
    avail = ["CUDAExecutionProvider", CPU]
    got = resolve_providers(["tensorrt", "cuda", ("cpu", {})], available=avail)
    assert got == ["CUDAExecutionProvider", (CPU, {})]
    assert "TensorrtExecutionProvider is not available" in caplog.text
    assert "falling back to CUDAExecutionProvider" in caplog.text
    # CPU is appended as the last resort; duplicates collapse; options travel along
    opts = {"device_id": 1}
    got = resolve_providers([("CUDA", opts), "cuda"], available=avail)
    assert got == [("CUDAExecutionProvider", opts), CPU]


def test_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown execution provider 'CUDAExcutionProvider'"):
        resolve_providers(["CUDAExcutionProvider"])


def test_session_metadata_and_threads(model_file: Path) -> None:
    with OnnxSession(model_path=model_file, intra_op_threads=1, inter_op_threads=1) as s:
        assert s.input_name == "images"
        assert s.input_dtype == "float32"
        assert s.input_shape == [1, 3, 32, 64]
        assert s.output_names == ["out"]
        assert s.thread_counts == (1, 1)
        assert s.providers == [CPU]
        assert s.warmup(2, (64, 32)) > 0.0
        assert s.warmup(0, (64, 32)) == 0.0


def test_float16_input_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "h.onnx"
    out = yolov8_output([(10, 10, 4, 4)], [[0.9]], num_anchors=3)
    onnx.save(planted_model({"out": out}, input_dtype=np.float16), str(path))
    with OnnxSession(model_path=path) as s:
        assert s.input_dtype == "float16"
        np.testing.assert_array_equal(s.run(np.zeros((1, 3, 416, 416), np.float16))[0], out)


def test_missing_corrupt_and_ambiguous_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OnnxSession(model_path=tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        OnnxSession(model_path=bad)
    two = tmp_path / "two.onnx"
    out = yolov8_output([(10, 10, 4, 4)], [[0.9]], num_anchors=3)
    onnx.save(planted_model({"out": out}, extra_inputs=1), str(two))
    with pytest.raises(ModelError, match="set input_name"):
        OnnxSession(model_path=two)
    with pytest.raises(ModelError, match="no input 'pixels'"):
        OnnxSession(model_path=two, input_name="pixels")
    with OnnxSession(model_path=two, input_name="images") as s:
        assert s.input_name == "images"


def test_run_errors_and_idempotent_close(model_file: Path) -> None:
    s = OnnxSession(model_path=model_file)
    with pytest.raises(InferenceError, match="onnxruntime failed"):
        s.run(np.zeros((1, 3, 10, 10), np.float32))  # wrong static size
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(InferenceError, match="closed"):
        s.run(np.zeros((1, 3, 32, 64), np.float32))


def test_stage_timings_arithmetic() -> None:
    a = StageTimings(1.0, 10.0, 2.0, 3.0)
    b = StageTimings(3.0, 30.0, 4.0, 5.0)
    s = a + b
    assert s == StageTimings(4.0, 40.0, 6.0, 8.0)
    assert s.total_ms == 58.0 and s.outside_inference_ms == 18.0
    assert s.scaled(0.5) == StageTimings(2.0, 20.0, 3.0, 4.0)
    assert s.as_dict()["total_ms"] == 58.0


def _spinning_entry(s: OnnxSession) -> str:
    """What the live onnxruntime session was built with (not what OnnxSession remembers)."""
    assert s._session is not None
    opts = s._session.get_session_options()
    return str(opts.get_session_config_entry("session.intra_op.allow_spinning"))


@pytest.mark.parametrize(
    ("kwargs", "entry", "flag"),
    [
        ({}, "0", False),
        ({"allow_spinning": False}, "0", False),
        ({"allow_spinning": True}, "1", True),
    ],
)
def test_allow_spinning_reaches_the_onnxruntime_session(
    model_file: Path, kwargs: dict[str, bool], entry: str, flag: bool
) -> None:
    with OnnxSession(model_path=model_file, **kwargs) as s:
        assert _spinning_entry(s) == entry
        assert s.allow_spinning is flag
        assert s.run(np.zeros((1, 3, 32, 64), np.float32))[0].shape == (1, 5, 3)
