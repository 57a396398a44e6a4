"""The README names only config keys that exist: checked against the reference that
``safety-edge config reference`` prints (generated from the pydantic models), not a copy.

- every backticked dotted key that starts with a config section (``storage.xxx``,
  ``cameras[].tasks.<kind>.zones[].xxx``, ``mqtt.commands.max_bytes: true`` ...);
- every backticked name given with a default (``\\`name\\` (default 30)``), dotted or not,
  is a key somewhere in the reference, with that default when the README quotes a number
  or a backticked value;
- the "Sections" table: each section path, and the keys listed for it;
- every fenced YAML block that looks like a gateway config passes ``config check``;
- the "Secrets from the environment" list names every variable that overrides a value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edge.config
import edge.stream.chain_key
from edge.service.config_check import check_text
from edge.service.reference import reference_markdown

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def reference() -> dict[str, dict[str, str]]:
    """Section path (``""`` = top level) -> key -> default, as the reference prints it."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in reference_markdown().splitlines():
        head = re.fullmatch(r"## `(.+)`", line)
        if head:
            title = head.group(1)
            current = sections.setdefault("" if title == "(top level)" else title, {})
            continue
        row = re.match(r"\| `([a-z_0-9]+)` \| (.*?) \| (.*?) \|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(3)
    return sections


REF = reference()
TOP_SECTIONS = {k for k in REF[""] if k in REF or f"{k}[]" in REF}
KIND = "<fence|hardhat|workwear>"


def normalize(path: str) -> str:
    """README spelling -> reference spelling: ``cameras[0]`` -> ``cameras[]``, a task kind
    (``fence``, ``<kind>``) under ``cameras[].tasks`` -> ``<fence|hardhat|workwear>``."""
    path = path.replace("\\|", "|")
    path = re.sub(r"\[\d+\]", "[]", path)
    return re.sub(
        r"^cameras\[\]\.tasks\.(<[^>]*>|fence|hardhat|workwear)", f"cameras[].tasks.{KIND}", path
    )


def key_exists(path: str) -> bool:
    """``path`` is a section of the reference, or a key of one (``tasks.<kind>``: any key
    of ``tasks``)."""
    path = normalize(path)
    if path in REF:
        return True
    parent, _, key = path.rpartition(".")
    keys = REF.get(parent)
    if keys is None:
        return False
    if key.startswith("<") and key.endswith(">"):
        return bool(keys)
    return key.removesuffix("[]") in keys


def default_of(name: str) -> list[str]:
    """The reference defaults of ``name``: one for a dotted path, every section's for a
    bare key name."""
    path = normalize(name)
    if "." in path:
        parent, _, key = path.rpartition(".")
        return [REF[parent][key]] if key in REF.get(parent, {}) else []
    return [keys[path] for keys in REF.values() if path in keys]


# a backticked span starting with a config section: `storage.snapshot_max_mb`,
# `cameras[].tasks.<fence\|hardhat\|workwear>`, `api.metered: false`. `cameras.<name>.online`
# (a /healthz field) is not one: the config spells the list `cameras[]`.
DOTTED = re.compile(r"`((?:%s)(?:\[\d*\])?(?:\.[a-z_0-9<>|\\]+(?:\[\d*\])?)+)(?::[^`]*)?`")


def dotted_keys(text: str) -> list[str]:
    sections = "|".join(sorted(k for k in TOP_SECTIONS if k != "cameras"))
    pattern = re.compile(DOTTED.pattern % (sections + r"|cameras(?=\[)"))
    return pattern.findall(text)


def test_reference_parsed() -> None:
    assert REF["storage"]["snapshot_retention_days"] == "`30.0`"
    assert {"api", "storage", "mqtt", "cameras", "runtime", "fallback"} <= TOP_SECTIONS
    assert key_exists("cameras[].tasks.<fence\\|hardhat\\|workwear>.zones[].min_dwell_s")
    assert key_exists("tasks.<kind>") and not key_exists("storage.max_age_days")


def test_dotted_config_keys_in_the_readme_exist() -> None:
    found = dotted_keys(README)
    assert len(found) > 30, found  # the extraction works
    missing = sorted({k for k in found if not key_exists(k)})
    assert missing == [], f"README names config keys the reference does not have: {missing}"


DEFAULTED = re.compile(
    r"`([a-z_][a-z_0-9.\[\]<>|\\]*)`\**,? \(?default(?:s to)? (`[^`]*`|[0-9][0-9.]*)?"
)


def _number(text: str) -> float | None:
    try:
        return float(text.strip("`"))
    except ValueError:
        return None


def test_keys_given_with_a_default_exist_with_that_default() -> None:
    """Before: the snapshot section named `max_age_days` (default 30) and `max_total_bytes`
    (default 2 GiB); the keys are `storage.snapshot_retention_days` / `snapshot_max_mb`."""
    checked = 0
    problems = []
    for m in DEFAULTED.finditer(README):
        name, quoted = m.group(1), m.group(2)
        defaults = default_of(name)
        if not defaults:
            problems.append(f"`{name}`: no such config key")
            continue
        checked += 1
        if quoted is None:
            continue
        if quoted.startswith("`") and not re.fullmatch(r"`[a-z_.<>]+`", quoted):
            # a value: `false`, `[0.25, 0.5]` (a tuple default prints as `(0.25, 0.5)`)
            ok = any(d.replace("(", "[").replace(")", "]") == quoted for d in defaults)
        elif quoted.startswith("`"):
            ok = True  # another key (`tasks.fence`): checked as a dotted key
        else:
            ok = any(_number(d) == float(quoted) for d in defaults)
        if not ok:
            problems.append(f"`{name}` (default {quoted}): the reference says {defaults}")
    assert checked >= 5
    assert problems == []


def section_table() -> list[tuple[str, str]]:
    start = README.index("| section | what |")
    rows = []
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        rows.append((cells[0].strip(), cells[1].strip()))
    return rows


def _outside_parentheses(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return "".join(out)


def test_sections_table_names_real_sections_and_keys() -> None:
    rows = section_table()
    assert len(rows) >= 10
    problems = []
    for first, what in rows:
        names = re.findall(r"`([^`]+)`", first)
        paths = []
        for name in names:
            if name.startswith("..."):  # `...zones[]`: the one section ending so
                ends = [p for p in REF if p.endswith(name[3:])]
                if len(ends) != 1:
                    problems.append(f"{name}: {len(ends)} sections end so")
                    continue
                name = ends[0]
            if not key_exists(name):
                problems.append(f"{name}: not a section or key")
            paths.append(normalize(name))
        if len(paths) != 1 or paths[0] not in REF:
            continue
        for key in re.findall(r"`([a-z_]+)`", _outside_parentheses(what)):
            if key not in REF[paths[0]]:
                problems.append(f"{paths[0]}: no key {key!r}")
    assert problems == []


def yaml_blocks() -> list[tuple[int, str]]:
    """Fenced ``yaml`` blocks of the README with their first line number."""
    blocks = []
    for m in re.finditer(r"^```yaml\n(.*?)^```", README, re.M | re.S):
        blocks.append((README.count("\n", 0, m.start()) + 2, m.group(1)))
    return blocks


def _gateway_config(text: str) -> bool:
    tops = re.findall(r"^([a-z_]+):", text, re.M)
    return bool(tops) and all(t in REF[""] for t in tops)


def test_yaml_blocks_that_are_gateway_configs_pass_config_check() -> None:
    configs = [(line, text) for line, text in yaml_blocks() if _gateway_config(text)]
    assert len(configs) >= 5, configs
    for line, text in configs:
        config, problems = check_text(text, source=f"README.md:{line}", environment=False)
        errors = [p for p in problems if p.severity == "error"]
        assert config is not None and errors == [], (line, problems)


@pytest.mark.parametrize("name", ["max_age_days", "max_total_bytes"])
def test_old_snapshot_names_are_gone(name: str) -> None:
    assert f"`{name}`" not in README


def test_secrets_list_names_every_override_variable() -> None:
    """Before: SAFETY_EDGE_CMD_TOKEN (mqtt.commands.token) was missing from the list."""
    names = {
        v
        for mod in (edge.config, edge.stream.chain_key)
        for k, v in vars(mod).items()
        if k.endswith("_ENV") and isinstance(v, str)
    }
    assert len(names) >= 7
    start = README.index("Secrets from the environment:")
    sentence = README[start : README.index("camera `source`.", start)]
    listed = {n for n in names if n in sentence} | {
        n
        for n in names
        if n.endswith("_SECRET") and f"{n.removesuffix('_SECRET')}_KEY/SECRET" in sentence
    }
    assert sorted(names - listed) == []
