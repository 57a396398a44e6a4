"""What the README quotes from the command line and the MQTT command reply is what the code
prints: the 5002 messages of the read-only commands, the argparse form of a bad option,
the ``ended`` values of an ``ack`` reply, the list of commands, and what ``make lint``
checks. Each test runs the real thing (the ``safety-edge`` parser in process, the ack
handler on a real SQLite file, the Makefile and pyproject as written) and compares."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from edge.cli import build_parser, main
from edge.mqtt.commands import AckCommand
from edge.service.acks import AckHandler
from edge.stream.acks import AckStore
from edge.stream.events import EventStore, ZoneEvent
from edge.stream.zones import ZoneMonitor
from tests.stream.test_zones import FRAME, IN_BOX, MONDAY_0800_UTC, monitor, tracked
from tests.test_cli_missing_database import READERS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def paragraph(start: str) -> str:
    """The README paragraph (or list item) that begins with ``start``: up to the next blank
    line, the next list item or the end."""
    i = README.index(start)
    ends = [j for j in (README.find("\n\n", i), README.find("\n- ", i + 1)) if j >= 0]
    return README[i : min(ends, default=len(README))]


def quoted_pattern(quote: str) -> re.Pattern[str]:
    """A README quote with ``…`` (elided path or tail) as a regex."""
    return re.compile(".*".join(re.escape(p) for p in quote.split("…")))


def test_missing_database_messages_are_quoted_as_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the README quoted only the gateway database's message for every command,
    `events list|prune|verify` included; they print `no events database at
    '.../events.sqlite3'`."""
    text = " ".join(paragraph("The commands that read or name existing data").split())
    quotes = [quoted_pattern(q) for q in re.findall(r"`(error 5002: [^`]*)`", text)]
    assert quotes
    used: set[int] = set()
    for argv, _ in READERS:
        rc = main([*argv, "--data-dir", str(tmp_path / "nothing")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error 5002: ")
        hits = [k for k, q in enumerate(quotes) if q.fullmatch(err)]
        assert hits, f"{' '.join(argv)} prints {err!r}, quoted in the README as none of {quotes}"
        used.update(hits)
        assert argv[0] in text  # the command is among those the paragraph names
    assert used == set(range(len(quotes)))  # no quote matches nothing


def test_bad_option_form_is_quoted_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "Every failure is one line `error <code>: <cause>`", while an out-of-range
    --score or --threads is argparse's usage plus one error line."""
    text = " ".join(paragraph("The fence item is the contract's").split())
    (quote,) = re.findall(r"`(safety-edge detect: error: [^`]*)`", text)
    m = re.search(r"argument (--\S+): (\S+)", quote)
    assert m is not None
    with pytest.raises(SystemExit) as exc:
        main(["detect", m.group(1), m.group(2), "image.jpg"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: safety-edge detect")
    assert err.rstrip("\n").splitlines()[-1] == quote


def _step(mon: ZoneMonitor, t: float, inside: bool) -> list[ZoneEvent]:
    dets = tracked([IN_BOX] if inside else [], [7] if inside else [])
    return mon.step(dets, t=t, wall_ms=MONDAY_0800_UTC + round(t * 1000), frame_size=FRAME)


def test_every_ended_value_of_an_ack_reply_is_documented(tmp_path: Path) -> None:
    """Before: the README gave `"ended": false` and `true`, not the `null` of a repeated
    acknowledgement."""
    mon = monitor(update_every_s=None)
    (start,) = _step(mon, 0.0, True)
    other = monitor(update_every_s=None)
    (gone,) = _step(other, 0.0, True)
    (gone_end,) = other.close(t=1.0, wall_ms=MONDAY_0800_UTC + 1000)
    db = tmp_path / "events.sqlite3"
    seen = set()
    with EventStore(path=db) as events, AckStore(path=db) as acks:
        events.add_many([start, gone, gone_end])
        handler = AckHandler(
            events=events,
            acks=acks,
            monitors=lambda c, t, z: mon if (c, t, z) == ("cam1", "fence", "gate") else None,
            clock_ms=lambda: MONDAY_0800_UTC + 5000,
        )
        for event_id in (start.event_id, gone_end.event_id, start.event_id):
            cmd = AckCommand.model_validate(
                {"schema": 1, "cmd": "ack", "event_id": event_id, "by": "Ana"}
            )
            seen.add(json.dumps(handler(cmd)["ended"]))
    assert seen == {"false", "true", "null"}
    i = README.index("Commands are answered on")
    section = " ".join(README[i : README.index("\n#", i)].split())
    missing = sorted(v for v in seen if f'"ended": {v}' not in section)
    assert missing == []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_all_commands_list_matches_the_parser() -> None:
    """Before: the list said `config check|example`; `config reference` exists too."""
    line = " ".join(paragraph("All commands:").split())
    listed: dict[str, str] = {}
    for item in re.findall(r"`([^`]+)`", line):
        if item.startswith("safety-edge"):
            continue
        name, _, actions = item.partition(" ")
        listed[name] = actions
    commands = _subcommands(build_parser())
    assert sorted(listed) == sorted(commands)
    for name, sub in commands.items():
        actions = sorted(_subcommands(sub))
        if listed[name] == "…":
            assert actions, name
        else:
            assert sorted(a for a in listed[name].split("|") if a) == actions, name


def test_make_lint_is_described_as_the_makefile_runs_it() -> None:
    """Before: "`make lint` runs ruff ... and mypy --strict on `edge/` and `tools/`",
    while ruff also checks tests/ and benchmarks/."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = makefile[makefile.index("\nlint:") :].split("\n\n")[0]
    (ruff_dirs,) = set(re.findall(r"ruff check (.+)", recipe))
    assert set(re.findall(r"ruff format --check (.+)", recipe)) == {ruff_dirs}
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    mypy = pyproject[pyproject.index("[tool.mypy]") :]
    files = re.search(r"^files = \[(.*)\]$", mypy.split("\n[", 1)[0], re.M)
    assert files is not None
    mypy_dirs = re.findall(r'"(\w+)"', files.group(1))
    text = " ".join(paragraph("- `make lint` runs").split())
    ruff_part, _, mypy_part = text.partition("`mypy --strict`")
    ruff_part = ruff_part.split("`ruff check`", 1)[1]
    mypy_part = mypy_part.split(";", 1)[0]
    assert sorted(re.findall(r"`(\w+)/`", ruff_part)) == sorted(ruff_dirs.split())
    assert sorted(re.findall(r"`(\w+)/`", mypy_part)) == sorted(mypy_dirs)
