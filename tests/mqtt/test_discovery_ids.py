"""Home Assistant discovery ids: names that differ only in characters the object id cannot
hold (``Кран``/``Цех``, ``dock-1``/``dock_1``) must not share a config topic or unique id
(one sensor silently replacing the other); ids of names that do not collide stay as they
were (no new entities in Home Assistant after an upgrade); a collision that remains is
refused when the publisher is given the inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.mqtt import MqttConfig, Publisher
from edge.mqtt.discovery import discovery_collisions, discovery_messages
from edge.mqtt.schema import CameraTask
from edge.mqtt.topics import Topics

TOPICS = Topics("safety-edge", "gw-1")


def messages(cams: list[CameraTask]) -> tuple[list[str], list[str]]:
    msgs = discovery_messages(topics=TOPICS, ha_prefix="homeassistant", cameras=cams, version="9")
    return [m.topic for m in msgs], [m.payload["unique_id"] for m in msgs]


@pytest.mark.parametrize(
    "cams",
    [
        [CameraTask("Кран", "hardhat", ("зона",)), CameraTask("Цех", "hardhat", ("зона",))],
        [CameraTask("dock-1", "hardhat", ("a",)), CameraTask("dock_1", "hardhat", ("a",))],
        [CameraTask("cam", "hardhat", ("Dock",)), CameraTask("cam", "hardhat", ("dock",))],
        [
            CameraTask("Кран", "fence", ("зона",), lines=("вход",)),
            CameraTask("Цех", "fence", ("зона",), lines=("вход",)),
        ],
    ],
)
def test_names_that_slug_alike_get_distinct_ids(cams: list[CameraTask]) -> None:
    topics, uids = messages(cams)
    per_cam = 2 * len(cams[0].zones) + 2 * len(cams[0].lines)
    assert len(topics) == len(cams) * per_cam
    assert len(set(topics)) == len(topics), topics
    assert len(set(uids)) == len(uids), uids
    assert discovery_collisions(topics=TOPICS, ha_prefix="homeassistant", cameras=cams) == []


def test_ids_without_a_collision_are_unchanged() -> None:
    """Pinned: the ids every installation has had (also for names with dashes/spaces)."""
    cams = [
        CameraTask("Dock-Cam", "hardhat", ("loading bay",)),
        CameraTask("dock_1", "fence", ("a",), lines=("gate",)),
    ]
    topics, uids = messages(cams)
    assert topics == [
        "homeassistant/binary_sensor/gw-1/dock_cam_hardhat_loading_bay/config",
        "homeassistant/sensor/gw-1/dock_cam_hardhat_loading_bay_count/config",
        "homeassistant/binary_sensor/gw-1/dock_1_fence_a/config",
        "homeassistant/sensor/gw-1/dock_1_fence_a_count/config",
        "homeassistant/sensor/gw-1/dock_1_fence_gate_crossings_in/config",
        "homeassistant/sensor/gw-1/dock_1_fence_gate_crossings_out/config",
    ]
    assert uids[0] == "safety_edge_gw_1_dock_cam_hardhat_loading_bay"


def test_a_colliding_name_is_hashed_and_the_clean_one_kept() -> None:
    cams = [CameraTask("dock-1", "hardhat", ("a",)), CameraTask("dock_1", "hardhat", ("a",))]
    topics, _ = messages(cams)
    assert topics[2] == "homeassistant/binary_sensor/gw-1/dock_1_hardhat_a/config"  # clean
    assert topics[0].startswith("homeassistant/binary_sensor/gw-1/dock_1_hardhat_a_")
    assert len(topics[0].split("/")[3]) == len("dock_1_hardhat_a_") + 8


def test_a_remaining_collision_is_refused_at_start(tmp_path: Path) -> None:
    """Names whose joined form is the same (``cam_fence``/``fence``/``z`` and
    ``cam``/``fence``/``fence_z`` are both clean)
    cannot be told apart by the id: the publisher refuses the inventory with a clear error
    when discovery is on, and takes it when discovery is off."""
    cams = [CameraTask("cam_fence", "fence", ("z",)), CameraTask("cam", "fence", ("fence_z",))]
    clash = discovery_collisions(topics=TOPICS, ha_prefix="homeassistant", cameras=cams)
    assert clash and "cam_fence" in clash[0] and "fence_z" in clash[0]
    for ha in (True, False):
        config = MqttConfig.model_validate({"ha_discovery": ha, "port": 1})
        pub = Publisher(config=config, outbox_path=tmp_path / f"o{ha}.db", gateway_id="gw-1")
        try:
            if ha:
                with pytest.raises(ConfigError, match="Home Assistant"):
                    pub.set_inventory(cameras=cams)
            else:
                pub.set_inventory(cameras=cams)
        finally:
            pub.close()
