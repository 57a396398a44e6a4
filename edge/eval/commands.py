"""``safety-edge eval``: run a model over a YOLO data set split and write the report.

::

    safety-edge eval --task hardhat --data ../shared/data/hardhat/data.yaml \\
        [--model hardhat] [--models-dir models] [--split val] [--out var/eval] \\
        [--score 0.25] [--iou 0.5] [--samples 6] [--limit N]

The model runs once per image at a low score threshold (0.001, ``--map-score``) so the PR
curve behind AP is complete; precision, recall and the confusion matrix use the detections
at or above the operating threshold ``--score``, matched at IoU ``--iou``. Greedy matching
visits detections by descending score, so filtering afterwards gives the same result as a
second run at ``--score`` (as long as fewer than ``max_detections`` boxes per image score
above ``--score``).

Model classes are matched to data set classes by name (case-insensitive), or by
``--class-map model=data,...``. Data set classes the model does not predict are left out of
every metric (listed in the report); detections of model classes without a data set class
are dropped.

Outputs: ``<out>/eval_<task>.json``, ``<out>/eval_<task>.md``, ``<out>/samples/*.jpg``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import cv2
import numpy as np
import numpy.typing as npt

from edge.argtypes import int_range, unit_interval
from edge.errors import EdgeError, ModelError
from edge.eval.dataset import DataConfig, DatasetError, load_data_config, merge_data_configs
from edge.eval.metrics import DetectionEvaluator, DetectionMetrics
from edge.eval.report import (
    ReportContext,
    build_report,
    draw_sample,
    write_json,
    write_markdown,
)
from edge.types import Detections

__all__ = [
    "DEFAULT_MODELS",
    "MAP_SCORE_THRESHOLD",
    "ClassMapping",
    "EvalError",
    "EvalRun",
    "ImageScores",
    "Progress",
    "add_subcommands",
    "evaluate",
    "map_classes",
    "parse_class_map",
]

TASKS = ("hardhat", "workwear")
DEFAULT_MODELS: Mapping[str, str] = {"hardhat": "hardhat", "workwear": "workwear"}
"""Model name used when ``--model`` is not given."""
MAP_SCORE_THRESHOLD = 0.001
"""Score threshold of the detector run behind AP (Ultralytics/COCO practice)."""


class EvalError(EdgeError):
    """The model and the data set cannot be evaluated together (code 5000)."""

    code = 5000


@dataclass(frozen=True)
class ImageScores:
    """One image as :func:`evaluate` scores it: ground truth and the detections of the AP
    run (score >= its threshold), boxes ``xyxy`` in original-image pixels, class ids in the
    evaluated classes (``ClassMapping.eval_names``)."""

    gt_xyxy: npt.NDArray[Any]
    gt_class_ids: npt.NDArray[np.int64]
    pred_xyxy: npt.NDArray[Any]
    pred_scores: npt.NDArray[Any]
    pred_class_ids: npt.NDArray[np.int64]


class DetectorLike(Protocol):
    """What :func:`evaluate` needs: :class:`edge.runtime.detector.Detector` fits."""

    @property
    def class_names(self) -> Sequence[str]: ...

    def detect(
        self,
        image_bgr: npt.NDArray[np.uint8],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> Detections: ...


# -- class mapping ------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassMapping:
    """How model classes line up with data set classes.

    Attributes:
        pairs: (model class, data set class) for every evaluated class, in data set order.
        model_to_eval: (M,) int64, evaluated-class index per model class id, -1 = dropped.
        data_to_eval: (D,) int64, evaluated-class index per data set class id, -1 = not
            evaluated.
        unmapped_model: model classes with no data set class.
        unevaluated_data: data set classes no model class maps to.
    """

    pairs: tuple[tuple[str, str], ...]
    model_to_eval: npt.NDArray[np.int64]
    data_to_eval: npt.NDArray[np.int64]
    unmapped_model: tuple[str, ...]
    unevaluated_data: tuple[str, ...]

    @property
    def eval_names(self) -> tuple[str, ...]:
        """Evaluated class names (data set names), index = evaluated-class id."""
        return tuple(d for _, d in self.pairs)

    @property
    def model_classes(self) -> list[str]:
        return [m for m, _ in self.pairs]


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"model=data,model2=data2"`` -> dict.

    Raises:
        EvalError: an item is not ``a=b`` or a model class appears twice.
    """
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        left, sep, right = item.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise EvalError(f"--class-map item {item!r} is not MODEL_CLASS=DATA_CLASS")
        if left.strip() in out:
            raise EvalError(f"--class-map maps model class {left.strip()!r} twice")
        out[left.strip()] = right.strip()
    return out


def map_classes(
    model_names: Sequence[str],
    data_names: Sequence[str],
    explicit: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
) -> ClassMapping:
    """Pair model classes with data set classes: ``explicit`` first, then equal names
    (case-insensitive, surrounding blanks ignored). ``only`` restricts the evaluation to
    those data set classes (e.g. ``["wear", "no_wear"]``); the others count as not
    evaluated.

    Raises:
        EvalError: an explicit pair names an unknown class, two model classes map to one
            data set class, no class matches at all (the message lists both sides), or a
            class in ``only`` is unknown or not predicted by the model.
    """
    explicit = dict(explicit or {})

    def key(s: str) -> str:
        return s.strip().lower()

    data_index = {key(n): i for i, n in enumerate(data_names)}
    target: dict[int, int] = {}  # model id -> data id
    for m_name, d_name in explicit.items():
        if m_name not in model_names:
            raise EvalError(
                f"--class-map: the model has no class {m_name!r} (has {list(model_names)})"
            )
        if key(d_name) not in data_index:
            raise EvalError(
                f"--class-map: the data set has no class {d_name!r} ({list(data_names)})"
            )
        target[list(model_names).index(m_name)] = data_index[key(d_name)]
    for i, m_name in enumerate(model_names):
        if m_name not in explicit and key(m_name) in data_index:
            target[i] = data_index[key(m_name)]
    if only is not None:
        unknown = [c for c in only if key(c) not in data_index]
        if unknown:
            raise EvalError(f"--classes: the data set has no class {unknown} ({list(data_names)})")
        keep_ids = {data_index[key(c)] for c in only}
        missing = [data_names[d] for d in sorted(keep_ids) if d not in target.values()]
        if missing:
            raise EvalError(
                f"--classes: the model predicts no class for {missing} (model classes "
                f"{list(model_names)}; use --class-map MODEL=DATA to pair them)"
            )
        target = {m: d for m, d in target.items() if d in keep_ids}
    if not target:
        raise EvalError(
            f"no model class matches a data set class by name: model classes "
            f"{list(model_names)}, data set classes {list(data_names)} "
            "(use --class-map MODEL=DATA,... to pair them)"
        )
    by_data: dict[int, list[int]] = {}
    for m_id, d_id in target.items():
        by_data.setdefault(d_id, []).append(m_id)
    clash = {
        data_names[d]: [model_names[m] for m in ms] for d, ms in by_data.items() if len(ms) > 1
    }
    if clash:
        raise EvalError(f"several model classes map to one data set class: {clash}")
    data_ids = sorted(by_data)
    eval_of_data = {d: e for e, d in enumerate(data_ids)}
    model_to_eval = np.full(len(model_names), -1, dtype=np.int64)
    for m_id, d_id in target.items():
        model_to_eval[m_id] = eval_of_data[d_id]
    data_to_eval = np.full(len(data_names), -1, dtype=np.int64)
    for d_id, e in eval_of_data.items():
        data_to_eval[d_id] = e
    return ClassMapping(
        pairs=tuple((model_names[by_data[d][0]], data_names[d]) for d in data_ids),
        model_to_eval=model_to_eval,
        data_to_eval=data_to_eval,
        unmapped_model=tuple(n for i, n in enumerate(model_names) if i not in target),
        unevaluated_data=tuple(n for i, n in enumerate(data_names) if i not in by_data),
    )


# -- progress -----------------------------------------------------------------------------
class Progress:
    """A one-line progress bar with carriage returns, shown only when ``stream`` is a
    terminal (no output at all otherwise, so logs and pipes stay clean)."""

    def __init__(self, *, label: str, total: int = 0, stream: TextIO | None = None) -> None:
        self._total = max(int(total), 0)
        self._label = label
        self._stream = sys.stderr if stream is None else stream
        self._enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._last = 0.0
        self._done = 0
        self._closed = False

    def update(self, done: int, total: int | None = None) -> None:
        """Show ``done`` of ``total`` (``total`` defaults to the last one given); redraws
        at most every 0.1 s, and always at the end."""
        if total is not None:
            self._total = max(int(total), 0)
        self._done = done
        now = time.perf_counter()
        if self._enabled and not self._closed and (now - self._last >= 0.1 or done >= self._total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        done, total = self._done, self._total
        elapsed = now - self._start
        frac = min(done / total, 1.0) if total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        self._stream.write(
            f"\r{self._label} {done}/{total} [{'#' * int(frac * 24):<24}] {frac:4.0%} "
            f"{rate:5.1f} img/s ETA {eta:4.0f}s"
        )
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line (idempotent)."""
        if self._enabled and not self._closed:
            self._closed = True
            self._draw(time.perf_counter())
            self._stream.write("\n")
            self._stream.flush()


# -- evaluation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRun:
    """What :func:`evaluate` produced.

    Attributes:
        metrics: over the evaluated classes (names = data set names).
        mapping: the class pairing.
        images: images evaluated.
        seconds: wall time of the read + detect + match loop.
        sample_paths: annotated images written.
    """

    metrics: DetectionMetrics
    mapping: ClassMapping
    images: int
    seconds: float
    sample_paths: tuple[Path, ...] = field(default_factory=tuple)


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise DatasetError(f"cannot read image {path}: missing or not a decodable image")
    return np.asarray(image, dtype=np.uint8)


def _sample_indices(n: int, k: int) -> set[int]:
    if n <= 0 or k <= 0:
        return set()
    return {int(i) for i in np.unique(np.linspace(0, n - 1, min(k, n)).round())}


def evaluate(
    detector: DetectorLike,
    config: DataConfig,
    *,
    split: str = "val",
    score_threshold: float = 0.25,
    match_iou: float = 0.5,
    nms_iou: float | None = None,
    map_score_threshold: float = MAP_SCORE_THRESHOLD,
    class_map: Mapping[str, str] | None = None,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
    samples: int = 0,
    sample_dir: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_image: Callable[[ImageScores], None] | None = None,
) -> EvalRun:
    """Run ``detector`` over ``config``'s ``split`` and compute the metrics.

    Args:
        detector: any :class:`DetectorLike` (the ONNX :class:`Detector`, a two-stage
            pipeline, ...); ``detect`` returns boxes in original-image pixels.
        config: the data set.
        split: ``train`` / ``val`` / ``test``.
        score_threshold: operating threshold for P/R and the confusion matrix.
        match_iou: IoU for P/R and the confusion matrix.
        nms_iou: detector NMS IoU (``None``: the detector's default).
        map_score_threshold: score threshold of the detector run (low, for AP).
        class_map: explicit model class -> data set class pairs (see :func:`map_classes`).
        classes: evaluate only these data set classes (default: every matched one).
        limit: evaluate only the first ``limit`` images (sorted by path).
        samples: number of annotated images (evenly spread over the split) to write to
            ``sample_dir``.
        on_progress: called with ``(done, total)`` after each image.
        on_image: called with each image's :class:`ImageScores` (e.g. to score the same
            detections another way).

    Raises:
        EvalError: no class matches, or the split is empty after ``limit``.
        DatasetError: a bad label file or unreadable image.
        EdgeError: from the detector (model/inference errors), or a sample that cannot
            be written.
    """
    mapping = map_classes(detector.class_names, config.class_names, class_map, classes)
    items = config.samples(split)
    if limit is not None:
        items = items[: max(int(limit), 0)]
    if not items:
        raise EvalError(f"no images to evaluate (split {split!r}, limit {limit})")
    evaluator = DetectionEvaluator(
        class_names=mapping.eval_names, score_threshold=score_threshold, match_iou=match_iou
    )
    picks = _sample_indices(len(items), samples) if sample_dir is not None else set()
    written: list[Path] = []
    wanted = mapping.model_classes
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        image = _read_image(item.image_path)
        h, w = image.shape[:2]
        labels = item.labels(config.num_classes)
        gt_eval = mapping.data_to_eval[labels.class_ids]
        keep_gt = gt_eval >= 0
        gt_xyxy = labels.xyxy(w, h)[keep_gt]
        gt_cls = gt_eval[keep_gt]
        dets = detector.detect(
            image, score_threshold=map_score_threshold, iou_threshold=nms_iou, classes=wanted
        )
        pred_eval = mapping.model_to_eval[dets.class_ids]
        keep = pred_eval >= 0
        pred_xyxy, pred_scores, pred_cls = dets.xyxy[keep], dets.scores[keep], pred_eval[keep]
        evaluator.add_image(
            gt_xyxy=gt_xyxy,
            gt_class_ids=gt_cls,
            pred_xyxy=pred_xyxy,
            pred_scores=pred_scores,
            pred_class_ids=pred_cls,
        )
        if on_image is not None:
            on_image(ImageScores(gt_xyxy, gt_cls, pred_xyxy, pred_scores, pred_cls))
        if i in picks and sample_dir is not None:
            names = mapping.eval_names
            op = pred_scores >= score_threshold
            drawn = draw_sample(
                image,
                gt_xyxy,
                [names[int(c)] for c in gt_cls],
                pred_xyxy[op],
                [
                    f"{names[int(c)]} {s:.2f}"
                    for c, s in zip(pred_cls[op], pred_scores[op], strict=True)
                ],
            )
            path = sample_dir / f"{i:05d}_{item.image_path.stem}.jpg"
            sample_dir.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), drawn):
                raise EdgeError(f"cannot write sample image {path}")
            written.append(path)
        if on_progress is not None:
            on_progress(i + 1, len(items))
    seconds = time.perf_counter() - t0
    return EvalRun(
        metrics=evaluator.compute(),
        mapping=mapping,
        images=len(items),
        seconds=seconds,
        sample_paths=tuple(written),
    )


# -- the command --------------------------------------------------------------------------
def _command_line(args: argparse.Namespace) -> str:
    parts = ["safety-edge", "eval", "--task", args.task]
    for data in args.data:
        parts += ["--data", str(data)]
    parts += ["--model", args.model or DEFAULT_MODELS[args.task]]
    parts += ["--models-dir", str(args.models_dir), "--split", args.split, "--out", str(args.out)]
    parts += [
        "--score",
        f"{args.score:g}",
        "--iou",
        f"{args.iou:g}",
        "--samples",
        str(args.samples),
    ]
    if args.nms_iou is not None:
        parts += ["--nms-iou", f"{args.nms_iou:g}"]
    if args.map_score != MAP_SCORE_THRESHOLD:
        parts += ["--map-score", f"{args.map_score:g}"]
    if args.class_map:
        parts += ["--class-map", args.class_map]
    if args.classes:
        parts += ["--classes", args.classes]
    if args.limit is not None:
        parts += ["--limit", str(args.limit)]
    return shlex.join(parts)


def _split_names(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise EvalError("--classes needs at least one class name")
    return names


def _cmd_eval(args: argparse.Namespace) -> int:
    from edge.runtime.detector import Detector
    from edge.runtime.registry import discover_models, file_sha256
    from edge.tasks.workwear import MODEL_CLASSES as WORKWEAR_MODEL_CLASSES

    if args.iou <= 0.0:
        raise EvalError("--iou must be > 0")
    configs = [load_data_config(d) for d in args.data]
    config = merge_data_configs(configs, args.split)
    name = args.model or DEFAULT_MODELS[args.task]
    models = discover_models(args.models_dir)
    if name not in models:
        raise ModelError(
            f"model {name!r} not found in {str(args.models_dir)!r} "
            f"(have: {', '.join(sorted(models)) or 'none'})"
        )
    manifest = models[name]
    if args.score is None:  # the model's operating threshold, as the API and cameras use
        args.score = manifest.score_threshold
    classes = _split_names(args.classes)
    if classes is None and args.task == "workwear":
        classes = [n for n in config.class_names if n.strip().lower() in WORKWEAR_MODEL_CLASSES]
        if not classes:
            raise EvalError(
                f"--task workwear: the data set has no wear / no-wear class "
                f"({', '.join(config.class_names)}); name the classes with --classes"
            )
        args.classes = ",".join(classes)
    out = Path(args.out)
    bar = Progress(label=f"eval {args.task}")
    with Detector(manifest, intra_op_threads=args.threads) as detector:
        nms_iou = manifest.iou_threshold if args.nms_iou is None else args.nms_iou

        try:
            run = evaluate(
                detector,
                config,
                split=args.split,
                score_threshold=args.score,
                match_iou=args.iou,
                nms_iou=nms_iou,
                map_score_threshold=args.map_score,
                class_map=parse_class_map(args.class_map),
                classes=classes,
                limit=args.limit,
                samples=args.samples,
                sample_dir=out / "samples" if args.samples > 0 else None,
                on_progress=bar.update,
            )
        finally:
            bar.close()
    sha = file_sha256(manifest.model_path)
    context = ReportContext(
        task=args.task,
        command=_command_line(args),
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        model={
            "name": manifest.name,
            "file": str(manifest.model_path),
            "sha256": sha,
            "manifest_sha256": manifest.sha256,
            "sha256_ok": sha == manifest.sha256,
            "family": manifest.family,
            "input_size": list(manifest.input_size),
            "class_names": list(manifest.class_names),
        },
        dataset={
            "data_yaml": str(config.yaml_path),
            "data_yamls": [str(c.yaml_path) for c in configs],
            "root": str(config.root),
            "split": args.split,
            "images": run.images,
            "class_names": list(config.class_names),
        },
        class_map=dict(run.mapping.pairs),
        unmapped_model_classes=run.mapping.unmapped_model,
        unevaluated_dataset_classes=run.mapping.unevaluated_data,
        settings={
            "map_score_threshold": args.map_score,
            "score_threshold": args.score,
            "match_iou": args.iou,
            "nms_iou": nms_iou,
            "limit": args.limit,
            "samples": [str(p) for p in run.sample_paths],
        },
        timing={
            "images": run.images,
            "seconds": round(run.seconds, 3),
            "ms_per_image": round(1e3 * run.seconds / run.images, 2),
        },
    )
    report = build_report(run.metrics, context)
    json_path = out / f"eval_{args.task}.json"
    md_path = out / f"eval_{args.task}.md"
    write_json(report, json_path)
    write_markdown(report, md_path)
    s = report["summary"]

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(
        f"{args.task}: mAP50 {f(s['map50'])}  mAP50-95 {f(s['map50_95'])}  "
        f"P {f(s['precision_mean'])}  R {f(s['recall_mean'])}  "
        f"({run.images} images) -> {md_path}, {json_path}"
    )
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Register ``eval`` on the CLI's ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "eval",
        help="mAP, P/R and confusion matrix of a model on a YOLO data set split",
        description=(
            "Run a model over a YOLO data set split and write eval_<task>.json, "
            "eval_<task>.md and annotated samples to --out."
        ),
    )
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        action="append",
        metavar="DATA_YAML",
        help="data.yaml; repeat to score several data sets with the same classes as one",
    )
    p.add_argument("--model", default=None, help="model name (default: the task's name)")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, default=Path("var/eval"), help="report folder")
    p.add_argument(
        "--score",
        type=unit_interval,
        default=None,
        help="operating score threshold for P/R and the confusion matrix (default: the "
        "model manifest's score_threshold)",
    )
    p.add_argument(
        "--iou", type=unit_interval, default=0.5, help="IoU for P/R and the confusion matrix"
    )
    p.add_argument(
        "--nms-iou", type=unit_interval, default=None, help="NMS IoU (default: manifest's)"
    )
    p.add_argument(
        "--map-score",
        type=unit_interval,
        default=MAP_SCORE_THRESHOLD,
        help="detector score threshold for the AP run",
    )
    p.add_argument("--class-map", default=None, metavar="M=D,...", help="model=data pairs")
    p.add_argument(
        "--classes",
        default=None,
        metavar="NAME,...",
        help="evaluate only these data set classes (default: all the model predicts; for "
        "--task workwear the wear / no-wear classes the task reads, e.g. wear,no_wear)",
    )
    p.add_argument("--samples", type=int_range(0, 10**9), default=6, help="annotated sample images")
    p.add_argument("--limit", type=int_range(1, 10**9), default=None, help="first N images only")
    p.add_argument(
        "--threads",
        type=int_range(1, 256),
        default=None,
        help="onnxruntime intra-op threads",
    )
    p.set_defaults(func=_cmd_eval)
