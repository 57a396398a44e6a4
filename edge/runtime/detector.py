"""The object detector: manifest + ONNX file -> :class:`~edge.types.Detections` per image.

One call runs four timed stages: preprocess (letterbox, normalise), ``session.run``,
decode (family decoder, score threshold), and NMS (class filter, mapping boxes back to
the original image, class-aware greedy NMS from :mod:`edge.kernels.nms`).

Thread-safety: :meth:`Detector.detect` may be called from several threads at once.
onnxruntime's ``session.run`` is thread-safe and the detector keeps no per-call state;
the only shared value, :attr:`Detector.last_timings`, is replaced under a lock. Callers
that need the timings of *their* call use :meth:`Detector.detect_with_timings`.
:meth:`Detector.close` must not race with running calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.closing import Closing
from edge.errors import ConfigError, InferenceError, ModelError
from edge.kernels.nms import nms, nms_backend
from edge.runtime.decoders import decode_outputs
from edge.runtime.preprocess import InputDType, PreprocessSpec, preprocess
from edge.runtime.registry import ModelManifest, discover_models, sha256_ok
from edge.runtime.session import CPU, OnnxSession, ProviderSpec, StageTimings
from edge.types import Detections

__all__ = ["Detector"]

logger = logging.getLogger("edge.runtime")


def _check_threshold(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return v


def _nhwc_message(shape: Sequence[int | str | None]) -> str:
    return (
        "the model takes NHWC input (last dimension 3); export it NCHW, (1, 3, H, W) "
        f"(tf2onnx: --inputs-as-nchw <input name>); its input shape is {list(shape)}"
    )


def _runs_nhwc(session: OnnxSession, nchw: npt.NDArray[Any], output_names: Sequence[str]) -> bool:
    """Whether the model runs on ``nchw`` transposed to (1, H, W, 3)."""
    try:
        session.run(np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)), output_names)
    except InferenceError:
        return False
    return True


class Detector(Closing):
    """Runs one model described by a :class:`ModelManifest`.

    Keyword-only; use as a context manager or call :meth:`close` (idempotent).

    Args:
        manifest: the validated manifest (its ``file`` must exist).
        providers: execution providers in priority order, e.g.
            ``("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")``
            or aliases ``("tensorrt", "cuda", "cpu")``; unavailable ones fall back with a
            WARNING on the ``edge.runtime`` logger.
        intra_op_threads, inter_op_threads: onnxruntime thread pools (``None``: default).
        allow_spinning: let idle intra-op workers spin after a run (see
            :class:`~edge.runtime.session.OnnxSession`); off by default because several
            detectors share few cores on a gateway.
        warmup: runs on a blank input at construction, so the first frame is not slow.
            The first run's outputs go through the decoder (nothing kept, every shape
            check made), so outputs that do not fit the manifest fail here; that one run
            happens even with ``warmup=0``.
        verify_sha256: hash the ONNX file and compare with ``manifest.sha256``.

    Raises:
        ModelError: the ONNX file is missing, differs from ``sha256``, cannot be loaded, or
            disagrees with the manifest (input size or layout, dtype, output names, output
            shapes: class count, anchors, strides, layout). The message names the manifest.
        InferenceError: onnxruntime failed on the check run.
        ConfigError: an unknown provider name.
    """

    def __init__(
        self,
        manifest: ModelManifest,
        *,
        providers: Sequence[ProviderSpec] = (CPU,),
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool = False,
        warmup: int = 1,
        verify_sha256: bool = True,
    ) -> None:
        path = manifest.model_path
        where = f" (manifest {manifest.manifest_path})" if manifest.manifest_path else ""
        if not path.is_file():
            raise ModelError(f"model {manifest.name!r}: file {path} does not exist{where}")
        if verify_sha256 and not sha256_ok(manifest):
            raise ModelError(
                f"model {manifest.name!r}: {path} does not match the manifest's sha256 "
                f"{manifest.sha256}{where}; the file was replaced or is corrupt"
            )
        session = OnnxSession(
            model_path=path,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            input_name=manifest.input_name,
            allow_spinning=allow_spinning,
        )
        try:
            self._dtype = self._check_model(manifest, session, where)
            self._output_names = self._check_outputs(manifest, session)
            self._spec = PreprocessSpec.from_manifest(manifest, dtype=self._dtype)
            self._check_decode(manifest, session, self._spec, self._output_names, where)
            session.warmup(warmup - 1, manifest.input_size)
        except Exception:
            session.close()
            raise
        self._manifest = manifest
        self._session = session
        self._lock = threading.Lock()
        self._last_timings = StageTimings()
        if warmup > 0:
            # Pay the NMS JIT compile / cache load here, not on the first frame.
            logger.debug("NMS backend: %s", nms_backend())

    @staticmethod
    def _check_model(manifest: ModelManifest, session: OnnxSession, where: str) -> InputDType:
        want_w, want_h = manifest.input_size
        shape = session.input_shape
        name = manifest.name
        if len(shape) != 4:
            raise ModelError(
                f"model {name!r}{where}: input shape {shape} is not 4-D; need (1, 3, H, W) (NCHW)"
            )
        if shape[3] == 3 and shape[1] != 3:
            raise ModelError(f"model {name!r}{where}: {_nhwc_message(shape)}")
        _, ch, h, w = shape
        if isinstance(ch, int) and ch != 3:
            raise ModelError(f"model {name!r}: input has {ch} channels, need 3")
        if (isinstance(h, int) and h != want_h) or (isinstance(w, int) and w != want_w):
            raise ModelError(
                f"model {name!r}: input is {w}x{h} (WxH) but the manifest says "
                f"input_size {want_w}x{want_h}"
            )
        if manifest.dtype != "auto" and manifest.dtype != session.input_dtype:
            raise ModelError(
                f"model {name!r}: manifest dtype {manifest.dtype} but the model input is "
                f"{session.input_dtype}"
            )
        return session.input_dtype

    @staticmethod
    def _check_decode(
        manifest: ModelManifest,
        session: OnnxSession,
        spec: PreprocessSpec,
        output_names: list[str],
        where: str,
    ) -> None:
        """One run on a grey image whose outputs go through the family decoder (score
        threshold 1.0: nothing is kept, every shape and layout check runs), so that outputs
        that do not fit the manifest fail here and not on the first frame."""
        w, h = manifest.input_size
        tensor, _ = preprocess(np.full((h, w, 3), 114, np.uint8), spec)
        try:
            outputs = session.run(tensor, output_names)
        except InferenceError:
            shape = session.input_shape
            if not isinstance(shape[1], int) and _runs_nhwc(session, tensor, output_names):
                # Fully dynamic input (e.g. [N, H, W, C]): the shape does not say NHWC,
                # but the model ran on (1, H, W, 3) and failed on (1, 3, H, W).
                raise ModelError(
                    f"model {manifest.name!r}{where}: {_nhwc_message(shape)}"
                ) from None
            raise
        try:
            decode_outputs(manifest, outputs, score_threshold=1.0)
        except ModelError as exc:
            shapes = ", ".join(str(tuple(np.shape(o))) for o in outputs)
            raise ModelError(
                f"model {manifest.name!r}{where}: family {manifest.family}, output shape "
                f"{shapes}, {manifest.num_classes} classes in the manifest: {exc}"
            ) from exc

    @staticmethod
    def _check_outputs(manifest: ModelManifest, session: OnnxSession) -> list[str]:
        if manifest.output_names is None:
            return list(session.output_names)
        unknown = [n for n in manifest.output_names if n not in session.output_names]
        if unknown:
            raise ModelError(
                f"model {manifest.name!r}: output_names {unknown} not in the model's outputs "
                f"{session.output_names}"
            )
        return list(manifest.output_names)

    @classmethod
    def from_name(cls, name: str, models_dir: str | Path, **kwargs: Any) -> Detector:
        """Detector for the manifest called ``name`` in ``models_dir`` (see
        :func:`~edge.runtime.registry.discover_models`); ``kwargs`` go to the constructor.

        Raises:
            ModelError: no such model, or the folder/manifest/file is invalid.
        """
        found = discover_models(models_dir)
        if name not in found:
            raise ModelError(
                f"no model named {name!r} in {models_dir} (found: {sorted(found) or 'none'})"
            )
        return cls(found[name], **kwargs)

    # -- properties ---------------------------------------------------------------
    @property
    def manifest(self) -> ModelManifest:
        return self._manifest

    @property
    def class_names(self) -> list[str]:
        """Class names; ``Detections.class_ids`` index into this list."""
        return list(self._manifest.class_names)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually runs on, in priority order."""
        return list(self._session.providers)

    @property
    def allow_spinning(self) -> bool:
        """Whether the session's idle intra-op workers spin after a run."""
        return self._session.allow_spinning

    @property
    def input_dtype(self) -> InputDType:
        return self._dtype

    @property
    def last_timings(self) -> StageTimings:
        """Stage timings of the most recently finished :meth:`detect` call (any thread)."""
        with self._lock:
            return self._last_timings

    @property
    def closed(self) -> bool:
        return self._session.closed

    # -- inference ----------------------------------------------------------------
    def class_ids_for(self, classes: Sequence[str]) -> npt.NDArray[np.int32]:
        """Class ids for class names, in the given order.

        Raises:
            ConfigError: a name is not one of :attr:`class_names`.
        """
        names = self._manifest.class_names
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ConfigError(
                f"model {self._manifest.name!r} has no class {unknown}; classes: {names}"
            )
        return np.array([names.index(c) for c in classes], dtype=np.int32)

    def detect(
        self,
        image_bgr: npt.NDArray[Any],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> Detections:
        """Detect objects in one image.

        Args:
            image_bgr: (H, W, 3) uint8, BGR (as ``cv2.imread`` returns).
            score_threshold: keep scores above it (default: the manifest's).
            iou_threshold: NMS IoU above which the lower-scored box of the same class goes
                (default: the manifest's).
            classes: keep only these class names (default: all).

        Returns:
            Detections in original-image pixels (clipped to the image; boxes that fall
            wholly into the letterbox padding are dropped), descending score, at most
            ``manifest.max_detections``; ``class_ids`` index :attr:`class_names`.

        Raises:
            ValueError: bad image shape/dtype or a threshold outside [0, 1].
            ConfigError: an unknown class name.
            InferenceError: onnxruntime failed or the detector is closed.
            ModelError: the outputs do not fit the manifest.
        """
        dets, _ = self.detect_with_timings(
            image_bgr,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            classes=classes,
        )
        return dets

    def detect_with_timings(
        self,
        image_bgr: npt.NDArray[Any],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> tuple[Detections, StageTimings]:
        """:meth:`detect`, also returning this call's :class:`StageTimings`."""
        if self._session.closed:
            raise InferenceError(f"detector {self._manifest.name!r} is closed")
        m = self._manifest
        thr = _check_threshold(
            "score_threshold", m.score_threshold if score_threshold is None else score_threshold
        )
        iou = _check_threshold(
            "iou_threshold", m.iou_threshold if iou_threshold is None else iou_threshold
        )
        wanted = self.class_ids_for(classes) if classes is not None else None

        t0 = time.perf_counter()
        tensor, letterbox = preprocess(image_bgr, self._spec)
        t1 = time.perf_counter()
        outputs = self._session.run(tensor, self._output_names)
        t2 = time.perf_counter()
        cands = decode_outputs(m, outputs, score_threshold=thr)
        t3 = time.perf_counter()
        if wanted is not None:
            cands = cands[np.isin(cands.class_ids, wanted)]
        # Unmap before NMS so that boxes lying wholly in the letterbox padding are gone
        # before ``max_detections`` is counted.
        xyxy = letterbox.unmap_boxes(cands.xyxy)
        visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        xyxy, scores, class_ids = xyxy[visible], cands.scores[visible], cands.class_ids[visible]
        keep = nms(
            xyxy,
            scores,
            iou_threshold=iou,
            score_threshold=thr,
            class_ids=class_ids,
            max_det=m.max_detections,
        )
        dets = Detections(xyxy=xyxy[keep], scores=scores[keep], class_ids=class_ids[keep])
        t4 = time.perf_counter()

        timings = StageTimings(
            preprocess_ms=(t1 - t0) * 1e3,
            inference_ms=(t2 - t1) * 1e3,
            decode_ms=(t3 - t2) * 1e3,
            nms_ms=(t4 - t3) * 1e3,
        )
        with self._lock:
            self._last_timings = timings
        return dets, timings

    # -- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        """Release the onnxruntime session (idempotent)."""
        self._session.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ", ".join(self.providers)
        return f"Detector({self._manifest.name!r}, {self._manifest.family}, {state})"
