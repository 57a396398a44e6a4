"""Read-only and prune/verify commands refuse a database file that does not exist.

A mistyped ``--data-dir`` (or ``--config`` whose ``data_dir`` is wrong) used to create a
fresh empty SQLite file there and answer ``[]`` with exit 0: "no applications", "no
events" - a lying answer and a stray file. Now each such command prints one line
``error 5002: no ... database at 'PATH' (HINT)`` and exits 2, creating no file and no
folder; the commands that create on purpose (``apps create``) still make the database on
first use. Real SQLite files, the real ``safety-edge`` parser (``edge.cli.main``), and once
a real subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.api.store import db_path
from edge.cli import main
from edge.stream.events import EventStore, events_db_path

REPO = Path(__file__).resolve().parents[1]

GATEWAY_READERS = [
    ["apps", "list"],
    ["apps", "show", "some-app"],
    ["quota", "show", "some-app"],
    ["alerts", "list"],
    # they name an existing application, so a missing database can only be a wrong folder
    ["apps", "disable", "some-app"],
    ["apps", "enable", "some-app"],
    ["apps", "rotate-secret", "some-app"],
    ["apps", "grant", "some-app", "--api", "fence"],
    ["quota", "add", "some-app", "--api", "fence", "--tier", "100k"],
]
EVENTS_READERS = [
    ["events", "list"],
    ["events", "list", "--since", "1h", "--jsonl"],
    ["events", "prune", "--older-than", "30d"],
    ["events", "verify"],
    ["events", "verify", "--no-snapshots"],
]
READERS = [(argv, "gateway") for argv in GATEWAY_READERS] + [
    (argv, "events") for argv in EVENTS_READERS
]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``safety-edge ARGV`` in process; (exit status, stdout, stderr)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def tree(root: Path) -> list[str]:
    """Everything under ``root``, relative, sorted (to show that nothing was created)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def db_file(kind: str, data_dir: Path) -> Path:
    return db_path(data_dir) if kind == "gateway" else events_db_path(data_dir)


@pytest.mark.parametrize(("argv", "kind"), READERS, ids=[" ".join(a) for a, _ in READERS])
def test_a_missing_data_dir_is_refused_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], kind: str
) -> None:
    wrong = tmp_path / "typo" / "deeper"
    rc, out, err = cli(capsys, *argv, "--data-dir", str(wrong))
    assert (rc, out) == (2, "")
    assert err.startswith(f"error 5002: no {kind} database at '{db_file(kind, wrong)}' ")
    assert "(check --data-dir)" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert tree(tmp_path) == []  # no folder, no file, no -wal/-shm


@pytest.mark.parametrize(("argv", "kind"), READERS, ids=[" ".join(a) for a, _ in READERS])
def test_an_existing_folder_without_the_database_stays_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], kind: str
) -> None:
    """The likelier typo: a real folder, just not the gateway's data directory."""
    rc, out, err = cli(capsys, *argv, "--data-dir", str(tmp_path))
    assert (rc, out) == (2, "")
    assert err.startswith(f"error 5002: no {kind} database at '{db_file(kind, tmp_path)}' ")
    assert tree(tmp_path) == []


def test_the_hint_names_where_the_data_dir_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAFETY_EDGE_DATA_DIR", raising=False)
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'from-config'}\n", encoding="utf-8")

    rc, _, err = cli(capsys, "events", "list", "--config", str(cfg))
    assert rc == 2
    assert err == (
        f"error 5002: no events database at '{tmp_path / 'from-config' / 'events.sqlite3'}' "
        f"(check data_dir in {cfg})\n"
    )
    rc, _, err = cli(capsys, "alerts", "list", "--config", str(cfg))
    assert rc == 2 and f"(check data_dir in {cfg})" in err

    monkeypatch.setenv("SAFETY_EDGE_DATA_DIR", str(tmp_path / "from-env"))
    rc, _, err = cli(capsys, "apps", "list")
    assert rc == 2
    assert err == (
        f"error 5002: no gateway database at '{tmp_path / 'from-env' / 'safety-edge.sqlite3'}' "
        "(check $SAFETY_EDGE_DATA_DIR); `safety-edge apps create` or the gateway creates it\n"
    )

    monkeypatch.delenv("SAFETY_EDGE_DATA_DIR")
    rc, _, err = cli(capsys, "events", "prune", "--older-than", "1d")
    assert rc == 2
    assert err == (
        "error 5002: no events database at 'var/events.sqlite3' (the default data "
        "directory ./var; give --data-dir DIR or --config FILE)\n"
    )
    assert tree(tmp_path) == ["gateway.yaml"]  # no var/, from-config/ or from-env/


def test_rotate_key_with_a_missing_db_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("old.key", "new.key"):
        (keys / name).write_bytes(bytes(range(32)) if name == "old.key" else bytes(32 * [7]))
    before = tree(tmp_path)
    db = tmp_path / "nowhere" / "events.sqlite3"
    rc, out, err = cli(
        capsys, "events", "rotate-key", "--db", str(db),
        "--key-file", str(keys / "old.key"), "--new-key-file", str(keys / "new.key"),
    )  # fmt: skip
    assert (rc, out) == (2, "")
    assert err == f"error 5002: no events database at '{db}' (check --db)\n"
    assert tree(tmp_path) == before


def test_first_use_still_creates_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first-run flow: ``apps create`` makes the database (and its folder);
    the read-only commands then answer from it."""
    data = tmp_path / "new" / "data"
    rc, _, err = cli(capsys, "apps", "create", "first-app", "--grant", "fence",
                     "--data-dir", str(data))  # fmt: skip
    assert (rc, err) == (0, "")
    assert db_path(data).is_file()
    rc, out, err = cli(capsys, "apps", "list", "--data-dir", str(data))
    assert (rc, err) == (0, "") and '"first-app"' in out
    rc, _, err = cli(capsys, "quota", "add", "first-app", "--api", "fence", "--tier", "100k",
                     "--data-dir", str(data))  # fmt: skip
    assert (rc, err) == (0, "")
    for argv in (["apps", "show", "first-app"], ["quota", "show", "first-app"]):
        rc, out, err = cli(capsys, *argv, "--data-dir", str(data))
        assert (rc, err) == (0, "") and '"remaining": 100000' in out
    rc, out, err = cli(capsys, "alerts", "list", "--data-dir", str(data))
    assert (rc, out, err) == (0, "[]\n", "")  # an honest empty answer: the database exists


def test_events_commands_answer_once_the_gateway_made_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    EventStore(path=events_db_path(tmp_path)).close()  # as `safety-edge run` does
    for argv, expected in (
        (["events", "list"], "[]\n"),
        (["events", "prune", "--older-than", "30d"], '{"deleted": 0}\n'),
    ):
        rc, out, err = cli(capsys, *argv, "--data-dir", str(tmp_path))
        assert (rc, out, err) == (0, expected, "")
    rc, out, err = cli(capsys, "events", "verify", "--data-dir", str(tmp_path))
    assert (rc, err) == (0, "") and '"rows": 0' in out


def test_as_a_subprocess(tmp_path: Path) -> None:
    """As a user runs it: ``python -m edge.cli apps list --data-dir TYPO``."""
    wrong = tmp_path / "var-typo"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "apps", "list", "--data-dir", str(wrong)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"error 5002: no gateway database at '{db_path(wrong)}' ")
    assert tree(tmp_path) == []
