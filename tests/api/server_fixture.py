"""A real gateway for tests and benchmarks: uvicorn in a subprocess on a free loopback
port, a temporary data directory (real SQLite file) and tiny synthetic ONNX models.

Usage::

    with start_server(tmp_path, api={"workers": 1}) as srv:
        app = srv.create_app("tester", calls=50)
        r = srv.post("hardhat", app, {"image": b64(jpeg_bytes())})

The models are YOLOv8-family graphs whose outputs are planted boxes that still depend on
the input (see ``tests/runtime/graphs.py``), so onnxruntime really runs them:

- ``hardhat`` (classes ``blue``, ``head``): a ``blue`` hat at (15..25, 15..25) score 0.9
  and a bare ``head`` at (39..49, 15..25) score 0.8, in 64x64 input pixels;
- ``workwear`` (``wear``, ``no_wear``): a person at (22..42, 12..52) score 0.9;
- ``fence`` (``person``, ``car``): a person at (27..37, 30..50) score 0.9 and a car at
  (7..13, 7..13) score 0.8.

A 64x64 test image maps boxes 1:1. ``slow_matmuls`` adds a chain of 512x512 MatMuls to
the ``hardhat`` model so one inference takes a noticeable time (busy/deadline tests).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from edge.api.contract import API_PATHS, APIS, PATH_PREFIX
from edge.api.store import AppRecord, Store, db_path
from edge.cloud.client import ContractClient
from tests.runtime.graphs import (
    fails_on_real_images_model,
    planted_model,
    write_model_and_manifest,
    yolov8_output,
)

REPO = Path(__file__).resolve().parents[2]
INPUT = (64, 64)
ADMIN_TOKEN = "test-admin-token"

HAT_BOXES = [(20.0, 20.0, 10.0, 10.0), (44.0, 20.0, 10.0, 10.0)]
HAT_SCORES = [[0.9, 0.0], [0.0, 0.8]]
WEAR_BOXES = [(32.0, 32.0, 20.0, 40.0)]
WEAR_SCORES = [[0.9, 0.0]]
FENCE_BOXES = [(32.0, 40.0, 10.0, 20.0), (10.0, 10.0, 6.0, 6.0)]
FENCE_SCORES = [[0.9, 0.0], [0.0, 0.8]]


# -- images --------------------------------------------------------------------------------


def image_bytes(
    w: int = 64, h: int = 64, *, fmt: str = ".jpg", bgr: tuple[int, int, int] = (200, 80, 20)
) -> bytes:
    """A solid-colour image file (default: blue in BGR) encoded as ``fmt``."""
    ok, buf = cv2.imencode(fmt, np.full((h, w, 3), bgr, np.uint8))
    assert ok
    return buf.tobytes()


def jpeg_bytes(w: int = 64, h: int = 64) -> bytes:
    return image_bytes(w, h, fmt=".jpg")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- models --------------------------------------------------------------------------------


def slow_planted_model(
    outputs: Mapping[str, np.ndarray], *, matmuls: int, n: int = 512
) -> onnx.ModelProto:
    """Like :func:`planted_model` (64x64 input) plus ``matmuls`` chained (n,n) MatMuls
    that depend on the input, so onnxruntime cannot fold them away."""
    w, h = INPUT
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])]
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([n, n], np.int64), "nn"),
        numpy_helper.from_array(np.full((n, n), 1.0 / n, np.float32), "w"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Expand", ["mean", "nn"], ["x0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"x{i}", "w"], [f"x{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"x{matmuls}"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["dep"]),
    ]
    outs = []
    for i, (name, value) in enumerate(outputs.items()):
        arr = np.ascontiguousarray(value, dtype=np.float32)
        inits.append(numpy_helper.from_array(arr, f"const_{i}"))
        nodes.append(helper.make_node("Add", [f"const_{i}", "dep"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(nodes, "slow_planted", inputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_models(models_dir: Path, *, slow_matmuls: int = 0) -> None:
    """Write the ``hardhat``, ``workwear`` and ``fence`` tiny models + manifests
    (``slow_matmuls`` > 0 makes the ``hardhat`` one slow)."""
    specs = {
        "hardhat": (HAT_BOXES, HAT_SCORES, ["blue", "head"]),
        "workwear": (WEAR_BOXES, WEAR_SCORES, ["wear", "no_wear"]),
        "fence": (FENCE_BOXES, FENCE_SCORES, ["person", "car"]),
    }
    for name, (boxes, scores, classes) in specs.items():
        out = {"output0": yolov8_output(boxes, scores)}
        model = (
            slow_planted_model(out, matmuls=slow_matmuls)
            if slow_matmuls and name == "hardhat"
            else planted_model(out, input_size=INPUT)
        )
        write_model_and_manifest(
            models_dir, model, name=name, class_names=classes, input_size=INPUT
        )


def write_models_with_broken_fence(models_dir: Path) -> None:
    """:func:`write_models` plus ``broken``, a fence model (classes person, car) that passes
    the load check but emits an attribute row more on real (non-uniform) frames: the
    session runs, the decoder fails at inference time; a uniform grey image works."""
    write_models(models_dir)
    out = yolov8_output([(32.0, 40.0, 10.0, 20.0)], [[0.9, 0.0]])
    write_model_and_manifest(
        models_dir,
        fails_on_real_images_model(out, input_size=(64, 64)),
        name="broken",
        class_names=["person", "car"],
        input_size=(64, 64),
    )


# -- the server -------------------------------------------------------------------------------


def console_login(
    client: httpx.Client,
    base: str,
    *,
    token: str = ADMIN_TOKEN,
    next_path: str = "/console/cameras",
) -> httpx.Response:
    """Log in through the console's form: fetch the login page for its CSRF field, post the
    token; returns the form post's response (303 to ``next_path`` on success)."""
    page = client.get(f"{base}/console/login")
    m = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert m is not None
    return client.post(
        f"{base}/console/login",
        data={"login_csrf": m.group(1), "token": token, "next": next_path},
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provider_headers(
    app_key: str, app_secret: str, path: str, body: str | bytes, ts: str | None = None
) -> dict[str, str]:
    """Headers as the provider's sample builds them (hashlib over the concatenation)."""
    ts = ts or str(int(time.time() * 1000))
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    sign = hashlib.md5((app_key + app_secret + ts + path).encode("utf-8") + raw).hexdigest()
    return {"Content-Type": "application/json", "AppKey": app_key, "Timestamp": ts, "Sign": sign}


@dataclass
class Server:
    """A running gateway subprocess. ``stop()`` is idempotent."""

    base_url: str
    root: Path
    config_path: Path
    data_dir: Path
    models_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    http: httpx.Client = field(repr=False)

    # -- apps ------------------------------------------------------------------------

    def store(self) -> Store:
        """A second connection to the gateway's SQLite file (close it after use)."""
        return Store(path=db_path(self.data_dir))

    def create_app(
        self,
        name: str,
        *,
        grants: Sequence[str] = APIS,
        calls: int | Mapping[str, int] | None = 100_000,
    ) -> AppRecord:
        """Create an app with ``grants`` and a package of ``calls`` per granted API."""
        with self.store() as st:
            app = st.create_app(name=name, description="test", grants=grants)
            for api in grants:
                n = calls.get(api) if isinstance(calls, Mapping) else calls
                if n:
                    st.add_package(app=app.app_key, api=api, tier="100k", calls=n)
        return app

    def path(self, api: str, app: AppRecord | None = None, *, code: str | None = None) -> str:
        sc = code if code is not None else app.service_codes[api] if app else "nocode"
        return f"{PATH_PREFIX}{sc}/{API_PATHS[api]}"  # type: ignore[index]

    # -- requests ------------------------------------------------------------------------

    def post(
        self,
        api: str,
        app: AppRecord,
        body: Any,
        *,
        ts: str | None = None,
        path: str | None = None,
        sign_path: str | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        timeout: float = 30.0,
    ) -> httpx.Response:
        """A signed request: ``body`` bytes as is, str UTF-8, else ``json.dumps``."""
        raw = (
            body
            if isinstance(body, bytes)
            else body.encode("utf-8")
            if isinstance(body, str)
            else json.dumps(body).encode("utf-8")
        )
        p = path or self.path(api, app)
        h = provider_headers(app.app_key, app.app_secret, sign_path or p, raw, ts)
        h.update(headers or {})
        return self.http.request(method, self.base_url + p, content=raw, headers=h, timeout=timeout)

    def contract(self, r: httpx.Response) -> dict[str, Any]:
        """The JSON body of a contract answer (asserts HTTP 200 and JSON)."""
        assert r.status_code == 200, (r.status_code, r.text[:300])
        doc = r.json()
        assert isinstance(doc, dict) and "code" in doc, doc
        if doc["code"] != 0:
            assert doc["message"] == "error" and isinstance(doc["details"], str), doc
        return doc

    def client(self, app: AppRecord, **kwargs: Any) -> ContractClient:
        return ContractClient(
            base_url=self.base_url,
            app_key=app.app_key,
            app_secret=app.app_secret,
            service_codes=app.service_codes,
            **kwargs,
        )

    def console(self, path: str, **params: Any) -> Any:
        r = self.http.get(
            f"{self.base_url}/console/api/{path}",
            params=params,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return r.json()

    def health(self) -> dict[str, Any]:
        r = self.http.get(f"{self.base_url}/healthz", timeout=5.0)
        assert r.status_code == 200
        doc: dict[str, Any] = r.json()
        return doc

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError(f"condition not met in {timeout} s")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def write_config(root: Path, port: int, api: Mapping[str, Any], tasks: Mapping[str, Any]) -> Path:
    cfg: dict[str, Any] = {
        "gateway_id": "test-gw",
        "data_dir": str(root / "data"),
        "models_dir": str(root / "models"),
        "api": {
            "host": "127.0.0.1",
            "port": port,
            "admin_token": ADMIN_TOKEN,
            "metrics_flush_s": 0.5,
            "workers": 2,
            "queue_size": 64,
            "intra_op_threads": 1,
            "db_busy_timeout_ms": 500,
            **api,
        },
        "tasks": {
            "fence": "fence",
            "hardhat": "hardhat",
            "workwear": "workwear",
            "fence_classes": ["person", "car"],
            # The planted hats are not on the planted person's head: these tests check the
            # contract's plumbing, so the worn rule (tests/tasks/test_wearing.py,
            # tests/api/test_summary.py) is off unless a test turns it on.
            "wearing": {"worn_rule": False},
            **tasks,
        },
    }
    path = root / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


_LAUNCH = (
    "import sys\n"
    "from edge.api.server import serve\n"
    "from edge.config import load_config\n"
    "serve(load_config(sys.argv[1]))\n"
)


@contextlib.contextmanager
def start_server(
    root: Path,
    *,
    api: Mapping[str, Any] | None = None,
    tasks: Mapping[str, Any] | None = None,
    slow_matmuls: int = 0,
    write_model_files: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    before_start: Callable[[Path], None] | None = None,
    timeout: float = 60.0,
) -> Iterator[Server]:
    """Start ``safety-edge serve`` (uvicorn) in a subprocess and wait for ``/healthz``.

    Args:
        root: an empty temporary folder (config, data dir, models, log go there).
        api, tasks: config overrides (``api.*`` and ``tasks.*`` keys).
        slow_matmuls: make the hardhat model slow (see :func:`slow_planted_model`).
        preexec_fn: run in the child before exec (e.g. resource limits).
        before_start: called with the data dir after the database exists, before start.
    """
    root.mkdir(parents=True, exist_ok=True)
    if write_model_files:
        write_models(root / "models", slow_matmuls=slow_matmuls)
    else:
        (root / "models").mkdir(exist_ok=True)
    data = root / "data"
    Store(path=db_path(data)).close()  # create + migrate before the server starts
    if before_start is not None:
        before_start(data)
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        cfg = write_config(root, port, api or {}, tasks or {})
        log_path = root / "server.log"
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("SAFETY_EDGE_ADMIN_TOKEN", None)
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, str(cfg)],
                cwd=str(REPO),
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
            )
        base = f"http://127.0.0.1:{port}"
        http = httpx.Client(timeout=30.0)
        server = Server(
            base_url=base,
            root=root,
            config_path=cfg,
            data_dir=data,
            models_dir=root / "models",
            process=proc,
            log_path=log_path,
            http=http,
        )
        end = time.monotonic() + timeout
        up = False
        while time.monotonic() < end and proc.poll() is None:
            try:
                if http.get(base + "/healthz", timeout=1.0).status_code == 200:
                    up = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        if up:
            try:
                yield server
            finally:
                server.stop()
            return
        server.stop()
        last_error = log_path.read_text(errors="replace")[-3000:]
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"gateway did not start:\n{last_error}")
