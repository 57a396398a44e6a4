"""Where one frame's time goes in the Detector: preprocess / session.run / decode / NMS.

Runs the default detector (``models/person_vehicle.onnx``, YOLOv3-tiny at 416x416) on
``samples/vtest_frame.jpg`` (768x576) on this machine's CPU and reports each stage's
median milliseconds and share of the frame (medians: robust to other load on the
machine), plus frames per second. Every stage is timed
inside the same ``Detector.detect_with_timings`` calls, so the shares are ratios measured
in one run.

Bar: everything outside ``session.run`` (the part this package owns) takes at most 15 %
of the frame.

    .venv/bin/python benchmarks/bench_stages.py [--frames 100] [--threads N] [--quick]

Skips with a message (exit 0) when ``make models`` has not built the ONNX file.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BAR_OUTSIDE_SHARE = 0.15
STAGES = [
    ("preprocess", "preprocess_ms"),
    ("session.run", "inference_ms"),
    ("decode", "decode_ms"),
    ("nms + unmap", "nms_ms"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100, help="timed frames (default 100)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up frames")
    ap.add_argument("--quick", action="store_true", help="20 frames (smoke run)")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument("--manifest", type=Path, default=REPO / "models" / "person_vehicle.yaml")
    ap.add_argument("--image", type=Path, default=REPO / "samples" / "vtest_frame.jpg")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames = min(args.frames, 20)

    import cv2

    from benchmarks.common import write_results
    from edge.runtime.detector import Detector
    from edge.runtime.registry import load_manifest

    if not args.manifest.is_file():
        print(f"SKIP: no manifest at {args.manifest}; run `make models` first")
        return 0
    manifest = load_manifest(args.manifest)
    if not manifest.model_path.is_file():
        print(f"SKIP: {manifest.model_path} is not built; run `make models` first")
        return 0
    frame = cv2.imread(str(args.image))
    if frame is None:
        print(f"SKIP: cannot read {args.image}")
        return 0

    with Detector(manifest, intra_op_threads=args.threads, warmup=args.warmup) as det:
        for _ in range(args.warmup):
            det.detect(frame)
        samples = []
        t0 = time.perf_counter()
        for _ in range(args.frames):
            dets, t = det.detect_with_timings(frame)
            samples.append(t)
        wall_s = time.perf_counter() - t0
        providers = det.providers

    med = {key: statistics.median(getattr(t, key) for t in samples) for _, key in STAGES}
    mean = {key: statistics.fmean(getattr(t, key) for t in samples) for _, key in STAGES}
    total_med = sum(med.values())
    total_mean = sum(mean.values())
    rows: list[dict[str, object]] = []
    for label, key in STAGES:
        rows.append(
            {
                "stage": label,
                "median_ms": round(med[key], 3),
                "mean_ms": round(mean[key], 3),
                "share_of_frame": round(med[key] / total_med, 4),
            }
        )
    outside = (total_med - med["inference_ms"]) / total_med
    fps = args.frames / wall_s
    rows.append(
        {
            "stage": "frame (sum)",
            "median_ms": round(total_med, 3),
            "mean_ms": round(total_mean, 3),
            "share_of_frame": 1.0,
        }
    )
    ok = outside <= BAR_OUTSIDE_SHARE
    h, w = frame.shape[:2]
    notes = [
        f"model {manifest.name} ({manifest.family}, input {manifest.input_size[0]}x"
        f"{manifest.input_size[1]}), image {args.image.name} {w}x{h}, {len(dets)} detections",
        f"{args.frames} frames after {args.warmup} warm-up; providers {', '.join(providers)}; "
        f"intra-op threads {args.threads or 'default'}; "
        f"{platform.processor() or platform.machine()}",
        f"frames per second (wall, all stages): {fps:.1f}",
        f"outside session.run: {outside:.1%} of the frame (bar <= {BAR_OUTSIDE_SHARE:.0%}): "
        f"{'PASS' if ok else 'FAIL'}",
    ]
    write_results(
        "stages",
        rows,
        title="Detector stage split (share of one frame, CPU)",
        columns=["stage", "median_ms", "mean_ms", "share_of_frame"],
        notes=notes,
    )
    for r in rows:
        print(f"{r['stage']:<14} median {r['median_ms']:8.3f} ms  share {r['share_of_frame']:.1%}")
    for n in notes:
        print(n)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
