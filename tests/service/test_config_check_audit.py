"""``config check`` findings of the s17 audit: mistakes that passed the check and failed
(or silently did nothing) at ``safety-edge run``."""

from __future__ import annotations

import textwrap

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
