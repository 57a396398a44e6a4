"""The unauthenticated ``/healthz`` names an API model that fails every call (audit).

Before, ``/healthz`` of ``safety-edge serve`` said ``"fence": "up"`` and ``status: ok``
while every fence request answered 5001 (the model loads, its decoder fails on real
frames). Now 3 calls raising in a row (``MODEL_FAILURES_OFF``) make that API ``failing``
(the word only: no error text on the unauthenticated page) and ``status`` ``degraded``;
the admin's ``/console/api/status`` gives the reason. One success makes it ``up`` again.

Real parts: ``safety-edge serve`` under uvicorn in a subprocess, a tiny ONNX model run by
onnxruntime that fails only on non-uniform images, signed requests, a real SQLite file.
"""

from __future__ import annotations

from pathlib import Path

from tests.api.server_fixture import (
    b64,
    image_bytes,
    jpeg_bytes,
    start_server,
    write_models_with_broken_fence,
)

FULL_AREA = "0,0,63,0,63,63,0,63"
REAL = {"image": [b64(jpeg_bytes())], "area": FULL_AREA}  # not uniform: the model fails
GREY = {"image": [b64(image_bytes(bgr=(128, 128, 128)))], "area": FULL_AREA}  # it works


def test_healthz_says_failing_after_three_5001_in_a_row(tmp_path: Path) -> None:
    write_models_with_broken_fence(tmp_path / "models")
    with start_server(
        tmp_path,
        tasks={"fence": "broken", "workwear": None},
        write_model_files=False,
    ) as s:
        app = s.create_app("failing-app")
        health = s.health()
        assert health["status"] == "ok"
        assert health["models"]["fence"] == "up"
        for k in range(3):
            doc = s.contract(s.post("fence", app, REAL))
            assert doc["code"] == 5001, doc
            health = s.health()
            assert health["models"]["fence"] == ("failing" if k == 2 else "up"), (k, health)
            assert health["status"] == ("degraded" if k == 2 else "ok"), (k, health)
        # A working model stays up; the unauthenticated page gives no error text.
        assert health["models"] == {
            "hardhat": "up",
            "workwear": "model not available",
            "fence": "failing",
        }
        status = s.console("status")  # the admin sees why
        assert "the last 3 calls failed" in status["models"]["fence"], status["models"]
        assert "ModelError" in status["models"]["fence"]
        assert status["models"]["hardhat"] == "up"
        # A call that succeeds makes it up again (a bad image is not a broken model).
        assert s.contract(s.post("fence", app, GREY))["code"] == 0
        health = s.health()
        assert health["models"]["fence"] == "up" and health["status"] == "ok"
        assert s.console("status")["models"]["fence"] == "up"
        assert s.process.poll() is None
