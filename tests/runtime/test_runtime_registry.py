"""Model manifests: validation errors, path resolution, sha256, discovery."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge.errors import ModelError
from edge.runtime.registry import (
    NOT_A_MANIFEST,
    ModelManifest,
    discover_models,
    file_sha256,
    load_manifest,
    scan_models,
    sha256_ok,
)
from tests.runtime.graphs import (
    manifest_dict,
    planted_model,
    write_model_and_manifest,
    yolov8_output,
)


def _write(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return path


def test_valid_manifest_defaults_and_resolution(tmp_path: Path) -> None:
    p = _write(tmp_path / "m.yaml", manifest_dict())
    m = load_manifest(p)
    assert m.family == "yolov8"
    assert m.input_size == (640, 640)
    assert m.channel_order == "rgb" and m.letterbox and m.pad_position == "center"
    assert m.scale == pytest.approx(1 / 255)
    assert m.num_classes == 2
    assert m.manifest_path == p.resolve()
    assert m.model_path == (tmp_path / "m.onnx").resolve()
    assert m.sha256 == "ab" * 32


def test_file_resolves_against_manifest_folder_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "models"
    sub.mkdir()
    p = _write(sub / "m.yaml", manifest_dict(file="weights/m.onnx"))
    monkeypatch.chdir(tmp_path)
    assert load_manifest(p).model_path == (sub / "weights" / "m.onnx").resolve()


def test_sha256_is_normalised_to_lower_case(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path / "m.yaml", manifest_dict(sha256="AB" * 32)))
    assert m.sha256 == "ab" * 32


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (manifest_dict(sha256=None), "sha256: Field required"),
        (manifest_dict(licence=None), "licence: Field required"),
        (manifest_dict(class_names=None), "class_names: Field required"),
        ({**manifest_dict(), "colour": "red"}, "colour: Extra inputs are not permitted"),
        (manifest_dict(family="yolov9"), "family: Input should be"),
        (manifest_dict(sha256="xyz"), "sha256: Value error, must be 64 hex digits"),
        (manifest_dict(input_size=[0, 640]), "input_size"),
        (manifest_dict(input_size=[640]), "input_size"),
        (manifest_dict(class_names=[]), "at least one class name"),
        (manifest_dict(class_names=["a", "a"]), "duplicate class names"),
        (manifest_dict(std=[1, 0, 1]), "std must be > 0"),
        (manifest_dict(score_threshold=1.5), "score_threshold"),
        (manifest_dict(channel_order="gbr"), "channel_order"),
        (manifest_dict(name="../evil"), "name: Value error"),
        (manifest_dict(family="yolov3"), "requires 'anchors'"),
        (manifest_dict(anchors=[[[10, 14]]]), "'anchors' only applies to family yolov3"),
        (manifest_dict(decoded=True), "'decoded' only applies to family yolox"),
        (manifest_dict(box_format="yxyx"), "'box_format' only applies to family ssd"),
        (manifest_dict(family="yolov3", anchors=[[[10, -1]]]), "anchor sizes must be > 0"),
        (manifest_dict(family="yolox", strides=[]), "strides"),
    ],
)
def test_bad_fields_raise_model_error_naming_the_field(
    tmp_path: Path, doc: dict[str, Any], fragment: str
) -> None:
    p = _write(tmp_path / "bad.yaml", doc)
    with pytest.raises(ModelError) as ei:
        load_manifest(p)
    assert fragment in str(ei.value)
    assert str(p) in str(ei.value)
    assert ei.value.code == 5001


def test_bad_yaml_not_mapping_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="invalid YAML"):
        load_manifest(_write(tmp_path / "a.yaml", "name: [unclosed\n"))
    with pytest.raises(ModelError, match="expected a mapping"):
        load_manifest(_write(tmp_path / "b.yaml", "- just\n- a list\n"))
    with pytest.raises(ModelError, match="cannot read"):
        load_manifest(tmp_path / "absent.yaml")


def test_manifest_that_is_not_text(tmp_path: Path) -> None:
    """An image or a Latin-1 file saved as ``*.yaml`` in the models folder: a ModelError
    naming the file (before: UnicodeDecodeError, a traceback from every command that
    lists the models)."""
    png = tmp_path / "hardhat.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ModelError, match=r"hardhat\.yaml: cannot read: 'utf-8' codec"):
        load_manifest(png)
    (problem,) = scan_models(tmp_path).problems
    assert re.search(r"hardhat\.yaml: cannot read", problem.message)
    png.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ModelError, match="cannot read"):
        load_manifest(png)


def test_family_specific_fields_accepted_for_their_family(tmp_path: Path) -> None:
    yolox = load_manifest(
        _write(tmp_path / "x.yaml", manifest_dict(family="yolox", strides=[8, 16], decoded=True))
    )
    assert yolox.yolox_strides == [8, 16] and yolox.decoded
    assert ModelManifest.model_validate(manifest_dict(family="yolox")).yolox_strides == [8, 16, 32]
    ssd = ModelManifest.model_validate(
        manifest_dict(family="ssd", box_format="yxyx", has_background=True)
    )
    assert ssd.box_format == "yxyx" and ssd.has_background
    v3 = ModelManifest.model_validate(
        manifest_dict(family="yolov3", anchors=[[[10, 14], [23, 27]]])
    )
    assert v3.anchors == [[(10.0, 14.0), (23.0, 27.0)]]


def test_manifest_is_immutable() -> None:
    m = ModelManifest.model_validate(manifest_dict())
    with pytest.raises(ValueError, match="frozen"):
        m.name = "other"


def test_sha256_ok_true_false_none(tmp_path: Path) -> None:
    model = planted_model({"out": yolov8_output([(1, 1, 1, 1)], [[0.5, 0.5]])})
    p = write_model_and_manifest(tmp_path, model)
    m = load_manifest(p)
    assert m.sha256 == file_sha256(tmp_path / "planted.onnx")
    assert sha256_ok(m) is True
    bad = load_manifest(write_model_and_manifest(tmp_path, model, name="bad", sha256="0" * 64))
    assert sha256_ok(bad) is False
    (tmp_path / "planted.onnx").unlink()
    assert sha256_ok(m) is None


def test_discover_models_keys_by_name(tmp_path: Path) -> None:
    _write(tmp_path / "one.yaml", manifest_dict(name="one"))
    _write(tmp_path / "two.yml", manifest_dict(name="two", family="yolox"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    found = discover_models(tmp_path)
    assert sorted(found) == ["one", "two"]
    assert found["two"].family == "yolox"
    assert found["one"].manifest_path == (tmp_path / "one.yaml").resolve()


def test_discover_models_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        discover_models(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match=r"models folder .*file is not a folder"):
        discover_models(tmp_path / "file")


def test_a_name_declared_twice_leaves_out_both_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", manifest_dict(name="same"))
    _write(tmp_path / "b.yaml", manifest_dict(name="same"))
    _write(tmp_path / "c.yaml", manifest_dict(name="other"))
    scan = scan_models(tmp_path)
    assert sorted(scan.manifests) == ["other"]
    assert [p.path.name for p in scan.problems] == ["a.yaml", "b.yaml"]
    assert all("declared by both" in p.message and p.name == "same" for p in scan.problems)


def test_one_invalid_manifest_leaves_the_others_loaded(tmp_path: Path) -> None:
    """A misspelt key in one user manifest used to make discovery raise for the whole
    folder, switching off every model (the shipped one included)."""
    _write(tmp_path / "a.yaml", manifest_dict(name="a"))
    _write(tmp_path / "b.yaml", {**manifest_dict(name="b"), "score_treshold": 0.4})
    assert sorted(discover_models(tmp_path)) == ["a"]
    scan = scan_models(tmp_path)
    assert sorted(scan.manifests) == ["a"]
    (problem,) = scan.problems
    assert problem.path == tmp_path / "b.yaml" and problem.name == "b"
    assert "b.yaml" in problem.message and "score_treshold" in problem.message
    assert scan.problem_for("b") is problem and scan.problem_for("a") is None


def test_a_stray_yaml_is_named_as_no_manifest(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", manifest_dict(name="a"))
    _write(tmp_path / "data.yaml", "path: ../datasets/x\ntrain: images/train\nnames:\n  0: a\n")
    _write(tmp_path / "broken.yml", "name: [unclosed\n")
    scan = scan_models(tmp_path)
    assert sorted(scan.manifests) == ["a"]
    by_file = {p.path.name: p.message for p in scan.problems}
    assert by_file["data.yaml"].endswith(NOT_A_MANIFEST)
    assert "data.yaml" in by_file["data.yaml"]
    assert "invalid YAML" in by_file["broken.yml"]
    assert "data.yaml" in scan.summary() and "broken.yml" in scan.summary()


def test_shipped_manifest_validates(repo_root: Path) -> None:
    path = repo_root / "models" / "person_vehicle.yaml"
    if not path.is_file():
        pytest.skip("models/person_vehicle.yaml not present")
    m = load_manifest(path)
    assert m.family == "yolov3"
    assert m.anchors is not None and len(m.anchors) == 2
    assert "person" in m.class_names
    assert np.all(np.array(m.input_size) > 0)
