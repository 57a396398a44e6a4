"""Shared pytest fixtures: paths to the repository, the shared data sets and built models."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODELS = REPO / "models"
SAMPLES = REPO / "samples"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip on a user's machine, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"training/validation data not present at {SHARED_DATA} (only in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_model_manifest() -> Path:
    """The built default detector's manifest; skips when `make models` has not run."""
    manifest = MODELS / "person_vehicle.yaml"
    if not (MODELS / "person_vehicle.onnx").is_file():
        pytest.skip("models/person_vehicle.onnx not built: run `make models`")
    return manifest
