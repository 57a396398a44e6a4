"""Keyed (HMAC-SHA256) links of the events hash chain, on real SQLite files with the real
``safety-edge events verify`` command (in-process through its argparse entry, and once as
its own process): keyed, unkeyed and mixed chains, an attacker without the key re-hashing
edited rows with plain SHA-256, a wrong key, no key, a keyed -> unkeyed downgrade, the tail
deleted with the head moved back, pruning, and the key never appearing in any output."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.config import config_from_mapping
from edge.errors import ConfigError
from edge.stream.chain_key import EVENTS_KEY_ENV, ChainKey, load_chain_key
from edge.stream.commands import add_subcommands
from edge.stream.events import EventStore, EventStoreError, ZoneEvent
from edge.stream.evidence import CHAINED_COLUMNS, canonical_row, row_hash
from tests.stream.chain_events import T0, ChainSite, ev

REPO = Path(__file__).resolve().parents[2]
KEY = "k3y-0f-the-s1te-a-gateway-0123456789"  # what the key file holds (text)
OTHER_KEY = "another-key-entirely-9876543210"


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENTS_KEY_ENV, raising=False)


class Site(ChainSite):
    """A data folder with an events database, and key files kept outside it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        keys = root / "keys"
        keys.mkdir(parents=True)
        self.key_file = keys / "events.key"
        self.key_file.write_text(KEY + "\n")
        self.other_key_file = keys / "other.key"
        self.other_key_file.write_text(OTHER_KEY + "\n")
        self.key = ChainKey(secret=KEY.encode())

    def write(self, events: list[ZoneEvent], *, key: ChainKey | None = None) -> None:
        with EventStore(path=self.db, key=key) as store:
            assert store.add_many(events) == len(events)

    def rewrite_plain(
        self,
        from_seq: int,
        *,
        label: str | None = "nobody",
        keep_scheme: bool = False,
        clear_keying: bool = False,
    ) -> None:
        """What someone who can write the file but lacks the key does after an edit: set
        ``label`` on row ``from_seq``, then recompute every link from it to the end with
        plain SHA-256 (as the README documents the canonical form) and move the head."""
        conn = sqlite3.connect(self.db)
        cols = ", ".join(CHAINED_COLUMNS)
        prev = conn.execute("SELECT hash FROM events WHERE seq = ?", (from_seq - 1,)).fetchone()
        prev_hash = (
            prev[0] if prev else conn.execute("SELECT anchor_hash FROM events_chain").fetchone()[0]
        )
        rows = conn.execute(
            f"SELECT {cols} FROM events WHERE seq >= ? ORDER BY seq", (from_seq,)
        ).fetchall()
        with conn:
            for r in rows:
                values = dict(zip(CHAINED_COLUMNS, r, strict=True))
                if values["seq"] == from_seq and label is not None:
                    values["label"] = label
                values["prev_hash"] = prev_hash
                h = hashlib.sha256(canonical_row(values)).hexdigest()
                scheme = "" if keep_scheme else ", link = 'sha256', key_id = NULL"
                conn.execute(
                    f"UPDATE events SET label = ?, prev_hash = ?, hash = ?{scheme} WHERE seq = ?",
                    (values["label"], prev_hash, h, values["seq"]),
                )
                prev_hash = h
            conn.execute(
                "UPDATE events_chain SET head_seq = ?, head_hash = ?",
                (rows[-1][0], prev_hash),
            )
            if clear_keying:
                conn.execute(
                    "UPDATE events_chain SET key_id = NULL, keyed_from_seq = NULL, head_mac = NULL"
                )
        conn.close()


@pytest.fixture()
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def verify(
    site: Site, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["events", "verify", "--data-dir", str(site.data), "--no-snapshots", *extra]
    )
    code = int(args.func(args))
    out, err = capsys.readouterr()
    assert KEY not in out and KEY not in err and OTHER_KEY not in out + err
    return code, (json.loads(out) if out else {}), err


def first_break(report: dict[str, Any]) -> tuple[str, int, int | None]:
    b = report["first_break"]
    return b["kind"], b["row"], b["seq"]


# -- keyed chains that verify ----------------------------------------------------------------
def test_a_keyed_chain_verifies_with_its_key(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site.write([ev(k) for k in range(6)], key=site.key)
    rows = site.rows()
    assert {(r["link"], r["key_id"]) for r in rows} == {("hmac-sha256", site.key.key_id)}
    for r in rows:  # each link is HMAC-SHA256(key, the bytes a plain link hashes)
        expected = hmac.new(KEY.encode(), canonical_row(r), hashlib.sha256).hexdigest()
        assert r["hash"] == expected != row_hash(r)
    code, report, err = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 0 and err == "" and report["ok"] is True
    assert report["links"] == {"keyed": 6, "unkeyed": 0, "unverified": 0}
    assert report["key"] == {
        "key_id": site.key.key_id,
        "keyed_from_seq": 1,
        "given": site.key.key_id,
        "head_authenticated": True,
    }
    monkeypatch.setenv(EVENTS_KEY_ENV, KEY)  # the same key from the environment
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["key"]["head_authenticated"] is True


def test_an_unkeyed_chain_verifies_as_before(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(5)])
    assert {(r["link"], r["key_id"]) for r in site.rows()} == {("sha256", None)}
    code, report, err = verify(site, capsys)
    assert code == 0 and err == "" and report["ok"] is True
    assert report["links"] == {"keyed": 0, "unkeyed": 5, "unverified": 0}
    assert report["key"]["key_id"] is None and report["key"]["head_authenticated"] is None
    # given a key, a chain that was never keyed is what a full downgrade looks like
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 1 and first_break(report) == ("head_unauthenticated", 0, None)
    assert "never stored events with a key" in report["first_break"]["detail"]


def test_a_mixed_chain_unkeyed_then_keyed_verifies(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(4)])
    with EventStore(path=site.db, key=site.key):  # opening switches over, before any event
        pass
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 0 and report["key"]["keyed_from_seq"] == 5
    site.write([ev(k) for k in range(4, 7)], key=site.key)
    assert [r["link"] for r in site.rows()] == ["sha256"] * 4 + ["hmac-sha256"] * 3
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 0 and report["ok"] is True
    assert report["links"] == {"keyed": 3, "unkeyed": 4, "unverified": 0}
    assert report["key"]["keyed_from_seq"] == 5 and report["head"]["seq"] == 7


def test_pruning_a_keyed_chain_keeps_it_verifiable(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(3)])
    site.write([ev(k) for k in range(3, 8)], key=site.key)
    with EventStore(path=site.db) as store:  # prune needs no key (`events prune`)
        assert store.prune(before_ms=T0 + 5 * 60_000) == 5
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 0 and report["links"]["keyed"] == 3 and report["anchor"]["seq"] == 5
    # the anchor (seq 5) was keyed, so the first row left must be keyed too
    site.rewrite_plain(6)
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 1 and first_break(report) == ("link_downgraded", 1, 6)


# -- what an attacker without the key does ----------------------------------------------------
def test_an_edit_rehashed_with_plain_sha256_fails(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(6)], key=site.key)
    site.rewrite_plain(3)  # scheme set to sha256 from row 3 on, head moved
    code, report, err = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 1 and first_break(report) == ("link_downgraded", 3, 3)
    assert err.startswith("broken: link_downgraded at row 3 (seq 3, event ")
    kinds = {p["kind"] for p in report["problems"]}
    assert "head_unauthenticated" in kinds  # the moved head is not the one the key wrote
    # the same, leaving the rows marked keyed: their MACs do not match
    site2 = Site(site.data.parent / "second")
    site2.write([ev(k) for k in range(6)], key=site2.key)
    site2.rewrite_plain(3, keep_scheme=True)
    code, report, _ = verify(site2, capsys, "--key-file", str(site2.key_file))
    assert code == 1 and first_break(report) == ("row_edited", 3, 3)


def test_a_keyed_to_unkeyed_downgrade_is_flagged(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(2)])
    site.write([ev(k) for k in range(2, 6)], key=site.key)
    # a store without the key refuses to add plain links after keyed ones
    with EventStore(path=site.db) as store:
        with pytest.raises(EventStoreError, match=r"is keyed .* no key is configured"):
            store.check_key()
        with pytest.raises(EventStoreError, match="no key is configured"):
            store.add(ev(6))
    # plain links appended by hand after the keyed ones: flagged with and without the key
    site.rewrite_plain(5, label=None)
    for extra in ((), ("--key-file", str(site.key_file))):
        code, report, _ = verify(site, capsys, *extra)
        assert code == 1 and first_break(report) == ("link_downgraded", 5, 5)
    # ... also with the keying record cleared, to pass them off as an unkeyed chain: the
    # keyed links left before them give it away, even without the key
    site.sql("UPDATE events_chain SET key_id = NULL, keyed_from_seq = NULL, head_mac = NULL")
    code, report, _ = verify(site, capsys)
    assert code == 1 and first_break(report) == ("link_downgraded", 3, 3)
    assert "keying record was moved" in report["first_break"]["detail"]
    # every keyed link rewritten as plain and the keying record cleared: only the key
    # (the head MAC is gone) shows it; without the key it reads as a plain chain
    site.rewrite_plain(3, clear_keying=True)
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 1 and first_break(report) == ("head_unauthenticated", 0, None)
    code, report, _ = verify(site, capsys)
    assert code == 0 and report["links"] == {"keyed": 0, "unkeyed": 6, "unverified": 0}


def test_rows_deleted_at_the_end_with_the_head_moved_back(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(6)], key=site.key)
    rows = site.rows()
    site.sql("DELETE FROM events WHERE seq > 4")
    site.sql("UPDATE events_chain SET head_seq = 4, head_hash = ?", (rows[3]["hash"],))
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 1 and first_break(report) == ("head_unauthenticated", 0, None)
    assert "rows deleted at the end" in report["first_break"]["detail"]
    # the gateway writing on does not bless the moved head
    site.write([ev(10)], key=site.key)
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 1 and first_break(report) == ("head_unauthenticated", 0, None)


# -- wrong key, no key ------------------------------------------------------------------------
def test_a_wrong_key_fails(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.write([ev(k) for k in range(3)], key=site.key)
    code, report, err = verify(site, capsys, "--key-file", str(site.other_key_file))
    other = ChainKey(secret=OTHER_KEY.encode())
    assert code == 1 and first_break(report) == ("wrong_key", 1, 1)
    assert f"key id {site.key.key_id}; the given key has id {other.key_id}" in err
    assert report["problem_count"] == 4  # each keyed row and the chain
    with pytest.raises(EventStoreError, match="wrong key"):  # the gateway would not start
        EventStore(path=site.db, key=other)


def test_a_keyed_chain_without_the_key_says_so(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write([ev(k) for k in range(2)])
    site.write([ev(k) for k in range(2, 5)], key=site.key)
    code, report, err = verify(site, capsys)
    assert code == 2 and report["ok"] is False and report["problem_count"] == 0
    assert report["links"] == {"keyed": 3, "unkeyed": 2, "unverified": 3}
    assert err.startswith("error 5000: cannot verify keyed links without the key: 3 keyed")
    assert "--key-file" in err and EVENTS_KEY_ENV in err
    # a break in what can be checked without the key is still named (exit 1)
    site.sql("UPDATE events SET label = 'nobody' WHERE seq = 1")
    code, report, err = verify(site, capsys)
    assert code == 1 and first_break(report) == ("row_edited", 1, 1)
    assert "also: cannot verify keyed links without the key" in err


def test_verify_as_its_own_process_with_the_key_from_the_environment(site: Site) -> None:
    site.write([ev(k) for k in range(3)], key=site.key)
    env = {**os.environ, "PYTHONPATH": str(REPO), EVENTS_KEY_ENV: KEY}
    cmd = [sys.executable, "-m", "edge.cli", "events", "verify", "--data-dir", str(site.data)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["links"]["keyed"] == 3
    env.pop(EVENTS_KEY_ENV)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "cannot verify keyed links without the key" in proc.stderr
    assert KEY not in proc.stdout + proc.stderr


# -- the key: sources, checks, secrecy -------------------------------------------------------
def test_key_sources_and_checks(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = load_chain_key(site.key_file)
    assert key is not None and key.secret == KEY.encode()  # trailing newline dropped
    assert key.key_id == site.key.key_id and len(key.key_id) == 16
    assert KEY not in repr(key) and KEY not in str(key)
    assert load_chain_key(None) is None
    monkeypatch.setenv(EVENTS_KEY_ENV, OTHER_KEY)
    from_env = load_chain_key(site.key_file)  # the environment wins over the config file
    assert from_env is not None and from_env.secret == OTHER_KEY.encode()
    flag = load_chain_key(site.key_file, key_file_first=True)  # a command-line flag wins
    assert flag is not None and flag.secret == KEY.encode()
    monkeypatch.delenv(EVENTS_KEY_ENV)
    short = tmp_path / "short.key"
    short.write_text("tooshort\n")
    with pytest.raises(ConfigError, match="8 bytes; at least 16") as exc:
        load_chain_key(short)
    assert "tooshort" not in str(exc.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_chain_key(tmp_path / "missing.key")
    cfg = config_from_mapping(
        {"data_dir": str(site.data), "storage": {"events_key_file": str(site.key_file)}}
    )
    got = cfg.storage.events_key()
    assert got is not None and got.key_id == site.key.key_id
    with pytest.raises(ConfigError, match="lies inside data_dir"):
        config_from_mapping(
            {"data_dir": str(site.data), "storage": {"events_key_file": str(site.db) + ".key"}}
        )


def test_the_key_is_never_logged(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.write([ev(0)])
    caplog.set_level(logging.DEBUG)
    site.write([ev(1)], key=site.key)  # switch-over is logged with the key id and source
    site.sql("UPDATE events_chain SET head_mac = ?", ("0" * 64,))
    site.write([ev(2)], key=site.key)  # an unauthenticated head is logged
    text = caplog.text
    assert site.key.key_id in text and "does not match this key" in text
    assert KEY not in text


def test_the_gateway_keys_its_chain_and_will_not_start_without_its_key(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """``safety-edge run``'s service (no cameras, API or MQTT: only the event store)."""
    from edge.service.gateway import GatewayService

    site.write([ev(0)])  # an existing unkeyed database
    base: dict[str, Any] = {
        "data_dir": str(site.data),
        "models_dir": str(site.data.parent / "models"),
        "service": {"api": False},
        "tasks": {"fence": None, "hardhat": None, "workwear": None},
    }
    keyed = {**base, "storage": {"snapshots": False, "events_key_file": str(site.key_file)}}
    service = GatewayService(config=config_from_mapping(keyed))
    service.start()
    try:
        assert service.store is not None and service.store.key_id == site.key.key_id
        service.store.add(ev(1))
    finally:
        service.stop()
    code, report, _ = verify(site, capsys, "--key-file", str(site.key_file))
    assert code == 0 and report["links"] == {"keyed": 1, "unkeyed": 1, "unverified": 0}
    for cfg in (base, {**base, "storage": {"events_key_file": str(site.other_key_file)}}):
        with pytest.raises(EventStoreError, match=r"no key is configured|wrong key") as exc:
            GatewayService(config=config_from_mapping(cfg)).start()
        assert KEY not in str(exc.value) and OTHER_KEY not in str(exc.value)
