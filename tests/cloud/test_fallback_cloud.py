"""The fallback against a second, real safety-edge gateway acting as the cloud.

The cloud is ``safety-edge serve`` (uvicorn subprocess, real SQLite, real signing and
quota) with tiny planted ONNX models that answer *confidently and differently*; the
gateway under test is the app from :func:`edge.api.app.build_app`, served by uvicorn in a
thread of the test process, with real onnxruntime detectors whose planted boxes fall in
the uncertain band. Boxes are in 64x64 input pixels; a 64x64 image maps them 1:1.

- local hard-hat: ``blue`` (15..25, 15..25) 0.9 (sure) and ``head`` (39..49, 15..25)
  0.45 (uncertain); cloud: ``blue`` (16..26, 16..26) 0.97 and ``red`` (39..49, 15..25)
  0.95;
- local workwear: ``wear`` (22..42, 12..52) 0.5; cloud: ``no_wear`` there, 0.92;
- local fence: ``person`` (27..37, 30..50) 0.5 and a ``car`` outside the area; cloud:
  persons (27..37, 30..50) and (46..54, 32..48), 0.9 / 0.85.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from edge.api.app import build_app
from edge.api.store import AppRecord
from edge.cloud.fallback import FallbackClient
from edge.config import GatewayConfig
from edge.runtime.detector import Detector
from edge.tasks.base import DetectorLike
from edge.tasks.hardhat import ResultItem
from tests.api.server_fixture import INPUT, Server, free_port, jpeg_bytes, start_server
from tests.runtime.graphs import (
    fails_on_real_images_model,
    planted_model,
    write_model_and_manifest,
    yolov8_output,
)

AREA = "20,30,60,30,60,60,20,60"
HAT_PATH = "/v1/aiop/api/local/SafeHat/base/hat_detect"
WEAR_PATH = "/v1/aiop/api/local/UniformIdentity/base/clothes_detect"
FENCE_PATH = "/v1/aiop/api/local/ef-http/electron/fence"

Spec = tuple[list[tuple[float, float, float, float]], list[list[float]], list[str]]

CLOUD: dict[str, Spec] = {
    "hardhat": ([(21, 21, 10, 10), (44, 20, 10, 10)], [[0.97, 0], [0, 0.95]], ["blue", "red"]),
    "workwear": ([(32, 32, 20, 40)], [[0, 0.92]], ["wear", "no_wear"]),
    "fence": ([(32, 40, 10, 20), (50, 40, 8, 16)], [[0.9, 0], [0.85, 0]], ["person", "car"]),
}
LOCAL: dict[str, Spec] = {
    "hardhat": ([(20, 20, 10, 10), (44, 20, 10, 10)], [[0.9, 0], [0, 0.45]], ["blue", "head"]),
    "workwear": ([(32, 32, 20, 40)], [[0.5, 0]], ["wear", "no_wear"]),
    "fence": ([(32, 40, 10, 20), (10, 10, 6, 6)], [[0.5, 0], [0, 0.8]], ["person", "car"]),
}


def write_specs(folder: Path, specs: Mapping[str, Spec], *, broken: str | None = None) -> None:
    """One planted model per spec; ``broken``: that one passes the load check but emits an
    attribute row more on real frames, so every inference fails in the decoder (a real
    ModelError)."""
    for name, (boxes, scores, classes) in specs.items():
        out = yolov8_output(boxes, scores)
        if name == broken:
            model = fails_on_real_images_model(out, input_size=INPUT)
        else:
            model = planted_model({"output0": out}, input_size=INPUT)
        write_model_and_manifest(folder, model, name=name, class_names=classes, input_size=INPUT)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cloud")
    write_specs(root / "models", CLOUD)
    with start_server(root, write_model_files=False) as server:
        yield server


@pytest.fixture(scope="module")
def cloud_app(cloud: Server) -> AppRecord:
    app = cloud.create_app("cloud-app", calls=10_000)
    # the gateway's first request pays lazy imports and first-run costs (1-4 s on a loaded
    # 2-core machine); warm it so the fallback deadlines below measure the fallback
    with cloud.client(app) as c:
        assert c.hat_detect(jpeg_bytes()).ok and c.clothes_detect(jpeg_bytes()).ok
        assert c.fence([jpeg_bytes()], AREA).ok
    return app


@pytest.fixture(scope="module")
def local_detectors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Detector]]:
    folder = tmp_path_factory.mktemp("local-models")
    write_specs(folder, LOCAL)
    write_specs(folder / "broken", {"hardhat": LOCAL["hardhat"]}, broken="hardhat")
    dets = {
        name: Detector.from_name(name, folder, intra_op_threads=1)
        for name in ("hardhat", "workwear", "fence")
    }
    dets["broken"] = Detector.from_name("hardhat", folder / "broken", intra_op_threads=1)
    yield dets
    for d in dets.values():
        d.close()


def fallback_section(base_url: str, app: AppRecord, **kw: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "base_url": base_url,
        "app_key": app.app_key,
        "app_secret": app.app_secret,
        "service_codes": dict(app.service_codes),
        "deadline_s": 5.0,
        "daily_budget": None,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
        **kw,
    }


@contextlib.contextmanager
def gateway(
    tmp_path: Path,
    detectors: Mapping[str, DetectorLike | None],
    fallback: Mapping[str, Any],
    **api: Any,
) -> Iterator[httpx.Client]:
    """The gateway under test on uvicorn (a thread, free loopback port); yields a client
    with that base URL. Auth and metering are off: the fallback is under test here."""
    cfg = GatewayConfig.model_validate(
        {
            "data_dir": str(tmp_path / "gw"),
            "models_dir": str(tmp_path / "no-models"),
            "api": {"auth": False, "metered": False, "workers": 1, "deadline_s": 10.0, **api},
            "tasks": {"fence_classes": ["person", "car"]},
            "fallback": dict(fallback),
        }
    )
    app = build_app(cfg, detectors=detectors)  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < end:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hat_body() -> dict[str, Any]:
    return {"image": b64(jpeg_bytes())}


# -- through the gateway's HTTP API ------------------------------------------------------------


def test_uncertain_boxes_are_decided_by_the_cloud_answers_stay_contract_shaped(
    tmp_path: Path, cloud: Server, cloud_app: AppRecord, local_detectors: dict[str, Detector]
) -> None:
    dets = {k: local_detectors[k] for k in ("hardhat", "workwear", "fence")}
    with gateway(tmp_path, dets, fallback_section(cloud.base_url, cloud_app)) as client:
        r = client.post(HAT_PATH, json=hat_body())
        assert r.status_code == 200
        doc = r.json()
        assert set(doc) == {"code", "message", "result", "data"}, "no extra keys by default"
        assert doc["code"] == 0 and doc["result"] == doc["data"]
        assert doc["result"] == [
            {"box": [15, 39, 25, 49], "classname": "red_hat", "score": 0.95},
            {"box": [15, 15, 25, 25], "classname": "blue_hat", "score": 0.9},
        ]
        r = client.post(WEAR_PATH, json=hat_body())
        assert r.json()["result"] == [
            {"box": [12, 22, 52, 42], "classname": "no_workwear", "score": 0.92}
        ]
        r = client.post(FENCE_PATH, json={"image": [b64(jpeg_bytes())], "area": AREA})
        doc = r.json()
        assert doc == {
            "code": 0,
            "message": {"success": 1, "fail": 0},
            "result": [
                {
                    "target_num": 2,
                    "location": [
                        {"left": 27, "top": 30, "width": 10, "height": 20},
                        {"left": 46, "top": 32, "width": 8, "height": 16},
                    ],
                }
            ],
        }
        metrics = client.get("/metrics").text
        assert 'safety_edge_fallback_outcomes_total{status="cloud"} 3' in metrics
        assert "safety_edge_fallback_requests_total 3" in metrics
    # the cloud counted three signed, successful calls from this app
    stats = cloud.console("stats", app="cloud-app", minutes=5)["stats"]
    assert sum(row["requests"] for row in stats) >= 3


def test_report_source_marks_each_box(
    tmp_path: Path, cloud: Server, cloud_app: AppRecord, local_detectors: dict[str, Detector]
) -> None:
    dets = {k: local_detectors[k] for k in ("hardhat", "workwear", "fence")}
    fb = fallback_section(cloud.base_url, cloud_app, report_source=True)
    with gateway(tmp_path, dets, fb) as client:
        doc = client.post(HAT_PATH, json=hat_body()).json()
        assert [(i["classname"], i["source"]) for i in doc["result"]] == [
            ("red_hat", "cloud"),
            ("blue_hat", "local"),
        ]
        assert doc["fallback"]["status"] == "cloud" and doc["fallback"]["requests"] == 1
        doc = client.post(FENCE_PATH, json={"image": [b64(jpeg_bytes())], "area": AREA}).json()
        item = doc["result"][0]
        assert [loc["source"] for loc in item["location"]] == ["cloud", "cloud"]
        assert item["fallback"]["status"] == "cloud"


def test_cloud_down_gives_the_local_result_in_time(
    tmp_path: Path, cloud_app: AppRecord, local_detectors: dict[str, Detector]
) -> None:
    dets = {k: local_detectors[k] for k in ("hardhat", "workwear", "fence")}
    dead = f"http://127.0.0.1:{free_port()}"
    fb = fallback_section(dead, cloud_app, report_source=True, max_retries=1)
    with gateway(tmp_path, dets, fb) as client:
        t0 = time.monotonic()
        doc = client.post(HAT_PATH, json=hat_body()).json()
        assert time.monotonic() - t0 < 5.0
        assert doc["code"] == 0
        assert [(i["classname"], i["score"], i["source"]) for i in doc["result"]] == [
            ("blue_hat", 0.9, "local"),
            ("no_hat", 0.45, "local"),
        ]
        assert doc["fallback"]["status"] == "error"
        assert doc["fallback"]["detail"].startswith("connect:")
        metrics = client.get("/metrics").text
        assert 'safety_edge_fallback_failures_total{kind="connect"} 2' in metrics


def test_request_deadline_bounds_the_fallback(
    tmp_path: Path, cloud_app: AppRecord, local_detectors: dict[str, Detector]
) -> None:
    """A cloud that never answers: the HTTP answer still comes before api.deadline_s,
    with the local result (the fallback's own deadline_s is longer on purpose)."""
    from tests.cloud.fault_server import Action, FaultServer

    dets = {k: local_detectors[k] for k in ("hardhat", "workwear", "fence")}
    with FaultServer(app_key=cloud_app.app_key, secret=cloud_app.app_secret) as slow:
        slow.default = Action.hat_ok([], delay_s=30.0)
        fb = fallback_section(slow.base_url, cloud_app, deadline_s=20.0)
        with gateway(tmp_path, dets, fb, deadline_s=1.0) as client:
            t0 = time.monotonic()
            doc = client.post(HAT_PATH, json=hat_body()).json()
            took = time.monotonic() - t0
            assert doc["code"] == 0, doc
            assert [i["score"] for i in doc["result"]] == [0.9, 0.45]
            assert took < 1.0 + 0.3, took
            slow.close()  # the abandoned call ends now, not after its 20 s read timeout


def test_local_model_failure_asks_the_cloud(
    tmp_path: Path, cloud: Server, cloud_app: AppRecord, local_detectors: dict[str, Detector]
) -> None:
    dets = {"hardhat": local_detectors["broken"], "workwear": None, "fence": None}
    with gateway(tmp_path, dets, fallback_section(cloud.base_url, cloud_app)) as client:
        doc = client.post(HAT_PATH, json=hat_body()).json()
        assert doc["code"] == 0
        assert doc["result"] == [
            {"box": [16, 16, 26, 26], "classname": "blue_hat", "score": 0.97},
            {"box": [15, 39, 25, 49], "classname": "red_hat", "score": 0.95},
        ]
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway(tmp_path / "2", dets, fallback_section(dead, cloud_app)) as client:
        doc = client.post(HAT_PATH, json=hat_body()).json()
        assert doc["code"] == 5000
        assert "inference failed" in doc["details"] and "cloud fallback: error" in doc["details"]


def test_fallback_off_by_default_leaves_answers_alone(
    tmp_path: Path, local_detectors: dict[str, Detector]
) -> None:
    dets = {k: local_detectors[k] for k in ("hardhat", "workwear", "fence")}
    with gateway(tmp_path, dets, {}) as client:
        doc = client.post(HAT_PATH, json=hat_body()).json()
        assert [i["score"] for i in doc["result"]] == [0.9, 0.45]
        assert "safety_edge_fallback" not in client.get("/metrics").text


# -- FallbackClient directly: crops, quota --------------------------------------------------------


def test_hat_crop_boxes_map_back_to_image_coordinates(
    tmp_path: Path, cloud: Server, cloud_app: AppRecord
) -> None:
    """128x128 image, uncertain box (78..98, 30..50): the crop is (56..120, 8..72), 64x64,
    so the cloud's planted boxes come back 1:1 in crop pixels and are shifted by (56, 8)."""
    image = np.full((128, 128, 3), (200, 80, 20), np.uint8)
    sure: ResultItem = {"box": [100, 10, 110, 20], "classname": "blue_hat", "score": 0.9}
    unsure: ResultItem = {"box": [30, 78, 50, 98], "classname": "no_hat", "score": 0.4}
    cfg = GatewayConfig.model_validate(
        {"fallback": fallback_section(cloud.base_url, cloud_app, send="crop", crop_min_size=64)}
    ).fallback
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        r = fb.review_hat("hardhat", image_bgr=image, local=[sure, unsure])
    assert r.outcome.status == "cloud", r.outcome
    assert list(zip(r.items, r.sources, strict=True)) == [
        ({"box": [24, 72, 34, 82], "classname": "blue_hat", "score": 0.97}, "cloud"),
        ({"box": [23, 95, 33, 105], "classname": "red_hat", "score": 0.95}, "cloud"),
        (sure, "local"),
    ]


def test_fence_crop_applies_the_local_zone_rule(
    tmp_path: Path, cloud: Server, cloud_app: AppRecord
) -> None:
    """The crop is sent with the whole crop as area; the boxes mapped back are tested
    against the real polygon here: the second person's feet (106, 56) are outside."""
    from edge.types import Detections

    image = np.full((128, 128, 3), (200, 80, 20), np.uint8)
    poly = np.array([[64, 0], [100, 0], [100, 128], [64, 128]], np.float64)
    local = Detections(
        xyxy=np.array([[78, 30, 98, 50]], np.float32),
        scores=np.array([0.5], np.float32),
        class_ids=np.array([0], np.int32),
    )
    cfg = GatewayConfig.model_validate(
        {"fallback": fallback_section(cloud.base_url, cloud_app, send="crop", crop_min_size=64)}
    ).fallback
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        r = fb.review_fence(image_bgr=image, polygon=poly, local=local)
    assert r.outcome.status == "cloud", r.outcome
    assert r.locations(with_source=True) == [
        {"left": 83, "top": 38, "width": 10, "height": 20, "source": "cloud"}
    ]
    assert r.dets.class_ids.tolist() == [0]


def test_cloud_quota_exhausted_is_not_retried_and_counts_for_the_breaker(
    tmp_path: Path, cloud: Server
) -> None:
    app = cloud.create_app("tiny-quota", grants=["workwear"], calls=1)
    cfg = GatewayConfig.model_validate(
        {
            "fallback": fallback_section(
                cloud.base_url, app, max_retries=3, breaker_failures=2, breaker_cooldown_s=60
            )
        }
    ).fallback
    image = np.full((64, 64, 3), (200, 80, 20), np.uint8)
    local: list[ResultItem] = [{"box": [12, 22, 52, 42], "classname": "blue", "score": 0.5}]
    with FallbackClient(config=cfg, data_dir=tmp_path) as fb:
        first = fb.review_hat("workwear", image_bgr=image, local=local)
        assert first.outcome.status == "cloud"
        assert first.items[0]["classname"] == "no_workwear"
        outcomes = [
            fb.review_hat("workwear", image_bgr=image, local=local).outcome for _ in range(3)
        ]
        assert [o.status for o in outcomes] == ["error", "error", "breaker_open"]
        assert outcomes[0].detail.startswith("4029:") and outcomes[0].requests == 1
        m = fb.metrics()
        assert m["requests"] == 3 and m["failures"] == {"4029": 2}
        assert m["breaker"]["state"] == "open"
