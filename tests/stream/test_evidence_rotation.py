"""Key rotation of the keyed events hash chain, on real SQLite files with the real
``safety-edge events rotate-key`` / ``events verify`` commands (in-process through
:func:`edge.cli.main`, and as their own processes): rotate, write on with the new key and
verify with every key; a key left out is named; forged, edited and deleted rotation
records; links keyed with the retired key after the rotation; refusals that change
nothing (wrong old key, new key = old key, a reused key, an unkeyed or broken chain, the
database open in another process, a failure inside the transaction); two rotations; the
rotation undone by someone holding the old key; pruning; and the gateway, which starts
with the new key and refuses the old one."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.config import config_from_mapping
from edge.stream.chain_key import EVENTS_KEY_ENV, ChainKey
from edge.stream.events import EventStore, EventStoreError
from edge.stream.evidence import (
    CHAINED_COLUMNS,
    ROTATIONS_TABLE,
    KeyRotationError,
    canonical_row,
    head_mac,
    rotate_chain_key,
)
from tests.stream.chain_events import T0, ChainSite, ev

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "k1": "first-key-of-the-site-0123456789abcdef",
    "k2": "second-key-after-the-leak-9876543210",
    "k3": "third-key-a-year-later-5555555555555",
    "other": "a-key-this-chain-never-saw-24680246",
}


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENTS_KEY_ENV, raising=False)


class Site(ChainSite):
    """A data folder with an events database; key files kept outside it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.keys_dir = root / "keys"
        self.keys_dir.mkdir(parents=True)
        self.key: dict[str, ChainKey] = {}
        self.file: dict[str, Path] = {}
        for name, secret in SECRETS.items():
            self.file[name] = self.keys_dir / f"{name}.key"
            self.file[name].write_text(secret + "\n")
            self.key[name] = ChainKey(secret=secret.encode())
        self.n = 0

    def write(self, count: int, *, key: str | None) -> None:
        """``count`` new events, through a store with key ``key`` (``None``: plain)."""
        events = [ev(self.n + i) for i in range(count)]
        self.n += count
        with EventStore(path=self.db, key=None if key is None else self.key[key]) as store:
            assert store.add_many(events) == count

    def rotations(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = ?", (ROTATIONS_TABLE,)
            ).fetchone():
                return []
            return [dict(r) for r in conn.execute(f"SELECT * FROM {ROTATIONS_TABLE} ORDER BY n")]

    def state(self) -> tuple[bytes, int, dict[str, Any], list[dict[str, Any]]]:
        """What a refused rotation must leave as it was: the file's bytes, the rows, the
        chain record and the rotation records."""
        return self.db.read_bytes(), len(self.rows()), self.chain(), self.rotations()


def remac_with(
    conn: sqlite3.Connection, key: ChainKey, rows: list[dict[str, Any]], *, edit_seq: int
) -> str:
    """What a holder of ``key`` does to forge an edit: set label "nobody" on row ``edit_seq``,
    then re-link and re-MAC ``rows`` (consecutive, from the one after an untouched link)
    with ``key``, marking them as ``key``'s; returns the last new hash."""
    prev_hash = conn.execute(
        "SELECT hash FROM events WHERE seq = ?", (rows[0]["seq"] - 1,)
    ).fetchone()[0]
    for row in rows:
        values = {c: row[c] for c in CHAINED_COLUMNS}
        if values["seq"] == edit_seq:
            values["label"] = "nobody"
        values["prev_hash"] = prev_hash
        h = key.mac(canonical_row(values))
        conn.execute(
            "UPDATE events SET label = ?, prev_hash = ?, hash = ?, key_id = ? WHERE seq = ?",
            (values["label"], prev_hash, h, key.key_id, values["seq"]),
        )
        prev_hash = h
    return str(prev_hash)


@pytest.fixture()
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The real ``safety-edge`` entry point, in-process; no secret may appear in output."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    for secret in SECRETS.values():
        assert secret not in out and secret not in err
    return code, out, err


def rotate_cli(
    site: Site, capsys: pytest.CaptureFixture[str], old: str, new: str
) -> tuple[int, str, str]:
    """``safety-edge events rotate-key`` from key ``old`` to ``new``: exit code, stdout, stderr."""
    return cli(
        capsys,
        "events",
        "rotate-key",
        "--db",
        str(site.db),
        "--key-file",
        str(site.file[old]),
        "--new-key-file",
        str(site.file[new]),
    )


def rotate(site: Site, capsys: pytest.CaptureFixture[str], old: str, new: str) -> tuple[int, str]:
    code, out, err = rotate_cli(site, capsys, old, new)
    if code == 0:
        record = json.loads(out)
        assert record["rotated"] is True
        assert record["rotation"]["old_key_id"] == site.key[old].key_id
        assert record["rotation"]["new_key_id"] == site.key[new].key_id
    return code, err


def verify(
    site: Site, capsys: pytest.CaptureFixture[str], *keys: str
) -> tuple[int, dict[str, Any], str]:
    flags = [a for k in keys for a in ("--key-file", str(site.file[k]))]
    code, out, err = cli(
        capsys, "events", "verify", "--data-dir", str(site.data), "--no-snapshots", *flags
    )
    return code, (json.loads(out) if out else {}), err


def kinds(report: dict[str, Any]) -> list[str]:
    return [p["kind"] for p in report["problems"]]


def rotated_site(site: Site, capsys: pytest.CaptureFixture[str]) -> Site:
    """2 plain links, 3 keyed with k1, rotated to k2 (from seq 6), 3 keyed with k2."""
    site.write(2, key=None)
    site.write(3, key="k1")
    code, err = rotate(site, capsys, "k1", "k2")
    assert code == 0, err
    site.write(3, key="k2")
    return site


# -- rotate, write on, verify -----------------------------------------------------------------
def test_rotate_then_write_then_verify_with_both_keys(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write(2, key=None)
    site.write(3, key="k1")
    head = site.chain()
    code, out, err = rotate_cli(site, capsys, "k1", "k2")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["rotation"]["from_seq"] == 6 and printed["rotation"]["n"] == 1
    assert printed["rotation"]["head"] == {"seq": 5, "hash": head["head_hash"]}
    assert printed["verified"] == {
        "rows": 5,
        "keyed_links": 3,
        "unverified_links": 0,
        "keys_missing": [],
    }
    assert f"key id {site.key['k2'].key_id}" in err and str(site.file["k2"]) in err
    # the record, and its MACs recomputed here from the documented format
    (rec,) = site.rotations()
    fields = [
        "n",
        "from_seq",
        "head_seq",
        "head_hash",
        "keyed_from_seq",
        "old_key_id",
        "new_key_id",
        "time_ms",
    ]
    assert rec["old_key_id"] == site.key["k1"].key_id
    assert rec["new_key_id"] == site.key["k2"].key_id
    assert (rec["n"], rec["from_seq"], rec["head_seq"], rec["keyed_from_seq"]) == (1, 6, 5, 3)
    body = json.dumps({f: rec[f] for f in fields}, sort_keys=True, separators=(",", ":"))
    signed = b"safety-edge events key rotation v1\n" + body.encode()
    for name, column in (("k1", "old_mac"), ("k2", "new_mac")):
        mac = hmac.new(SECRETS[name].encode(), signed, hashlib.sha256).hexdigest()
        assert rec[column] == mac
    chain = site.chain()  # the chain is the new key's now, rows and head unchanged
    assert chain["key_id"] == site.key["k2"].key_id and chain["keyed_from_seq"] == 3
    assert (chain["head_seq"], chain["head_hash"]) == (5, head["head_hash"])
    assert chain["head_mac"] == head_mac(
        site.key["k2"], head_seq=5, head_hash=head["head_hash"], keyed_from_seq=3
    )
    site.write(3, key="k2")
    links = [(r["seq"], r["link"], r["key_id"]) for r in site.rows()]
    assert links == [
        *((s, "sha256", None) for s in (1, 2)),
        *((s, "hmac-sha256", site.key["k1"].key_id) for s in (3, 4, 5)),
        *((s, "hmac-sha256", site.key["k2"].key_id) for s in (6, 7, 8)),
    ]
    for order in (("k1", "k2"), ("k2", "k1")):  # any order of --key-file
        code, report, err = verify(site, capsys, *order)
        assert code == 0 and err == "" and report["ok"] is True, err
        assert report["links"] == {"keyed": 6, "unkeyed": 2, "unverified": 0}
        assert report["key"]["key_id"] == site.key["k2"].key_id
        assert report["key"]["head_authenticated"] is True
        assert report["keys"]["missing"] == []
        (r,) = report["rotations"]
        assert (r["from_seq"], r["old_mac_ok"], r["new_mac_ok"]) == (6, True, True)


def test_verify_names_the_key_left_out(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    rotated_site(site, capsys)
    k1, k2 = site.key["k1"].key_id, site.key["k2"].key_id
    code, report, err = verify(site, capsys, "k2")  # the new key only
    assert code == 2 and report["ok"] is False and report["problem_count"] == 0
    assert report["keys"] == {"given": [k2], "missing": [k1]}
    assert report["links"] == {"keyed": 6, "unkeyed": 2, "unverified": 3}
    assert report["key"]["head_authenticated"] is True  # the head is the new key's
    assert report["rotations"][0]["old_mac_ok"] is None
    assert report["rotations"][0]["new_mac_ok"] is True
    assert err.startswith(f"error 5000: cannot verify everything without key id {k1}: 3 keyed")
    assert "--key-file may be repeated" in err
    code, report, err = verify(site, capsys, "k1")  # the old key only
    assert code == 2 and report["problem_count"] == 0
    assert report["keys"] == {"given": [k1], "missing": [k2]}
    assert report["links"]["unverified"] == 3 and report["key"]["head_authenticated"] is None
    assert f"without key id {k2}: 3 keyed links and the head MAC and rotation MACs" in err
    code, report, err = verify(site, capsys)  # no key at all: both named
    assert code == 2 and report["keys"]["missing"] == [k1, k2]
    assert f"key ids {k1}, {k2} (rotated; the last is current)" in err
    # a break in what could be checked is still exit 1, the missing key mentioned too
    site.sql("UPDATE events SET label = 'nobody' WHERE seq = 4")  # a link of k1's part
    code, report, err = verify(site, capsys, "k1")
    assert code == 1 and report["first_break"]["kind"] == "row_edited"
    assert report["first_break"]["seq"] == 4
    assert f"also: cannot verify everything without key id {k2}" in err


def test_two_rotations_verify_with_three_keys(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write(2, key="k1")
    assert rotate(site, capsys, "k1", "k2")[0] == 0
    site.write(2, key="k2")
    assert rotate(site, capsys, "k2", "k3")[0] == 0
    site.write(2, key="k3")
    ids = {n: site.key[n].key_id for n in ("k1", "k2", "k3")}
    assert [r["key_id"] for r in site.rows()] == [ids[n] for n in ("k1", "k1", "k2", "k2")] + [
        ids["k3"]
    ] * 2
    rots = site.rotations()
    assert [(r["n"], r["from_seq"], r["old_key_id"], r["new_key_id"]) for r in rots] == [
        (1, 3, ids["k1"], ids["k2"]),
        (2, 5, ids["k2"], ids["k3"]),
    ]
    code, report, err = verify(site, capsys, "k3", "k1", "k2")
    assert code == 0 and report["ok"] is True, err
    assert report["links"] == {"keyed": 6, "unkeyed": 0, "unverified": 0}
    assert [(r["n"], r["old_mac_ok"], r["new_mac_ok"]) for r in report["rotations"]] == [
        (1, True, True),
        (2, True, True),
    ]
    code, report, err = verify(site, capsys, "k1", "k3")  # the middle key left out
    assert code == 2 and report["keys"]["missing"] == [ids["k2"]]
    assert report["links"]["unverified"] == 2 and report["key"]["head_authenticated"] is True
    # a key the chain used before is not accepted as the next key (it may have leaked)
    code, err = rotate(site, capsys, "k3", "k1")
    assert code == 2 and "was used by this chain before" in err


def test_rotating_twice_without_events_between(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keyed at once (no keyed link yet), rotated twice with no event between."""
    site.write(2, key=None)
    with EventStore(path=site.db, key=site.key["k1"]):  # the gateway started with k1
        pass
    assert rotate(site, capsys, "k1", "k2")[0] == 0
    assert rotate(site, capsys, "k2", "k3")[0] == 0
    assert [r["from_seq"] for r in site.rotations()] == [3, 3]
    code, report, err = verify(site, capsys, "k1", "k2", "k3")
    assert code == 0 and report["links"] == {"keyed": 0, "unkeyed": 2, "unverified": 0}, err
    site.write(1, key="k3")
    code, report, err = verify(site, capsys, "k1", "k2", "k3")
    assert code == 0 and report["links"]["keyed"] == 1, err


def test_pruning_after_a_rotation_keeps_it_verifiable(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    rotated_site(site, capsys)
    with EventStore(path=site.db) as store:  # every row of the k1 part, and one more
        assert store.prune(before_ms=T0 + 6 * 60_000) == 6
    code, report, err = verify(site, capsys, "k1", "k2")
    assert code == 0 and report["anchor"]["seq"] == 6 and report["rows"] == 2, err
    # the old key stays needed: the rotation record is signed with it
    code, report, _ = verify(site, capsys, "k2")
    assert code == 2 and report["keys"]["missing"] == [site.key["k1"].key_id]


# -- the gateway -----------------------------------------------------------------------------
def test_the_gateway_starts_with_the_new_key_and_refuses_the_old(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """``safety-edge run``'s service (no cameras, API or MQTT: only the event store)."""
    from edge.service.gateway import GatewayService

    site.write(1, key=None)
    base: dict[str, Any] = {
        "data_dir": str(site.data),
        "models_dir": str(site.data.parent / "models"),
        "service": {"api": False},
        "tasks": {"fence": None, "hardhat": None, "workwear": None},
    }

    def config(key: str) -> Any:
        storage = {"snapshots": False, "events_key_file": str(site.file[key])}
        return config_from_mapping({**base, "storage": storage})

    def run_once(key: str) -> None:
        service = GatewayService(config=config(key))
        service.start()
        try:
            assert service.store is not None and service.store.key_id == site.key[key].key_id
            service.store.add(ev(100 + site.n))
            site.n += 1
        finally:
            service.stop()

    run_once("k1")
    assert rotate(site, capsys, "k1", "k2")[0] == 0
    with pytest.raises(EventStoreError, match="wrong key") as exc:  # the old key file
        GatewayService(config=config("k1")).start()
    assert site.key["k2"].key_id in str(exc.value) and site.key["k1"].key_id in str(exc.value)
    assert SECRETS["k1"] not in str(exc.value)
    # the refusal says the key was rotated out, and where to
    assert "retired by key rotation 1 from seq 3" in str(exc.value)
    with pytest.raises(EventStoreError, match="wrong key") as other:  # never part of the chain
        GatewayService(config=config("other")).start()
    assert "retired" not in str(other.value)
    run_once("k2")  # the operator replaced the key file
    rows = site.rows()
    assert [r["key_id"] for r in rows] == [None, site.key["k1"].key_id, site.key["k2"].key_id]
    code, report, err = verify(site, capsys, "k1", "k2")
    assert code == 0 and report["links"] == {"keyed": 2, "unkeyed": 1, "unverified": 0}, err


# -- tampering -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "args", "what"),
    [
        ("time_ms = time_ms + 1", (), "MAC under the old key"),
        ("head_hash = ?", ("0" * 64,), "MAC under the new key"),
        ("from_seq = 8, head_seq = 7", (), "MAC under the old key"),
        ("old_mac = ?", ("ab" * 32,), "MAC under the old key"),
        ("new_mac = ?", ("cd" * 32,), "MAC under the new key"),
        ("n = 2", (), "a rotation record was deleted"),
    ],
)
def test_an_edited_rotation_record_is_flagged(
    site: Site, capsys: pytest.CaptureFixture[str], edit: str, args: tuple[Any, ...], what: str
) -> None:
    rotated_site(site, capsys)
    site.sql(f"UPDATE {ROTATIONS_TABLE} SET {edit}", args)
    code, report, err = verify(site, capsys, "k1", "k2")
    assert code == 1 and report["first_break"]["kind"] == "rotation_invalid"
    assert err.startswith("broken: rotation_invalid at a key rotation record")
    assert any(what in p["detail"] for p in report["problems"] if p["kind"] == "rotation_invalid")


def test_forged_and_deleted_rotation_records_are_flagged(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone with write access but no key: a rotation to a key of their own (to write
    links with it), and the real record deleted."""
    rotated_site(site, capsys)
    mine = site.key["other"]
    chain = site.chain()
    site.sql(
        f"INSERT INTO {ROTATIONS_TABLE} VALUES (2, 9, 8, ?, 3, ?, ?, 0, ?, ?)",
        (
            chain["head_hash"],
            site.key["k2"].key_id,
            mine.key_id,
            "00" * 32,
            mine.mac(b"whatever they like"),
        ),
    )
    site.sql("UPDATE events_chain SET key_id = ?", (mine.key_id,))
    code, report, _ = verify(site, capsys, "k1", "k2")
    assert code == 1 and report["first_break"]["kind"] == "rotation_invalid"
    details = " ".join(p["detail"] for p in report["problems"])
    assert "key rotation 2" in details and "MAC under the old key" in details
    # with the forger's key too, the MAC under the old key still gives it away
    code, report, _ = verify(site, capsys, "k1", "k2", "other")
    assert code == 1 and "MAC under the old key" in report["first_break"]["detail"]

    site2 = rotated_site(Site(site.data.parent / "second"), capsys)
    site2.sql(f"DELETE FROM {ROTATIONS_TABLE}")
    code, report, _ = verify(site2, capsys, "k1", "k2")
    assert code == 1 and report["first_break"]["kind"] == "wrong_key"
    assert report["first_break"]["seq"] == 3  # k1's links, where k2 is the chain's key
    assert f"key id {site2.key['k1'].key_id} was given, but the chain was never keyed" in (
        " ".join(p["detail"] for p in report["problems"])
    )


def test_a_link_after_the_rotation_keyed_with_the_old_key_is_flagged(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone holding the leaked old key edits a row written after the rotation and
    re-MACs it (and every later link, and the head) with the old key."""
    rotated_site(site, capsys)
    with site.connect() as conn:
        head = remac_with(conn, site.key["k1"], site.rows()[6:], edit_seq=7)  # seq 7 and 8
        conn.execute("UPDATE events_chain SET head_hash = ?", (head,))
        conn.commit()
    code, report, err = verify(site, capsys, "k1", "k2")
    assert code == 1
    first = report["first_break"]
    assert (first["kind"], first["row"], first["seq"]) == ("wrong_key", 7, 7)
    assert "retired from seq 6" in first["detail"] and "holding the retired key" in first["detail"]
    assert err.startswith("broken: wrong_key at row 7 (seq 7, event ")
    assert kinds(report).count("wrong_key") == 2 and "head_unauthenticated" in kinds(report)
    # without any key the retired key id on a link after the rotation still shows
    code, report, _ = verify(site, capsys)
    assert code == 1 and report["first_break"]["seq"] == 7


def test_a_rotation_undone_with_the_old_key_is_flagged(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone holding the leaked old key removes the rotation and the links after it and
    signs the old head again with the old key: a consistent k1 chain, which verification
    given the new key too does not accept."""
    rotated_site(site, capsys)
    k1 = site.key["k1"]
    (rec,) = site.rotations()
    site.sql(f"DELETE FROM {ROTATIONS_TABLE}")
    site.sql("DELETE FROM events WHERE seq >= 6")
    mac = head_mac(k1, head_seq=5, head_hash=rec["head_hash"], keyed_from_seq=3)
    site.sql(
        "UPDATE events_chain SET head_seq = 5, head_hash = ?, key_id = ?, head_mac = ?",
        (rec["head_hash"], k1.key_id, mac),
    )
    code, report, _ = verify(site, capsys, "k1")  # the old key alone cannot tell
    assert code == 0
    code, report, err = verify(site, capsys, "k1", "k2")
    assert code == 1 and report["first_break"]["kind"] == "wrong_key"
    assert f"key id {site.key['k2'].key_id} was given, but the chain was never keyed" in err


# -- refusals that change nothing ------------------------------------------------------------
def test_a_wrong_old_key_or_no_new_key_is_refused_and_nothing_changes(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write(3, key="k1")
    before = site.state()
    code, err = rotate(site, capsys, "other", "k2")
    assert code == 2 and err.startswith("error 5002: the events chain is keyed with key id ")
    assert f"the old key from file {site.file['other']} has id {site.key['other'].key_id}" in err
    assert "Nothing was changed" in err
    assert site.state() == before
    code, err = rotate(site, capsys, "k1", "k1")
    assert code == 2 and "the new key" in err and "is the old key" in err
    assert site.state() == before
    # after a rotation the retired key is named as such
    assert rotate(site, capsys, "k1", "k2")[0] == 0
    before = site.state()
    code, err = rotate(site, capsys, "k1", "k3")
    assert code == 2 and "(retired by key rotation 1)" in err
    assert site.state() == before


def test_an_unkeyed_database_is_refused_with_how_to_key_it(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.write(3, key=None)
    before = site.state()
    code, err = rotate(site, capsys, "k1", "k2")
    assert code == 2 and "is not keyed (plain SHA-256 links): there is no key to rotate" in err
    assert "storage.events_key_file" in err and EVENTS_KEY_ENV in err
    assert site.state() == before
    code, _, err = cli(
        capsys,
        "events",
        "rotate-key",
        "--db",
        str(site.data / "nothing.sqlite3"),
        "--key-file",
        str(site.file["k1"]),
        "--new-key-file",
        str(site.file["k2"]),
    )
    assert code == 2 and "no events database at" in err


def test_a_broken_chain_is_not_rotated(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.write(4, key="k1")
    site.sql("UPDATE events SET label = 'nobody' WHERE seq = 2")
    before = site.state()
    code, err = rotate(site, capsys, "k1", "k2")
    assert code == 2 and "does not verify with the old key (1 problem(s); first: row_edited" in err
    assert "at seq 2" in err and site.state() == before


def test_a_failure_inside_the_transaction_leaves_nothing(site: Site) -> None:
    """A statement failing after the rotation record was inserted (a trigger refuses the
    update of ``events_chain``): the record and its new table are rolled back with it."""
    site.write(2, key="k1")
    site.sql(
        "CREATE TRIGGER refuse BEFORE UPDATE ON events_chain BEGIN "
        "SELECT RAISE(ABORT, 'disk full, say'); END"
    )
    before = site.state()
    conn = sqlite3.connect(site.db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="disk full"):
            rotate_chain_key(conn, old=site.key["k1"], new=site.key["k2"])
        assert not conn.in_transaction
        with pytest.raises(KeyRotationError, match="is the old key"):
            rotate_chain_key(conn, old=site.key["k1"], new=site.key["k1"])
    finally:
        conn.close()
    assert site.state() == before and site.rotations() == []


def test_rotate_key_refuses_while_another_process_has_the_database_open(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer in another process (a store opened with the key, as the gateway holds
    it), then the command as its own process once the writer is gone."""
    site.write(2, key="k1")
    holder = (
        "import sys; from edge.stream.chain_key import load_chain_key; "
        "from edge.stream.events import EventStore; "
        "s = EventStore(path=sys.argv[1], key=load_chain_key(sys.argv[2])); "
        "print('open', flush=True); sys.stdin.read(); s.close()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(EVENTS_KEY_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(site.db), str(site.file["k1"])],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        before = site.state()
        code, err = rotate(site, capsys, "k1", "k2")
        assert code == 2 and "is open in another process" in err and "stop the gateway" in err
        assert site.state() == before
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    cmd = [sys.executable, "-m", "edge.cli", "events", "rotate-key", "--data-dir", str(site.data)]
    cmd += ["--key-file", str(site.file["k1"]), "--new-key-file", str(site.file["k2"])]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rotation"]["from_seq"] == 3
    assert all(s not in done.stdout + done.stderr for s in SECRETS.values())
    site.write(1, key="k2")
    code, _, err = verify(site, capsys, "k1", "k2")
    assert code == 0, err


def test_rows_before_the_rotation_rewritten_with_the_old_key_are_flagged(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone holding the leaked old key edits a row from before the rotation and re-MACs
    it and the rest of the old key's part: the head the rotation recorded gives it away."""
    rotated_site(site, capsys)
    (rec,) = site.rotations()
    with site.connect() as conn:
        # seq 4 and 5, the last link before the rotation (already k1's: key_id unchanged)
        remac_with(conn, site.key["k1"], site.rows()[3:5], edit_seq=4)
        conn.commit()
    code, report, err = verify(site, capsys, "k1", "k2")
    assert code == 1
    first = report["first_break"]
    assert (first["kind"], first["row"], first["seq"]) == ("rotation_invalid", 5, 5)
    assert f"as the head with hash {rec['head_hash']}" in first["detail"]
    assert "rewritten after it" in first["detail"]
    assert err.startswith("broken: rotation_invalid at row 5 (seq 5, event ")
    assert "link_broken" in kinds(report)  # seq 6 (keyed with k2) holds the old hash
