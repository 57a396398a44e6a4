"""``safety-edge config example`` has every section of the config and names every
environment variable that overrides a config value, as the README promises ("commented;
every section"). Sections and variables come from the code (:class:`GatewayConfig`, the
``*_ENV`` names of :mod:`edge.config` and :mod:`edge.stream.chain_key`), not a copied list.
A section shipped commented out must pass ``config check`` once uncommented."""

from __future__ import annotations

import re

import pytest

import edge.config
import edge.stream.chain_key
from edge.config import GatewayConfig
from edge.service.config_check import check_text
from edge.service.example import EXAMPLE_YAML


def override_variables() -> set[str]:
    names = {
        v
        for mod in (edge.config, edge.stream.chain_key)
        for k, v in vars(mod).items()
        if k.endswith("_ENV") and isinstance(v, str)
    }
    assert {"SAFETY_EDGE_MQTT_PASSWORD", "SAFETY_EDGE_EVENTS_KEY"} <= names
    return names


def commented_sections() -> dict[str, str]:
    """Top-level sections shipped as ``# name:`` -> the block with ``# `` removed."""
    out = {}
    for m in re.finditer(r"^# ([a-z_]+):\n((?:#   .*\n)+)", EXAMPLE_YAML, re.M):
        body = "".join(line[2:] + "\n" for line in m.group(2).splitlines())
        out[m.group(1)] = f"{m.group(1)}:\n{body}"
    return out


def test_every_top_level_key_appears() -> None:
    """Before: no `fallback` or `runtime` section, not even commented."""
    missing = [
        name
        for name in GatewayConfig.model_fields
        if not re.search(rf"^(# )?{name}:", EXAMPLE_YAML, re.M)
    ]
    assert missing == []


def test_every_override_variable_is_named() -> None:
    """Before: SAFETY_EDGE_EVENTS_KEY and SAFETY_EDGE_FALLBACK_APP_KEY/SECRET were missing
    from the list of secrets that may come from the environment."""
    header = EXAMPLE_YAML.split("\n\n", 1)[0]
    assert sorted(v for v in override_variables() if v not in header) == []


@pytest.mark.parametrize("name", ["fallback", "runtime"])
def test_commented_sections_pass_config_check_uncommented(name: str) -> None:
    blocks = commented_sections()
    assert name in blocks, sorted(blocks)
    config, problems = check_text(blocks[name], source=f"example:{name}", environment=False)
    assert config is not None and [p for p in problems if p.severity == "error"] == []
    section = getattr(config, name)
    assert section != type(section)()  # the block sets something, not just defaults
    # the whole example with the section uncommented passes as well
    text = EXAMPLE_YAML.replace(
        "\n".join("# " + ln if ln else "#" for ln in blocks[name].rstrip("\n").splitlines()),
        blocks[name].rstrip("\n"),
    )
    assert text != EXAMPLE_YAML
    config, problems = check_text(text, environment=False)
    assert config is not None and [p for p in problems if p.severity == "error"] == []
