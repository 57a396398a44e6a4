"""Tiny ONNX graphs with planted outputs, and manifests for them, for the runtime tests.

:func:`planted_model` builds a graph whose outputs are fixed tensors that still depend on
the input (``output = constant + 0 * ReduceSum(images)``), so onnxruntime really runs it
on the preprocessed image and cannot fold it away. The test then checks that the decoder
and detector recover the boxes planted in those tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from edge.runtime.registry import file_sha256

OPSET = 17

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}


def planted_model(
    outputs: Mapping[str, np.ndarray],
    *,
    input_name: str = "images",
    input_size: tuple[int, int] = (416, 416),
    input_dtype: type[np.floating[Any]] = np.float32,
    dynamic_hw: bool = False,
    extra_inputs: int = 0,
) -> onnx.ModelProto:
    """A model with one NCHW image input and the given constant outputs (in order).

    Args:
        outputs: output name -> value (float32 or float16 arrays, any shape).
        input_size: (width, height) of the static input.
        input_dtype: float32 or float16 input.
        dynamic_hw: make H and W symbolic instead of fixed.
        extra_inputs: add that many unused extra inputs (to test input selection).
    """
    w, h = input_size
    in_elem = _ELEM[np.dtype(input_dtype)]
    shape: list[int | str] = [1, 3, "h", "w"] if dynamic_hw else [1, 3, h, w]
    inputs = [helper.make_tensor_value_info(input_name, in_elem, shape)]
    inputs += [
        helper.make_tensor_value_info(f"extra_{i}", TensorProto.FLOAT, [1])
        for i in range(extra_inputs)
    ]
    nodes = [helper.make_node("ReduceSum", [input_name], ["sum"], keepdims=0)]
    nodes.append(helper.make_node("Cast", ["sum"], ["sum_f32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Mul", ["sum_f32", "zero"], ["dep_f32"]))
    nodes.append(helper.make_node("Cast", ["dep_f32"], ["dep_f16"], to=TensorProto.FLOAT16))
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    outs = []
    for i, (name, value) in enumerate(outputs.items()):
        arr = np.ascontiguousarray(value)
        elem = _ELEM[arr.dtype]
        inits.append(numpy_helper.from_array(arr, f"const_{i}"))
        dep = "dep_f32" if elem == TensorProto.FLOAT else "dep_f16"
        nodes.append(helper.make_node("Add", [f"const_{i}", dep], [name]))
        outs.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
    graph = helper.make_graph(nodes, "planted", inputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model_and_manifest(
    folder: Path,
    model: onnx.ModelProto,
    *,
    name: str = "planted",
    family: str = "yolov8",
    class_names: list[str] | None = None,
    input_size: tuple[int, int] = (416, 416),
    sha256: str | None = None,
    **fields: Any,
) -> Path:
    """Write ``<name>.onnx`` and ``<name>.yaml`` (a valid manifest unless ``fields`` or
    ``sha256`` say otherwise) into ``folder``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{name}.onnx"
    onnx.save(model, str(onnx_path))
    doc: dict[str, Any] = {
        "name": name,
        "file": onnx_path.name,
        "sha256": sha256 if sha256 is not None else file_sha256(onnx_path),
        "family": family,
        "input_size": list(input_size),
        "class_names": class_names if class_names is not None else ["person", "car"],
        "licence": "test graph, no weights",
        "source": "tests/runtime/graphs.py",
    }
    doc.update(fields)
    yaml_path = folder / f"{name}.yaml"
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return yaml_path


def manifest_dict(**overrides: Any) -> dict[str, Any]:
    """A minimal valid manifest mapping (yolov8, two classes), with overrides applied."""
    doc: dict[str, Any] = {
        "name": "m",
        "file": "m.onnx",
        "sha256": "ab" * 32,
        "family": "yolov8",
        "input_size": [640, 640],
        "class_names": ["person", "car"],
        "licence": "test",
        "source": "test",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def logit(p: float) -> float:
    """Inverse sigmoid, for planting Darknet logits that decode to probability ``p``."""
    return float(np.log(p / (1.0 - p)))


def yolov8_output(
    boxes_cxcywh: Sequence[Sequence[float]],
    class_scores: Sequence[Sequence[float]],
    *,
    num_anchors: int = 64,
    dtype: type[np.floating[Any]] = np.float32,
) -> np.ndarray:
    """(1, 4+C, num_anchors) YOLOv8 output with the given boxes in the first columns and
    zero scores elsewhere."""
    c = len(class_scores[0])
    out = np.zeros((1, 4 + c, num_anchors), dtype=np.float32)
    out[0, :4, :] = np.array([50.0, 50.0, 10.0, 10.0], np.float32)[:, None]
    for j, (box, sc) in enumerate(zip(boxes_cxcywh, class_scores, strict=True)):
        out[0, :4, j] = box
        out[0, 4:, j] = sc
    return out.astype(dtype)


def fails_on_real_images_model(
    output: np.ndarray, *, input_size: tuple[int, int] = (416, 416)
) -> onnx.ModelProto:
    """A model that loads but whose decoder fails on real frames: a run-time fault.

    On a uniform input (the detector's load check runs a grey image) it emits ``output``,
    a (1, 4+C, N) YOLOv8 output that fits a C-class manifest; on any input that is not
    uniform (a real frame) it emits one attribute row more, (1, 4+C+1, N), so the decoder
    raises :class:`~edge.errors.ModelError` on every frame. For manifests whose
    normalisation keeps a grey image uniform (the default: scale 1/255, mean 0, std 1).
    """
    w, h = input_size
    n_attr = output.shape[1]
    bad = np.concatenate([output, np.zeros_like(output[:, :1])], axis=1).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["mx"], keepdims=0),
        helper.make_node("ReduceMin", ["images"], ["mn"], keepdims=0),
        helper.make_node("Sub", ["mx", "mn"], ["spread"]),
        helper.make_node("Greater", ["spread", "zero"], ["textured"]),
        helper.make_node("Cast", ["textured"], ["extra"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["extra", "one"], ["extra1"]),
        helper.make_node("Add", ["n_attr", "extra1"], ["end"]),
        helper.make_node("Slice", ["bad", "start", "end", "axis"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([n_attr], np.int64), "n_attr"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        numpy_helper.from_array(bad, "bad"),
    ]
    graph = helper.make_graph(
        nodes,
        "fails_on_real_images",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, "attrs", bad.shape[2]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
