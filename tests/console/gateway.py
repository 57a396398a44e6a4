"""A whole gateway (``safety-edge run``) for the console's browser tests and benchmark.

:func:`start_gateway` writes the tiny planted models of the API tests
(:mod:`tests.api.server_fixture`), a ``gateway.yaml`` with one camera reading a looped
video (OpenCV's ``vtest.avi`` when Debian's opencv-doc is installed, else a generated
one) through the planted ``fence`` model, and starts ``python -m edge.cli run`` as a real
subprocess on a free loopback port. The planted model sees one ``person`` in every frame
(box :data:`PERSON_BOX` in frame pixels, feet at :data:`FEET`), so the ``gate`` zone
(:data:`GATE`) holds one incident for as long as it covers the feet: moving the zone
away ends it, moving it back starts a new one -- which is how the tests watch a zone
edit take effect without a restart. The ``door`` counting line (:data:`DOOR`) is there for
the line editor's tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import yaml

from tests.api.server_fixture import ADMIN_TOKEN, free_port, write_models
from tests.polling import wait

REPO = Path(__file__).resolve().parents[2]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FRAME = (768, 576)
"""Frame size (width, height) of the camera video."""
PERSON_BOX = (324.0, 264.0, 444.0, 504.0)
"""The planted person (x1, y1, x2, y2) in frame pixels (64x64 model, letterboxed)."""
FEET = (384.0, 504.0)
GATE = [[250, 300], [560, 300], [560, 560], [250, 560]]
"""The ``gate`` zone at start: it holds the planted person's feet."""
DOOR = [[100, 420], [700, 420]]
"""The ``door`` counting line at start (drawn left to right: walking down the image is
``in``); the planted person stands still below it, so it counts nothing."""


def camera_video(folder: Path) -> Path:
    """vtest.avi when installed, else a generated 768x576 MJPG clip of moving shapes."""
    if VTEST.is_file():
        return VTEST
    path = folder / "camera.avi"
    w, h = FRAME
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, FRAME)
    assert vw.isOpened(), "cv2.VideoWriter cannot write MJPG avi"
    for i in range(40):
        img = np.full((h, w, 3), (70, 96, 120), np.uint8)
        cv2.rectangle(img, (0, h // 2), (w, h), (90, 110, 90), -1)
        cv2.circle(img, (40 + i * 15, 120), 30, (220, 220, 220), -1)
        vw.write(img)
    vw.release()
    return path


def gateway_config(root: Path, *, port: int, **extra: Any) -> Path:
    """``gateway.yaml`` for :func:`start_gateway` (``extra`` keys replace top-level ones)."""
    cfg: dict[str, Any] = {
        "gateway_id": "console-gw",
        "data_dir": str(root / "data"),
        "models_dir": str(root / "models"),
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "admin_token": ADMIN_TOKEN,
            "metrics_flush_s": 0.5,
            "workers": 1,
            "intra_op_threads": 1,
            "alert_rules": {"auth_failure_burst": 3},
        },
        "tasks": {
            "fence": "fence",
            "hardhat": "hardhat",
            "workwear": "workwear",
            "fence_classes": ["person", "car"],
        },
        "cameras": [
            {
                "name": "gate-cam",
                "source": str(camera_video(root)),
                "loop": True,
                "realtime": True,
                "target_fps": 4,
                "tasks": {
                    "fence": {
                        "zones": [
                            {
                                "name": "gate",
                                "polygon": GATE,
                                "classes": ["person"],
                                "min_dwell_s": 0.3,
                                "cooldown_s": 0.8,
                                "update_every_s": None,
                            }
                        ],
                        "lines": [{"name": "door", "points": DOOR, "classes": ["person"]}],
                    }
                },
            }
        ],
        "service": {"stop_timeout_s": 10, "flush_timeout_s": 1, "log_format": "json"},
    }
    cfg.update(extra)
    path = root / "gateway.yaml"
    text = "# console test gateway -- comments must survive zone edits\n" + yaml.safe_dump(
        cfg, sort_keys=False
    )
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Gateway:
    """A running ``safety-edge run`` child; ``stop()`` is idempotent."""

    base_url: str
    root: Path
    config_path: Path
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait(pred, timeout, interval=0.05):
        raise AssertionError(f"{what}: not within {timeout} s")


@contextlib.contextmanager
def in_process_gateway(
    cfg: Path, *, ready: Callable[[Any], bool], camera: str = "gate-cam"
) -> Iterator[Any]:
    """``safety-edge run``'s service in this process, as ``run`` starts it (the
    :class:`GatewayService` with its uvicorn, the console attached), yielded once
    ``ready(service)`` holds (30 s at most) and stopped on exit. ``camera`` must have a
    running pipeline."""
    from edge.api.console.service_backend import attach_console
    from edge.config import load_config
    from edge.service.gateway import GatewayService

    svc = GatewayService(config=load_config(cfg))
    svc.start()
    try:
        attach_console(svc, config_path=cfg)
        assert svc.cameras[camera].pipeline is not None, svc.cameras[camera].reasons
        wait_for(lambda: ready(svc), 30, "a first frame")
        yield svc
    finally:
        svc.stop()


@contextlib.contextmanager
def start_gateway(
    root: Path,
    *,
    before_start: Callable[[Path], None] | None = None,
    config: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> Iterator[Gateway]:
    """Start ``safety-edge run`` on a fresh folder; waits until ``/healthz`` answers.

    ``before_start(data_dir)``: seed the databases first (the folder exists).
    """
    root.mkdir(parents=True, exist_ok=True)
    write_models(root / "models")
    data = root / "data"
    data.mkdir(exist_ok=True)
    if before_start is not None:
        before_start(data)
    port = free_port()
    cfg = gateway_config(root, port=port, **dict(config or {}))
    log_path = root / "gateway.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for k in ("SAFETY_EDGE_ADMIN_TOKEN", "NOTIFY_SOCKET", "WATCHDOG_USEC"):
        env.pop(k, None)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
            cwd=str(REPO),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    gw = Gateway(
        base_url=f"http://127.0.0.1:{port}",
        root=root,
        config_path=cfg,
        data_dir=data,
        process=proc,
        log_path=log_path,
    )
    try:
        end = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"gateway exited {proc.returncode}:\n{gw.log()[-4000:]}")
                try:
                    if http.get(gw.base_url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > end:
                    raise AssertionError(f"gateway not up within {timeout} s:\n{gw.log()[-4000:]}")
                time.sleep(0.1)
        yield gw
    finally:
        gw.stop()
