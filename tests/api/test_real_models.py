"""The gateway's API with the shipped hard-hat and workwear models (real uvicorn, real
onnxruntime, the default person detector for the worn rule) on real validation photos:
the contract answer and its summary are the ones ``safety-edge detect`` prints for the
same photo. Skips without ``../shared/data`` or the model files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.api.store import AppRecord
from tests.api.server_fixture import Server, b64, start_server
from tests.conftest import MODELS, SHARED_DATA

PHOTOS = {
    "hardhat": SHARED_DATA / "hardhat" / "images" / "val" / "b001305.jpg",
    "workwear": SHARED_DATA / "vest" / "images" / "val" / "vest_00602.jpg",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"validation photos not present at {SHARED_DATA} (only in CI)")
    names = ("hardhat", "workwear", "person_vehicle")
    missing = [n for n in names if not (MODELS / f"{n}.onnx").is_file()]
    if missing:
        pytest.skip(f"models not built/shipped: {missing} (make models)")
    root = tmp_path_factory.mktemp("real_models")
    (root / "models").mkdir()
    for n in names:
        for ext in ("yaml", "onnx"):
            (root / "models" / f"{n}.{ext}").symlink_to(MODELS / f"{n}.{ext}")
    tasks = {"fence": "person_vehicle", "wearing": {"worn_rule": True}}
    with start_server(root, write_model_files=False, tasks=tasks) as s:
        yield s


@pytest.fixture(scope="module")
def app(srv: Server) -> AppRecord:
    return srv.create_app("real-models", calls=100)


def cli_answer(task: str, photo: Path) -> dict[str, object]:
    args = ["detect", "--task", task, "--json", "--threads", "1", "--models-dir", str(MODELS)]
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", *args, str(photo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    answer: dict[str, object] = json.loads(r.stdout)
    return answer


@pytest.mark.parametrize("task", ["hardhat", "workwear"])
def test_api_answers_as_the_cli(srv: Server, app: AppRecord, task: str) -> None:
    photo = PHOTOS[task]
    body = {"image": b64(photo.read_bytes())}
    doc = srv.contract(srv.post(task, app, body, headers={"X-Safety-Edge-Summary": "1"}))
    assert doc["code"] == 0, doc
    cli = cli_answer(task, photo)
    assert doc["result"] == cli["result"] and doc["result"], (doc["result"], cli["result"])
    assert doc["summary"] == cli["summary"]
    # without the header: the contract's keys only, the same items
    plain = srv.contract(srv.post(task, app, body))
    assert set(plain) == {"code", "message", "result", "data"} and plain["result"] == doc["result"]
