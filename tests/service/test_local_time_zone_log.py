"""At start-up the gateway names the local time zone it uses (for schedules without ``tz``
and times typed without an offset) in one INFO line, and warns when that zone is UTC while
a zone or line schedule has no ``tz`` (an image whose zone was never set runs a
``07:00-19:00`` shift one or two hours off). The whole gateway in-process (a tiny planted
ONNX model, a still video read by OpenCV, real SQLite files), started under TZ set for
this process."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config import config_from_mapping
from edge.service.gateway import GatewayService
from tests.service.running import running_gateway
from tests.service.test_stall_and_alerts import still_video, write_people_model
from tests.tz import local_tz


def _start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, zone_tz: str | None
) -> list[logging.LogRecord]:
    write_people_model(tmp_path / "models", "people")
    video = still_video(tmp_path / "still.avi")
    schedule: dict[str, Any] = {"days": "daily", "hours": ["07:00-19:00"], "tz": zone_tz}
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-tz",
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "cameras": [
                {
                    "name": "yard",
                    "source": str(video),
                    "loop": True,
                    "target_fps": 5,
                    "tasks": {
                        "fence": {
                            "zones": [{"name": "press", "schedule": schedule}],
                            "lines": [
                                {
                                    "name": "door",
                                    "points": [[0, 10], [60, 10]],
                                    "schedule": {"days": "mon-fri"},
                                }
                            ],
                        }
                    },
                }
            ],
        }
    )
    service = GatewayService(config=cfg)
    with running_gateway(service, start_under=caplog.at_level("INFO", logger="edge.service")):
        pass
    return [r for r in caplog.records if r.name == "edge.service"]


def _offset_now() -> str:
    off = datetime.now().astimezone().utcoffset()
    assert off is not None
    m = round(off.total_seconds() / 60)
    return f"UTC{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"


def test_utc_gateway_with_untimed_schedules_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with local_tz("UTC"):
        records = _start(tmp_path, caplog, None)
    infos = [r.getMessage() for r in records if r.getMessage().startswith("local time zone")]
    assert len(infos) == 1 and infos[0].startswith("local time zone: UTC (UTC+00:00)")
    assert "restart the gateway after changing it" in infos[0]
    warns = [r for r in records if r.getMessage().startswith("schedules without tz run in UTC")]
    assert len(warns) == 1 and warns[0].levelno == logging.WARNING
    assert "yard/fence/press, yard/fence/door" in warns[0].getMessage()
    assert "tz: Europe/Berlin" in warns[0].getMessage()


def test_berlin_gateway_names_its_zone_and_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with local_tz("Europe/Berlin"):
        offset = _offset_now()
        records = _start(tmp_path, caplog, None)
    msgs = [r.getMessage() for r in records]
    assert any(m.startswith(f"local time zone: Europe/Berlin ({offset})") for m in msgs), msgs
    assert not any(m.startswith("schedules without tz") for m in msgs)


def test_utc_gateway_names_only_the_untimed_schedules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with local_tz("UTC"):
        records = _start(tmp_path, caplog, "Europe/Berlin")
    msgs = [r.getMessage() for r in records]
    # the line's schedule still has no tz: it alone is named
    warns = [m for m in msgs if m.startswith("schedules without tz run in UTC")]
    assert len(warns) == 1 and "yard/fence/door" in warns[0] and "press" not in warns[0]
