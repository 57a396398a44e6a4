"""Topic levels: names mosquitto would refuse as a malformed packet are refused at config
load, with the offending character named (control, format, surrogate, private-use and
noncharacter code points); ordinary Unicode names stay valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.config import load_config
from edge.mqtt import MqttConfig
from edge.mqtt.topics import validate_prefix, validate_segment

BAD = {
    "cam\x01": "U+0001",
    "cam\x7f": "U+007F",
    "cam\x9b": "U+009B",
    "cam\u200b": "U+200B",  # zero width space (format)
    "cam\ufeff": "U+FEFF",  # byte order mark (format)
    "cam\ud800": "U+D800",  # lone surrogate
    "cam\ue000": "U+E000",  # private use
    "cam\ufffe": "U+FFFE",  # noncharacter
    "cam\uffff": "U+FFFF",
    "cam\ufdd0": "U+FDD0",
    "cam\U0001fffe": "U+1FFFE",
}


@pytest.mark.parametrize(("name", "code"), sorted(BAD.items()))
def test_segment_refuses_control_format_and_noncharacters(name: str, code: str) -> None:
    with pytest.raises(ValueError, match=re.escape(code)):
        validate_segment(name, "camera")


@pytest.mark.parametrize("name", ["Halle-Süd", "камера1", "倉庫_2", "cam-1.a", "ü" * 128])
def test_segment_accepts_ordinary_unicode(name: str) -> None:
    assert validate_segment(name, "camera") == name


def test_prefix_with_a_control_character_is_refused_by_the_mqtt_config() -> None:
    assert validate_prefix("site/halle-süd") == "site/halle-süd"
    with pytest.raises(ValidationError, match="U\\+007F"):
        MqttConfig(prefix="site/hall\x7fe")


def test_gateway_config_refuses_a_camera_name_the_broker_would_refuse(tmp_path: Path) -> None:
    """A YAML config with such a camera name fails to load, naming the character."""
    path = tmp_path / "gw.yaml"
    path.write_text(
        'gateway_id: gw\ncameras:\n  - name: "cam\\uFFFE"\n    source: /dev/video0\n'
        "    tasks: {hardhat: {}}\nmqtt:\n  host: 127.0.0.1\n",
        encoding="utf-8",
    )
    with pytest.raises(Exception, match="U\\+FFFE") as info:
        load_config(path)
    assert "cameras.0.name" in str(info.value)
