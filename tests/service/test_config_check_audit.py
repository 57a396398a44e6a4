"""``config check`` findings of the s17 audit: mistakes that passed the check and failed
(or silently did nothing) at ``safety-edge run``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from edge.service.config_check import Problem, check_text


def _cfg(zone_lines: str, **extra: str) -> str:
    body = textwrap.dedent(
        """\
        gateway_id: gw-1
        cameras:
          - name: gate
            source: rtsp://cam/stream
            tasks:
              fence:
                zones:
                  - name: footpath
        """
    )
    body += textwrap.indent(textwrap.dedent(zone_lines), " " * 12)
    for key, value in extra.items():
        body += f"{key}: {value}\n"
    return body


def by_path(problems: list[Problem], severity: str = "error") -> dict[str, str]:
    return {p.path: p.message for p in problems if p.severity == severity}


def test_percent_polygon_gets_a_warning_and_slip_an_error() -> None:
    _, problems = check_text(
        _cfg("polygon: [[50, 30], [80, 30], [100, 45], [100, 82], [50, 57]]\n"),
        environment=False,
    )
    warns = by_path(problems, "warning")
    assert "percentages" in warns["cameras[0].tasks.fence.zones[0].polygon"]
    config, problems = check_text(
        _cfg("polygon: [[50, 30], [80, 30], [100, 45]]\nnormalized: false\n"),
        environment=False,
    )
    assert config is not None and not problems
    config, problems = check_text(
        _cfg("polygon: [[0.5, 0.3], [1.05, 0.3], [1.05, 0.82], [0.5, 0.57]]\n"),
        environment=False,
    )
    assert config is None
    (msg,) = by_path(problems).values()
    assert "looks like 0-1 fractions" in msg and "'footpath'" in msg


def _plain(**extra: str) -> str:
    body = "gateway_id: gw-1\ncameras:\n  - name: gate\n    source: rtsp://cam/stream\n"
    body += "    tasks: {fence: {zones: [{name: z, polygon: [[0, 0], [0.5, 0], [0.5, 0.5]]}]}}\n"
    for key, value in extra.items():
        body += f"{key}: {value}\n"
    return body


def test_a_provider_typo_is_an_error_with_did_you_mean() -> None:
    for key in ("runtime", "api"):
        config, problems = check_text(
            _plain(**{key: "{providers: [tensortt, cpu]}"}), environment=False
        )
        assert config is None
        msg = by_path(problems)[f"{key}.providers"]
        assert "'tensortt'" in msg and "did you mean 'tensorrt'?" in msg
    config, problems = check_text(
        _plain(runtime="{providers: [TensorRT, CUDAExecutionProvider, cpu]}"), environment=False
    )
    assert config is not None, problems


def _models_with(tmp_path: Path, manifest: Path, **changes: str) -> Path:
    """A models folder holding the real default model under a manifest with ``changes``."""
    d = tmp_path / "models"
    d.mkdir()
    data = yaml.safe_load(manifest.read_text())
    (d / data["file"]).symlink_to(manifest.parent / data["file"])
    data.update(changes)
    (d / manifest.name).write_text(yaml.safe_dump(data))
    return d


def test_a_model_sha256_mismatch_is_an_error_at_check(
    tmp_path: Path, default_model_manifest: Path
) -> None:
    d = _models_with(tmp_path, default_model_manifest, sha256="0" * 64)
    text = _plain(models_dir=str(d))
    config, problems = check_text(text)
    assert config is None
    errs = by_path(problems)
    assert "does not match the manifest's sha256" in errs["cameras[0].tasks.fence"]
    assert "will not run: no task can run" in errs["cameras[0].tasks"]
    # start-up: warnings, the loader turns the task off and other cameras still run
    config, problems = check_text(text, env_errors=True)
    assert config is not None
    assert "does not match" in by_path(problems, "warning")["cameras[0].tasks.fence"]
    # the real manifest passes
    config, problems = check_text(_plain(models_dir=str(default_model_manifest.parent)))
    assert config is not None and not by_path(problems), problems


def test_a_model_name_typo_suggests_the_close_name(default_model_manifest: Path) -> None:
    text = _plain(models_dir=str(default_model_manifest.parent)).replace(
        "{fence: {zones:", "{fence: {model: person_vehical, zones:"
    )
    config, problems = check_text(text)
    assert config is None
    assert (
        "did you mean 'person_vehicle'?" in by_path(problems, "warning")["cameras[0].tasks.fence"]
    )
    assert "no task can run" in by_path(problems)["cameras[0].tasks"]
