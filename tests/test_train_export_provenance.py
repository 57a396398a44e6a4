"""``train_yolo export`` keeps a manifest's provenance: re-exporting without ``--licence`` /
``--source`` / ``--description`` keeps the replaced manifest's texts, and a new manifest
cannot be written without them. Runs without torch (the check comes before any export)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools.train_yolo import _provenance, main


def test_reexport_keeps_the_replaced_manifests_texts(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump({"licence": "CC BY 4.0, by X", "source": "trained here", "description": "d"})
    )
    kept = _provenance(manifest, "", "", "")
    assert kept == {"licence": "CC BY 4.0, by X", "source": "trained here", "description": "d"}
    given = _provenance(manifest, "MIT", "", "new words")
    assert given == {"licence": "MIT", "source": "trained here", "description": "new words"}


def test_new_manifest_needs_licence_and_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="--licence and --source needed"):
        _provenance(tmp_path / "new.yaml", "", "", "")
    out, manifest = tmp_path / "m.onnx", tmp_path / "m.yaml"
    argv = ["export", "--name", "none", "--runs", str(tmp_path), "--out", str(out)]
    assert main([*argv, "--manifest", str(manifest), "--licence", "MIT"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("export: --source needed") and str(manifest) in err
    assert not out.exists() and not manifest.exists()
