"""The worn rule and the opt-in compliance summary over HTTP: a real ``safety-edge serve``
subprocess (uvicorn, SQLite) with tiny planted models -- a hard-hat model (classes of
models/hardhat.yaml) that sees a red hat on one person's head and a yellow hat at the
other person's waist, and a person model serving the fence API and the worn rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.api.app import _with_summary, wants_summary
from edge.api.store import AppRecord
from edge.tasks.hardhat import assess_hats
from edge.types import Detections
from tests.api.server_fixture import Server, b64, start_server
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output

SIZE = 416
PERSON_A = (100.0, 60.0, 180.0, 380.0)
PERSON_B = (250.0, 60.0, 330.0, 380.0)
RED_ON_HEAD = (122.0, 48.0, 158.0, 82.0)
YELLOW_AT_WAIST = (300.0, 200.0, 336.0, 232.0)  # centre inside B's box, below the head


def cxcywh(b: tuple[float, ...]) -> list[float]:
    return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]


def write(models: Path, name: str, classes: list[str], boxes: list[Any], ids: list[int]) -> None:
    scores = [[0.9 if j == c else 0.0 for j in range(len(classes))] for c in ids]
    out = {"output0": yolov8_output([cxcywh(b) for b in boxes], scores)}
    model = planted_model(out, input_size=(SIZE, SIZE))
    write_model_and_manifest(models, model, name=name, class_names=classes, input_size=(SIZE, SIZE))


def tlbr(b: tuple[float, ...]) -> list[int]:
    return [int(b[1]), int(b[0]), int(b[3]), int(b[2])]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("summary")
    models = root / "models"
    write(
        models,
        "hardhat",
        ["none", "red", "blue", "white", "yellow"],
        [RED_ON_HEAD, YELLOW_AT_WAIST],
        [1, 4],
    )
    write(models, "workwear", ["wear", "no_wear"], [PERSON_A], [1])
    write(models, "fence", ["person", "car"], [PERSON_A, PERSON_B], [0, 0])
    with start_server(root, write_model_files=False, tasks={"wearing": {"worn_rule": True}}) as s:
        yield s


@pytest.fixture(scope="module")
def app(srv: Server) -> AppRecord:
    return srv.create_app("summary", calls=1000)


def image() -> str:
    ok, buf = cv2.imencode(".jpg", np.full((SIZE, SIZE, 3), 128, np.uint8))
    assert ok
    return b64(buf.tobytes())


def test_contract_answer_has_no_held_hat_and_no_summary(srv: Server, app: AppRecord) -> None:
    doc = srv.contract(srv.post("hardhat", app, {"image": image()}))
    assert set(doc) == {"code", "message", "result", "data"}  # the contract's keys only
    got = sorted((it["classname"], it["box"]) for it in doc["result"])
    # The red hat worn by A; B holds a yellow hat at the waist: no_hat on B's head region.
    assert got == [("no_hat", [60, 258, 140, 322]), ("red_hat", tlbr(RED_ON_HEAD))]
    assert doc["data"] == doc["result"]


def test_header_adds_the_summary(srv: Server, app: AppRecord) -> None:
    plain = srv.contract(srv.post("hardhat", app, {"image": image()}))
    doc = srv.contract(
        srv.post("hardhat", app, {"image": image()}, headers={"X-Safety-Edge-Summary": "1"})
    )
    assert doc["result"] == plain["result"]  # the summary changes nothing else
    s = doc["summary"]
    assert s["rule"] == "person"
    assert s["counts"] == {"compliant": 1, "violation": 1, "cannot_tell": 0}
    people = {tuple(p["person"]): p for p in s["people"]}
    a, b = people[tuple(tlbr(PERSON_A))], people[tuple(tlbr(PERSON_B))]
    assert (a["status"], a["reason"], a["classname"]) == ("compliant", "hat_worn", "red_hat")
    assert (b["status"], b["reason"]) == ("violation", "hat_not_worn")
    assert "yellow_hat" in b["details"]
    assert doc["result"][a["item"]]["classname"] == "red_hat"
    assert doc["result"][b["item"]]["classname"] == "no_hat"
    assert s["not_worn"] == [
        {
            "box": tlbr(YELLOW_AT_WAIST),
            "classname": "held_hat",
            "colour": "yellow_hat",
            "score": pytest.approx(0.9, abs=1e-3),
            "person": s["people"].index(b),
        }
    ]


def test_workwear_summary_and_header_off(srv: Server, app: AppRecord) -> None:
    doc = srv.contract(
        srv.post("workwear", app, {"image": image()}, headers={"X-Safety-Edge-Summary": "yes"})
    )
    assert [it["classname"] for it in doc["result"]] == ["no_workwear"]
    reasons = sorted((p["status"], p["reason"]) for p in doc["summary"]["people"])
    assert reasons == [("cannot_tell", "not_detected"), ("violation", "no_workwear")]
    off = srv.contract(
        srv.post("workwear", app, {"image": image()}, headers={"X-Safety-Edge-Summary": "0"})
    )
    assert "summary" not in off
    fence = srv.contract(
        srv.post(
            "fence",
            app,
            {"image": [image()], "area": "0,0,416,0,416,416,0,416"},
            headers={"X-Safety-Edge-Summary": "1"},
        )
    )
    assert "summary" not in fence and fence["result"][0]["target_num"] == 2


@pytest.mark.parametrize(
    ("default", "header", "expected"),
    [
        (False, None, False),
        (False, "1", True),
        (False, "TRUE", True),
        (True, None, True),
        (True, "0", False),
        (True, "off", False),
        (True, "maybe", True),  # unreadable: the configured default
        (False, "", False),
    ],
)
def test_wants_summary_table(default: bool, header: str | None, expected: bool) -> None:
    assert wants_summary(default, header) is expected


def test_summary_after_the_cloud_fallback_changed_the_list() -> None:
    """The summary is the gateway's own analysis: when the fallback replaced the list, its
    item indices would point at the wrong entries, so they are dropped."""
    heads = Detections(
        xyxy=np.array([RED_ON_HEAD], np.float32),
        scores=np.array([0.9]),
        class_ids=np.array([1], np.int32),
    )
    people = Detections(
        xyxy=np.array([PERSON_A], np.float32),
        scores=np.array([0.9]),
        class_ids=np.array([0], np.int32),
    )
    analysis = assess_hats(heads, ["red_hat"], people)
    same = _with_summary({"result": list(analysis.items)}, analysis, analysis.items)
    assert same["summary"]["people"][0]["item"] == 0 and "source" not in same["summary"]
    cloud = [{"box": [1, 2, 3, 4], "classname": "blue_hat", "score": 0.97}]
    changed = _with_summary({"result": cloud}, analysis, analysis.items)
    assert changed["summary"]["people"][0]["item"] is None
    assert changed["summary"]["source"] == "local"
    assert _with_summary({"result": cloud}, None, analysis.items) == {"result": cloud}
