"""`config check` on camera source typos (before: `rtsp:/host` was reported as a missing
video file, `http:///x` and a missing `/dev/videoN` passed; at run the camera just stayed
offline, reconnecting)."""

from __future__ import annotations

from typing import Any

import pytest

from edge.service.config_check import check_text


def config(source: Any) -> str:
    src = source if isinstance(source, int) else f"'{source}'"
    return f"""
gateway_id: gw-src
cameras:
  - name: dock
    source: {src}
    tasks:
      fence:
        zones:
          - name: bay
            polygon: [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]
"""


def problems(source: Any, *, environment: bool) -> list[tuple[str, str, int | None]]:
    _, found = check_text(config(source), environment=environment)
    return [(p.severity, p.message, p.line) for p in found if p.path == "cameras[0].source"]


@pytest.mark.parametrize(
    ("source", "scheme"),
    [
        ("rtsp:/10.0.0.5/stream1", "rtsp"),
        ("RTSP:10.0.0.5/stream1", "rtsp"),
        ("http:/cam.local/video.mjpg", "http"),
        ("rtsps:/user:secret@cam/x", "rtsps"),
    ],
)
@pytest.mark.parametrize("environment", [False, True])
def test_a_scheme_without_slashes_is_an_error(source: str, scheme: str, environment: bool) -> None:
    found = problems(source, environment=environment)
    assert len(found) == 1, found  # not also "video file ... does not exist"
    severity, message, line = found[0]
    assert severity == "error" and f"did you mean {scheme}://" in message and line == 5
    assert "secret" not in message  # the password stays out of the report


@pytest.mark.parametrize("source", ["http:///video.mjpg", "rtsp://:554/stream", "rtsp://"])
def test_a_url_without_a_host_is_an_error(source: str) -> None:
    found = problems(source, environment=False)
    assert [(s, "no host" in m) for s, m, _ in found] == [("error", True)], found


@pytest.mark.parametrize(
    "source",
    ["rtsp://10.0.0.5:554/stream1", "rtsp://user:${CAM_PASS}@cam-3/x", "http://cam.local/v.mjpg"],
)
def test_good_urls_pass(source: str) -> None:
    assert [p for p in problems(source, environment=False) if p[0] == "error"] == []


def test_a_missing_camera_device_is_a_warning_here_only() -> None:
    for source in ("/dev/video97", 97, "97"):
        found = problems(source, environment=True)
        assert [(s, "/dev/video97 does not exist" in m) for s, m, _ in found] == [
            ("warning", True)
        ], found
        assert problems(source, environment=False) == []
