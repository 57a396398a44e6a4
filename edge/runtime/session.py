"""onnxruntime sessions: provider selection with logged fallback, threads, warm-up, timings.

Execution providers are tried in the order given (typically TensorRT, CUDA, CPU). A
provider missing from this onnxruntime build, or one that fails to initialise (no GPU,
missing CUDA libraries), is skipped with a WARNING on the ``edge.runtime`` logger naming
the provider actually used; the CPU provider is always the last resort.

Thread-safety: ``InferenceSession.run`` is thread-safe in onnxruntime, so one
:class:`OnnxSession` may serve several threads; :meth:`OnnxSession.close` must not race
with running calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge.closing import Closing
from edge.errors import ConfigError, InferenceError, ModelError

__all__ = [
    "CPU",
    "OnnxSession",
    "ProviderSpec",
    "StageTimings",
    "resolve_providers",
]

logger = logging.getLogger("edge.runtime")

CPU = "CPUExecutionProvider"

#: Short names accepted in configs, mapped to onnxruntime provider names.
PROVIDER_ALIASES: Mapping[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": CPU,
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rknpu": "RknpuExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
}

#: A provider name, or ``(name, options)`` as onnxruntime takes them (e.g. TensorRT
#: ``{"trt_fp16_enable": True, "trt_engine_cache_enable": True, ...}``).
ProviderSpec = str | tuple[str, Mapping[str, Any]]

InputDType = Literal["float32", "float16"]


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock milliseconds spent in each stage of one ``detect`` call (or a sum/mean).

    Attributes:
        preprocess_ms: letterbox, channel swap, normalisation, layout.
        inference_ms: ``session.run``.
        decode_ms: raw outputs -> candidate detections.
        nms_ms: non-maximum suppression, class filter and unmapping to image pixels.
    """

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    decode_ms: float = 0.0
    nms_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.decode_ms + self.nms_ms

    @property
    def outside_inference_ms(self) -> float:
        """Time spent outside ``session.run`` (the part this package controls)."""
        return self.total_ms - self.inference_ms

    def __add__(self, other: StageTimings) -> StageTimings:
        return StageTimings(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, factor: float) -> StageTimings:
        """Every stage multiplied by ``factor`` (``sum.scaled(1 / n)`` is the mean)."""
        return StageTimings(*(getattr(self, f.name) * factor for f in fields(self)))

    def as_dict(self) -> dict[str, float]:
        d = {f.name: float(getattr(self, f.name)) for f in fields(self)}
        d["total_ms"] = self.total_ms
        return d


def _provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def resolve_providers(
    requested: Sequence[ProviderSpec], *, available: Sequence[str] | None = None
) -> list[ProviderSpec]:
    """Keep the requested providers this onnxruntime build has, in order; end with CPU.

    Short aliases (``"tensorrt"``, ``"cuda"``, ``"cpu"``, ...) are expanded. Each
    unavailable provider is logged at WARNING on ``edge.runtime`` with what is used instead.

    Raises:
        ConfigError: a name is not an onnxruntime execution provider at all (a typo).
    """
    have = list(ort.get_available_providers() if available is None else available)
    known = set(ort.get_all_providers()) | set(have)
    out: list[ProviderSpec] = []
    missing: list[str] = []
    for spec in requested:
        raw = _provider_name(spec)
        name = PROVIDER_ALIASES.get(raw.lower(), raw)
        if name not in known:
            raise ConfigError(
                f"unknown execution provider {raw!r}; known: {sorted(PROVIDER_ALIASES)} "
                f"or onnxruntime names such as {CPU!r}"
            )
        if name not in have:
            missing.append(name)
            continue
        if any(_provider_name(p) == name for p in out):
            continue
        out.append(name if isinstance(spec, str) else (name, dict(spec[1])))
    if not any(_provider_name(p) == CPU for p in out):
        out.append(CPU)
    for name in missing:
        logger.warning(
            "execution provider %s is not available in this onnxruntime build "
            "(available: %s); falling back to %s",
            name,
            ", ".join(have),
            _provider_name(out[0]),
        )
    return out


def _input_dtype(onnx_type: str) -> InputDType:
    if onnx_type == "tensor(float16)":
        return "float16"
    if onnx_type == "tensor(float)":
        return "float32"
    raise ModelError(f"model input type {onnx_type} is not supported (float or float16 only)")


class OnnxSession(Closing):
    """One onnxruntime ``InferenceSession`` with a single image input.

    Keyword-only; use as a context manager or call :meth:`close` (idempotent).

    Args:
        model_path: the ``.onnx`` file.
        providers: execution providers in priority order (names, aliases or
            ``(name, options)``); unavailable ones fall back with a log line.
        intra_op_threads: threads inside one operator (``None``: onnxruntime default,
            one per physical core).
        inter_op_threads: threads across independent operators (``None``: default).
        input_name: the image input; ``None`` requires the model to have exactly one input.
        allow_spinning: onnxruntime's ``session.intra_op.allow_spinning``. Off by default
            because a gateway runs several sessions (API, cameras, hard hat + person
            detector in one request) on few cores: after a run the intra-op workers spin
            waiting for more work and slow the next session's run on the same cores.
            ``True`` restores onnxruntime's default, the lowest latency for one model alone
            on otherwise idle cores.

    Raises:
        ModelError: the file is missing or onnxruntime cannot load it, or the input is not
            a float/float16 4-D tensor.
        ConfigError: an unknown provider name.
    """

    def __init__(
        self,
        *,
        model_path: str | Path,
        providers: Sequence[ProviderSpec] = (CPU,),
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        input_name: str | None = None,
        allow_spinning: bool = False,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        chosen = resolve_providers(providers)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            opts.inter_op_num_threads = int(inter_op_threads)
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        active = list(sess.get_providers())
        for p in chosen:
            name = _provider_name(p)
            if name not in active:
                logger.warning(
                    "execution provider %s failed to initialise for %s; running on %s",
                    name,
                    path.name,
                    ", ".join(active),
                )
        logger.info("loaded %s with providers %s", path.name, ", ".join(active))

        inputs = sess.get_inputs()
        if input_name is None:
            if len(inputs) != 1:
                names = [i.name for i in inputs]
                raise ModelError(f"{path.name} has inputs {names}; set input_name in the manifest")
            meta = inputs[0]
        else:
            by_name = {i.name: i for i in inputs}
            if input_name not in by_name:
                raise ModelError(
                    f"{path.name} has no input {input_name!r} (inputs: {sorted(by_name)})"
                )
            meta = by_name[input_name]
        if len(meta.shape) != 4:
            raise ModelError(f"{path.name} input {meta.name!r} has shape {meta.shape}, need NCHW")

        self._session: ort.InferenceSession | None = sess
        self.model_path = path
        self.providers: list[str] = active
        self.input_name: str = meta.name
        self.input_dtype: InputDType = _input_dtype(meta.type)
        self.input_shape: list[int | str | None] = list(meta.shape)
        self.output_names: list[str] = [o.name for o in sess.get_outputs()]
        self.thread_counts: tuple[int, int] = (
            int(opts.intra_op_num_threads),
            int(opts.inter_op_num_threads),
        )
        """(intra_op, inter_op) as configured; 0 means onnxruntime's default."""
        self.allow_spinning: bool = bool(allow_spinning)
        """Whether idle intra-op workers spin after a run (onnxruntime's default) or sleep."""

    @property
    def closed(self) -> bool:
        return self._session is None

    def run(
        self, tensor: npt.NDArray[Any], output_names: Sequence[str] | None = None
    ) -> list[npt.NDArray[Any]]:
        """Run the model on one input tensor.

        Args:
            tensor: (1, 3, H, W) in :attr:`input_dtype`.
            output_names: outputs to return, in this order (default: all, model order).

        Raises:
            InferenceError: the session is closed or onnxruntime failed.
        """
        sess = self._session
        if sess is None:
            raise InferenceError(f"session for {self.model_path.name} is closed")
        names = list(output_names) if output_names is not None else self.output_names
        try:
            outs = sess.run(names, {self.input_name: tensor})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"onnxruntime failed on {self.model_path.name}: {exc}") from exc
        return [np.asarray(o) for o in outs]

    def warmup(self, runs: int, input_size: tuple[int, int]) -> float:
        """Run ``runs`` times on a mid-grey input of ``input_size`` (width, height);
        returns the mean milliseconds per run (0.0 when ``runs`` is 0)."""
        if runs <= 0:
            return 0.0
        w, h = input_size
        dtype = np.float16 if self.input_dtype == "float16" else np.float32
        x = np.full((1, 3, h, w), 0.5, dtype=dtype)
        t0 = time.perf_counter()
        for _ in range(runs):
            self.run(x)
        ms = (time.perf_counter() - t0) * 1000.0 / runs
        logger.debug("warm-up of %s: %d runs, %.1f ms each", self.model_path.name, runs, ms)
        return ms

    def close(self) -> None:
        """Release the onnxruntime session (idempotent)."""
        self._session = None
