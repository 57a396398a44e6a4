"""The ``safety-edge`` command line.

Sub-commands are registered by the module that owns the behaviour (``add_subcommands``
functions); this file only dispatches and owns the detection/model commands of the
foundation. Every failure prints one line ``error <code>: <cause>`` on stderr and exits
with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from edge import __version__
from edge.argtypes import int_range, unit_interval
from edge.errors import EdgeError, ImageDecodeError

if TYPE_CHECKING:
    from edge.runtime.registry import ModelManifest

log = logging.getLogger("edge.cli")

DEFAULT_MODELS_DIR = Path(os.environ.get("SAFETY_EDGE_MODELS", "models"))
DEFAULT_DETECTOR = "person_vehicle"
TASK_MODELS = {
    "person": DEFAULT_DETECTOR,
    "fence": DEFAULT_DETECTOR,
    "hardhat": "hardhat",
    "workwear": "workwear",
}
"""``detect --task``: the model each task uses unless ``--model`` names another."""


_THREADS = int_range(1, 256)
"""``--threads``: 1..256, the range ``runtime.intra_op_threads`` allows in the config."""


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """Decode an image file to BGR uint8, raising ImageDecodeError (4009) with the cause.

    EXIF orientation is ignored, as the HTTP API does: boxes and ``--area`` are in the
    frame the file header states, so the CLI and the API answer alike for one file.
    """
    if not path.is_file():
        why = "a folder, not a file" if path.is_dir() else "no such file"
        raise ImageDecodeError(f"cannot read image {str(path)!r}: {why}")
    data = np.fromfile(str(path), dtype=np.uint8)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageDecodeError(
            f"cannot decode image {str(path)!r}: empty, truncated or not a png/jpg/jpeg/bmp image"
        )
    return np.asarray(image, dtype=np.uint8)


def annotate(
    image: npt.NDArray[np.uint8],
    boxes: npt.NDArray[np.float32],
    labels: Sequence[str],
    polygon: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with boxes, labels and the polygon drawn."""
    out = image.copy()
    if polygon is not None:
        pts = np.rint(polygon).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], isClosed=True, color=(0, 200, 255), thickness=2)
    for box, label in zip(boxes, labels, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 255), 2)
        cv2.putText(
            out,
            label,
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 255),
            1,
            cv2.LINE_AA,
        )
    drawn: npt.NDArray[np.uint8] = out
    return drawn


def _annotate_path(base: Path, index: int, count: int) -> Path:
    return base if count == 1 else base.with_name(f"{base.stem}_{index}{base.suffix}")


def _check_annotate(args: argparse.Namespace) -> None:
    """Refuse ``--annotate`` before any work when OpenCV has no writer for its suffix or
    a copy would overwrite one of the input images."""
    if args.annotate is None:
        return
    base = Path(args.annotate)
    if not cv2.haveImageWriter(str(base)):
        raise EdgeError(
            f"--annotate {str(base)!r}: no image writer for {base.suffix or 'no suffix'!r} "
            "(use .jpg or .png)"
        )
    inputs = {Path(p).resolve() for p in args.images}
    for i in range(len(args.images)):
        out = _annotate_path(base, i, len(args.images))
        if out.resolve() in inputs:
            raise EdgeError(f"--annotate would overwrite the input image {str(out)!r}")


def _write_annotated(out_path: Path, image: npt.NDArray[np.uint8]) -> None:
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(out_path), image)
    except (OSError, cv2.error) as exc:
        raise EdgeError(f"cannot write {str(out_path)!r}: {exc}") from None
    if not ok:
        raise EdgeError(f"cannot write {str(out_path)!r}")


def _manifest(models: Mapping[str, ModelManifest], name: str, models_dir: Path) -> ModelManifest:
    if name not in models:
        raise EdgeError(
            f"model {name!r} not found in {str(models_dir)!r} "
            f"(have: {', '.join(sorted(models)) or 'none'}; run `make models`)",
            code=5001,
        )
    return models[name]


def _cmd_detect(args: argparse.Namespace) -> int:
    from edge.kernels.geometry import check_polygon_in_image, parse_area
    from edge.runtime.detector import Detector
    from edge.runtime.registry import discover_models
    from edge.tasks.fence import FenceTask, fence_result

    polygon = None
    if args.task == "fence":
        if args.area is None:
            raise EdgeError('--task fence needs --area "x1,y1,x2,y2,..."', code=4012)
        polygon = parse_area(args.area)
    elif args.area is not None:
        raise EdgeError(f"--area is for --task fence, not --task {args.task}", code=4012)
    _check_annotate(args)
    models = discover_models(args.models_dir)
    manifest = _manifest(models, args.model or TASK_MODELS[args.task], args.models_dir)
    if args.task in ("hardhat", "workwear"):
        return _detect_wearing(args, models, manifest)
    with Detector(manifest, intra_op_threads=args.threads) as detector:
        task = FenceTask(detector=detector, anchor=args.anchor, score_threshold=args.score)
        for i, path in enumerate(args.images):
            image = read_image(Path(path))
            if polygon is not None:
                check_polygon_in_image(polygon, image.shape[1], image.shape[0])
                dets = task.run(image, polygon)
                item: dict[str, Any] = {"image": str(path), **fence_result(dets)}
            else:
                dets = task.targets(image)
                item = {
                    "image": str(path),
                    "objects": [
                        {
                            "label": detector.class_names[int(c)],
                            "score": round(float(s), 4),
                            "box": box,
                        }
                        for c, s, box in zip(
                            dets.class_ids, dets.scores, dets.to_ltwh_dicts(), strict=True
                        )
                    ],
                }
            print(json.dumps(item, ensure_ascii=False, indent=None if args.json else 2))
            if args.annotate is not None:
                labels = [
                    f"{detector.class_names[int(c)]} {s:.2f}"
                    for c, s in zip(dets.class_ids, dets.scores, strict=True)
                ]
                out_path = _annotate_path(Path(args.annotate), i, len(args.images))
                _write_annotated(out_path, annotate(image, dets.xyxy, labels, polygon))
    return 0


def _detect_wearing(
    args: argparse.Namespace, models: Mapping[str, ModelManifest], manifest: ModelManifest
) -> int:
    """``detect --task hardhat|workwear``: per image the API's answer (``result``: the
    contract items, boxes ``[top, left, bottom, right]``) and its compliance ``summary``,
    with the gateway's default worn rule and person model."""
    from edge.config import WearingConfig
    from edge.runtime.detector import Detector
    from edge.tasks.hardhat import HardhatTask
    from edge.tasks.workwear import WorkwearTask

    task_type = HardhatTask if args.task == "hardhat" else WorkwearTask
    with contextlib.ExitStack() as stack:
        detector = stack.enter_context(Detector(manifest, intra_op_threads=args.threads))
        person = None
        if not args.no_person:
            name = args.person_model or DEFAULT_DETECTOR
            if name in models or args.person_model is not None:
                person_manifest = _manifest(models, name, args.models_dir)
                person = stack.enter_context(
                    Detector(person_manifest, intra_op_threads=args.threads)
                )
            else:
                log.warning(
                    "person model %r not in %s (run `make models`): answers come from the "
                    "%s model's boxes alone, without the worn rule",
                    name,
                    args.models_dir,
                    manifest.name,
                )
        task = task_type(
            detector=detector,
            score_threshold=args.score,
            person_detector=person,
            rule=WearingConfig().to_rule(),
        )
        if not task.model_classes:
            raise EdgeError(
                f"model {manifest.name!r} has no class the {args.task} task reads "
                f"(its classes: {', '.join(manifest.class_names)})",
                code=5001,
            )
        for i, path in enumerate(args.images):
            image = read_image(Path(path))
            analysis = task.analyse(image)
            answer = {"image": str(path), "result": analysis.items, "summary": analysis.summary()}
            print(json.dumps(answer, ensure_ascii=False, indent=None if args.json else 2))
            if args.annotate is not None:
                boxes = np.array(
                    [
                        [it["box"][1], it["box"][0], it["box"][3], it["box"][2]]
                        for it in answer["result"]
                    ],
                    dtype=np.float32,
                ).reshape(-1, 4)
                labels = [f"{it['classname']} {it['score']:.2f}" for it in analysis.items]
                out_path = _annotate_path(Path(args.annotate), i, len(args.images))
                _write_annotated(out_path, annotate(image, boxes, labels, None))
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from edge.runtime.registry import scan_models, sha256_ok

    scan = scan_models(args.models_dir)
    models = scan.manifests
    for bad in scan.problems:  # named on stderr; the good ones are still listed
        print(f"error: {bad.message}", file=sys.stderr)
    rows = []
    for name, m in sorted(models.items()):
        ok = sha256_ok(m)
        status = "missing" if ok is None else ("ok" if ok else "MISMATCH")
        rows.append(
            {
                "name": name,
                "family": m.family,
                "classes": len(m.class_names),
                "input": f"{m.input_size[0]}x{m.input_size[1]}",
                "sha256": status,
                "size_mb": round(m.model_path.stat().st_size / 1e6, 1) if ok is not None else "-",
                "licence": m.licence if len(m.licence) <= 40 else m.licence[:37] + "...",
            }
        )
    failed = 1 if scan.problems else 0
    if args.json:
        print(json.dumps(rows))
        return failed
    if not rows:
        print(f"no models in {args.models_dir} (run `make models`)")
        return failed
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0 if not failed and all(r["sha256"] == "ok" for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safety-edge",
        description="Hard-hat, workwear and electronic-fence detection on edge gateways.",
    )
    parser.add_argument("--version", action="version", version=f"safety-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("detect", help="run the detector on image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--task",
        choices=tuple(TASK_MODELS),
        default="person",
        help="fence: targets inside --area; person: all people/vehicles; hardhat: heads with "
        "hat colour or no_hat; workwear: people with workwear colour or no_workwear",
    )
    p.add_argument("--area", help='polygon "x1,y1,x2,y2,..." in pixels, 4..9 points')
    p.add_argument(
        "--anchor",
        choices=("bottom_center", "center", "overlap"),
        default="bottom_center",
        help="what must be inside the area",
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"manifest name (default: {DEFAULT_DETECTOR}; hardhat / workwear for those tasks)",
    )
    people = p.add_mutually_exclusive_group()
    people.add_argument(
        "--person-model",
        default=None,
        help=f"hardhat/workwear: people for the worn rule (default: {DEFAULT_DETECTOR}, "
        "when built)",
    )
    people.add_argument(
        "--no-person",
        action="store_true",
        help="hardhat/workwear: the model's boxes alone, no person detector or worn rule",
    )
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    p.add_argument("--score", type=unit_interval, default=None, help="score threshold, 0..1")
    p.add_argument("--threads", type=_THREADS, default=None, help="onnxruntime intra-op threads")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one compact JSON line per image")
    fmt.add_argument("--pretty", action="store_true", help="indented JSON (default)")
    p.add_argument("--annotate", metavar="OUT.jpg", help="write an annotated copy")
    p.set_defaults(func=_cmd_detect)

    m = sub.add_parser("models", help="installed models")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="list models with their sha256 check")
    ml.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=_cmd_models_list)

    from edge.api import commands as api_commands
    from edge.api import server as api_server

    api_server.add_subcommands(sub)
    api_commands.add_subcommands(sub)

    from edge.stream import commands as stream_commands

    stream_commands.add_subcommands(sub)

    from edge.eval import commands as eval_commands

    eval_commands.add_subcommands(sub)

    from edge.service import commands as service_commands

    service_commands.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"error {exc.code}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
