"""Tamper-evident evidence: the hash chain over the events table, and its verification.

Every row of the events table (:mod:`edge.stream.events`) is a link of one SHA-256 chain:

- ``seq`` is the row's position (1, 2, 3, ... with no gaps; unique);
- ``prev_hash`` is the ``hash`` of the row before it (``seq - 1``), or the chain's anchor
  for the first row (:data:`GENESIS_HASH`, 64 zeros, until something is pruned);
- ``hash`` is ``sha256(canonical_row(row)).hexdigest()``.

**Canonical form** (:func:`canonical_row`): a JSON object holding exactly the columns in
:data:`CHAINED_COLUMNS` (``prev_hash`` included, ``hash`` not) with the values *as stored*
in SQLite (``attributes`` is the stored JSON text, a string; ``score`` and the box
corners ``x1 y1 x2 y2`` are floats; ``NULL`` is ``null``), serialized with sorted keys,
no spaces (separators ``,`` and ``:``), non-ASCII characters unescaped, encoded as UTF-8.
Floats are written the way Python's :mod:`json` writes them (the shortest repr that
reads back to the same float64, e.g. ``30.0``, ``0.75``); integers without a decimal
point. The hash is the lowercase hex SHA-256 of those bytes. Example (one line)::

    {"attributes":"{\\"dwell_s\\":2.5}","camera":"gate","event_id":"01J...","label":"person",
     "model":"m","prev_hash":"000...0","score":0.75,"seq":1,"snapshot":"gate/2024-06-03/01J....jpg",
     "snapshot_sha256":"9f2c...","start_event_id":null,"start_time_ms":null,"task":"fence",
     "time_ms":1717416000000,"track_id":1,"type":"start","x1":1.5,"x2":30.0,"y1":2.0,
     "y2":80.25,"zone":"yard"}

Columns added to the events table later are outside the hash (so a later feature may
keep mutable state on a row, e.g. an acknowledgement, without breaking the chain); such a
column is attested only if it goes into a new, versioned canonical form.

**Snapshots**: ``snapshot_sha256`` is the SHA-256 of the exact JPEG bytes written to
disk (:meth:`edge.stream.snapshots.SnapshotStore.save_hashed`), and it is inside the row
hash, so the file is attested by the chain too.

**Pruning** deletes a prefix of the chain (the oldest rows by ``seq``) and records the
last deleted row's ``seq`` and ``hash`` as the *anchor* in the one-row ``events_chain``
table, which also holds the *head* (``seq`` and ``hash`` of the newest row, updated with
every append). Verification starts from the anchor and must end at the head, so rows
deleted at the start (without moving the anchor) or at the end are found too.

**Snapshot retention**: the snapshot sweeper deletes the oldest JPEGs first (by age, then
by total size), so legitimately deleted snapshots are always the oldest ones. A missing
snapshot therefore counts as *expired* (not a break) when no snapshot of an event more
than :data:`RETENTION_SLACK_MS` older than it is still present; a missing snapshot with an
older one still on disk is a break (``snapshot_missing``). ``strict_snapshots=True`` makes
every missing snapshot a break. Events chained from before snapshot hashing existed
(schema migration 2) have ``snapshot_sha256`` NULL: their files are counted as
``unhashed`` and not checked.

**Keyed links** (optional; the key is :class:`edge.stream.chain_key.ChainKey`). A store
given a key writes each new link as ``hash = HMAC-SHA256(key, canonical_row(row))`` (hex,
same bytes as the plain hash) and records the scheme per row, outside the hashed bytes:
``link`` is :data:`LINK_PLAIN` (``sha256``) or :data:`LINK_KEYED` (``hmac-sha256``), and
``key_id`` is the key's id (``NULL`` on plain rows). ``events_chain`` records the chain's
``key_id``, ``keyed_from_seq`` (the first keyed link) and ``head_mac``
(:func:`head_mac`: HMAC of the head ``seq``/``hash``, ``key_id`` and ``keyed_from_seq``,
rewritten with every append). The first store opened with a key switches the chain over at
once (``keyed_from_seq`` = head + 1, and a ``head_mac``), so there is no window without one.

*The rule*: links may go from plain to keyed once and never back. Rows before
``keyed_from_seq`` stay plain (an existing database keeps verifying); from it on every
link must be keyed, and a plain link at or after ``keyed_from_seq`` is a break
(``link_downgraded``): re-hashing rows with plain SHA-256 is exactly what someone without
the key does after an edit. A keyed link before ``keyed_from_seq``, or with no keying
record (the record moved or cleared to pass later plain links off as an unkeyed chain),
is ``link_downgraded`` too; so after pruning, a keyed anchor means every row left must be
keyed. The one downgrade the rows cannot show is *all* keyed links rewritten as plain
together with the keying record cleared;
``head_mac`` covers that: **verification given a key requires a valid** ``head_mac``
(``head_unauthenticated`` otherwise: the chain was never keyed with this key, or the
head or keying record was rewritten without it). So giving the key asserts "this gateway
keys its chain". With the key, rows deleted at the end and the head moved back are found
too (the head MAC no longer matches), which a plain chain cannot show by itself.

Verification without a key checks plain links fully and the order of keyed ones (their
``seq``/``prev_hash`` and the rule above), not their MACs; it reports them as unverified
(:attr:`VerifyReport.needs_key`). A keyed link whose ``key_id`` is not the chain's key
(with a keying record) or the given key's (without one) is ``wrong_key`` (the id is a
hint: an edited ``key_id`` also lands here, still a break).
A store with a key never blesses a head it did not write: when the stored ``head_mac``
does not match, it keeps appending keyed links but leaves that ``head_mac`` as it is,
so verification keeps reporting it.

**Key rotation** (:func:`rotate_chain_key`, ``safety-edge events rotate-key``): one-way
and recorded, like keying. With the gateway stopped, the chain is verified with the old
(current) key, then one row is added to ``events_key_rotations`` (:class:`KeyRotation`)
and ``events_chain`` moves to the new key, in one SQLite transaction. From ``from_seq``
(the head at rotation + 1) on every link is keyed with the new key; ``keyed_from_seq``
keeps naming the first keyed link of all. A rotation record holds ``n`` (1, 2, ... in
order), ``from_seq``, ``head_seq`` and ``head_hash`` (the head at rotation),
``keyed_from_seq``, ``old_key_id``, ``new_key_id`` and ``time_ms`` (Unix ms), and two MACs
of the same bytes (:meth:`KeyRotation.signed_bytes`: ``b"safety-edge events key rotation
v1\\n"`` and the compact sorted-key JSON of those fields): ``old_mac`` under the old key
(its holder authorised the rotation) and ``new_mac`` under the new key (binds the head at
rotation, so whoever holds only the old key cannot rewrite the rows before the rotation,
nor move or delete the record, without the new key noticing). The head MAC
(:func:`head_mac`) is then under the new key. Rows and the other columns of
``events_chain`` keep their format, so an unrotated database, and a store that knows
nothing of rotations, work as before (the store writes with whatever key is the chain's).

Verification takes any number of keys. The *key history* is the first rotation's old key
followed by each rotation's new key (or just ``events_chain.key_id`` when never rotated);
the link at ``seq`` must be keyed with the history key in force at ``seq``. A link keyed
with another key is ``wrong_key`` (a link after a rotation still keyed with the retired
key is what someone holding only the leaked old key writes); a rotation record whose MAC
does not match, whose numbering, keys or head do not follow on from the records and rows
around it, or that does not lead to the chain's key, is ``rotation_invalid``. A history
key that was not given leaves its links, the MACs it would check, and the head MAC (when
it is the current key) unchecked: :attr:`VerifyReport.keys_missing` names it and the
result is not ``ok``. A given key outside the history is ``wrong_key`` (with a history
key given too: a rotation undone by someone holding an older key looks like that; with
no history key given: the wrong key file, every keyed link is ``wrong_key`` as before).

**What this does and does not prove.** The chain detects rows edited, deleted or inserted
and snapshot files removed or modified by anyone who does not recompute the hashes after
the change (a hand edit with ``sqlite3``, a file replaced, rows deleted to hide an
incident). Plain links are SHA-256, not a signature: someone with write access who knows
the scheme can rewrite the whole plain part of the chain. Keyed links hold against that
as long as the key stays secret; whoever reads the key can forge links and head alike
(until a rotation: verification given the new key accepts nothing made with the old one
alone, not even the rotation undone, as long as the new key was not read too). Neither
shows the whole file deleted or replaced by an older copy of itself (its head MAC was
valid then), nor a pruned prefix (pruning is allowed; the anchor is not authenticated).
Against those, keep a copy of the head hash elsewhere (``safety-edge events verify``
prints it) and the MQTT events (they carry ``snapshot_sha256``) on another machine. Rows
chained at migration time are attested from then on only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.stream.chain_key import ChainKey

__all__ = [
    "CHAINED_COLUMNS",
    "GENESIS_HASH",
    "LINK_KEYED",
    "LINK_PLAIN",
    "RETENTION_SLACK_MS",
    "ROTATIONS_TABLE",
    "BreakKind",
    "ChainBreak",
    "KeyRotation",
    "KeyRotationError",
    "RotationCheck",
    "VerifyReport",
    "canonical_row",
    "file_sha256",
    "head_mac",
    "rotate_chain_key",
    "row_hash",
    "row_link",
    "verify_evidence",
]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the very first row of a chain (and the anchor before any pruning)."""

RETENTION_SLACK_MS = 60_000
"""How much older (event time) a present snapshot must be than a missing one for the
missing one to count as deleted rather than expired by retention (covers events of
several cameras written in a slightly different order from their frame times)."""

CHAINED_COLUMNS: tuple[str, ...] = (
    "seq",
    "event_id",
    "type",
    "time_ms",
    "camera",
    "task",
    "zone",
    "label",
    "score",
    "x1",
    "y1",
    "x2",
    "y2",
    "track_id",
    "snapshot",
    "snapshot_sha256",
    "model",
    "start_event_id",
    "start_time_ms",
    "attributes",
    "prev_hash",
)
"""The columns inside a row's hash, in the order :mod:`edge.stream.events` stores them."""

LINK_PLAIN = "sha256"
"""``link`` of a row whose ``hash`` is plain SHA-256 of its canonical bytes."""

LINK_KEYED = "hmac-sha256"
"""``link`` of a row whose ``hash`` is HMAC-SHA256 of its canonical bytes under the key
named by its ``key_id``."""

BreakKind = Literal[
    "row_edited",
    "rows_deleted",
    "link_broken",
    "row_inserted",
    "snapshot_missing",
    "snapshot_modified",
    "link_downgraded",
    "wrong_key",
    "head_unauthenticated",
    "rotation_invalid",
]

_READ_CHUNK = 1 << 20
_MAX_PROBLEMS = 100


def canonical_row(values: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one row (see the module docstring).

    Args:
        values: every column of :data:`CHAINED_COLUMNS` (other keys are ignored).

    Raises:
        KeyError: a chained column is missing.
        ValueError: a float is NaN or infinite (not JSON).
    """
    obj = {k: values[k] for k in CHAINED_COLUMNS}
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def row_hash(values: Mapping[str, Any]) -> str:
    """Lowercase hex SHA-256 of :func:`canonical_row`."""
    return hashlib.sha256(canonical_row(values)).hexdigest()


def row_link(values: Mapping[str, Any], key: ChainKey | None) -> str:
    """A row's ``hash``: :func:`row_hash` without a key, else lowercase hex
    ``HMAC-SHA256(key, canonical_row(values))``."""
    return row_hash(values) if key is None else key.mac(canonical_row(values))


_HEAD_PREFIX = b"safety-edge events head v1\n"


def head_mac(key: ChainKey, *, head_seq: int, head_hash: str, keyed_from_seq: int) -> str:
    """``events_chain.head_mac``: lowercase hex HMAC-SHA256 under ``key`` of
    ``b"safety-edge events head v1\\n"`` followed by the compact sorted-key JSON of
    ``{"head_hash", "head_seq", "key_id", "keyed_from_seq"}`` (the prefix keeps it apart
    from row bytes, which start with ``{``)."""
    body = json.dumps(
        {
            "head_hash": head_hash,
            "head_seq": int(head_seq),
            "key_id": key.key_id,
            "keyed_from_seq": int(keyed_from_seq),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return key.mac(_HEAD_PREFIX + body.encode("utf-8"))


ROTATIONS_TABLE = "events_key_rotations"
"""The table of key rotation records (created by the first rotation; absent: never rotated)."""

_ROTATIONS_DDL = f"""CREATE TABLE IF NOT EXISTS {ROTATIONS_TABLE} (
    n              INTEGER PRIMARY KEY,
    from_seq       INTEGER NOT NULL,
    head_seq       INTEGER NOT NULL,
    head_hash      TEXT NOT NULL,
    keyed_from_seq INTEGER NOT NULL,
    old_key_id     TEXT NOT NULL,
    new_key_id     TEXT NOT NULL,
    time_ms        INTEGER NOT NULL,
    old_mac        TEXT NOT NULL,
    new_mac        TEXT NOT NULL
)"""
_ROTATION_FIELDS = (
    "n",
    "from_seq",
    "head_seq",
    "head_hash",
    "keyed_from_seq",
    "old_key_id",
    "new_key_id",
    "time_ms",
)
_ROTATION_PREFIX = b"safety-edge events key rotation v1\n"


class KeyRotationError(EdgeError):
    """A key rotation was refused (nothing was changed): the chain is not keyed, the old
    key is not the chain's, the new key is not new, or the chain does not verify."""

    code = 5002


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """One row of ``events_key_rotations``: the chain moved from one key to another.

    Attributes:
        n: 1 for the first rotation of the chain, then 2, 3, ...
        from_seq: the first link keyed with the new key (``head_seq + 1``).
        head_seq, head_hash: the chain head when it was rotated (the last link of the
            old key, or of the plain part when no event was stored since keying).
        keyed_from_seq: the chain's first keyed link of all (``events_chain``).
        old_key_id, new_key_id: the ids of the key retired and of its successor.
        time_ms: when it was rotated (Unix ms; informative, but under the MACs).
        old_mac, new_mac: lowercase hex HMAC-SHA256 of :meth:`signed_bytes` under the old
            and under the new key.
    """

    n: int
    from_seq: int
    head_seq: int
    head_hash: str
    keyed_from_seq: int
    old_key_id: str
    new_key_id: str
    time_ms: int
    old_mac: str = ""
    new_mac: str = ""

    def signed_bytes(self) -> bytes:
        """``b"safety-edge events key rotation v1\\n"`` followed by the compact sorted-key
        JSON of every field but the two MACs (the prefix keeps these bytes apart from row
        and head bytes)."""
        body = json.dumps(
            {k: getattr(self, k) for k in _ROTATION_FIELDS},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return _ROTATION_PREFIX + body.encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return {k: getattr(self, k) for k in (*_ROTATION_FIELDS, "old_mac", "new_mac")}


@dataclass(frozen=True, slots=True)
class RotationCheck:
    """A rotation record as verification saw it.

    Attributes:
        rotation: the record.
        old_mac_ok, new_mac_ok: whether its MAC under the old / new key matches (``None``:
            that key was not given).
    """

    rotation: KeyRotation
    old_mac_ok: bool | None
    new_mac_ok: bool | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the record without its MACs, and what was checked)."""
        r = self.rotation
        return {
            "n": r.n,
            "from_seq": r.from_seq,
            "head": {"seq": r.head_seq, "hash": r.head_hash},
            "old_key_id": r.old_key_id,
            "new_key_id": r.new_key_id,
            "time_ms": r.time_ms,
            "old_mac_ok": self.old_mac_ok,
            "new_mac_ok": self.new_mac_ok,
        }


def file_sha256(path: str | Path) -> str:
    """Lowercase hex SHA-256 of a file's bytes (read in 1 MiB chunks).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """One broken link.

    Attributes:
        kind: what is wrong (see :class:`VerifyReport`).
        row: 1-based position of the row in chain order among the rows present (0 when the
            break is after the last row, e.g. rows deleted at the end).
        seq: the row's stored ``seq`` (``None`` when it has none).
        event_id: the row's event id (``None`` after the last row).
        detail: a sentence for a person.
    """

    kind: BreakKind
    row: int
    seq: int | None
    event_id: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "kind": self.kind,
            "row": self.row,
            "seq": self.seq,
            "event_id": self.event_id,
            "detail": self.detail,
        }


@dataclass(slots=True)
class VerifyReport:
    """The result of :func:`verify_evidence`.

    Break kinds: ``row_edited`` (the row's fields do not match its hash), ``rows_deleted``
    (``seq`` jumps and the link is broken: rows are missing before this row, or after the
    last one), ``link_broken`` (``prev_hash`` is not the previous row's hash with no gap:
    a row was inserted, or the previous row was rewritten with a recomputed hash),
    ``row_inserted`` (a row without a chain position, or rows after the recorded head),
    ``snapshot_missing``, ``snapshot_modified`` (the file's SHA-256 is not the event's
    ``snapshot_sha256``), ``link_downgraded`` (a plain link where the chain is keyed, or
    the keying record moved), ``wrong_key`` (a keyed link under another key than the
    chain's key at its ``seq``, or a given key that is not one of the chain's),
    ``head_unauthenticated`` (a key was given and the head MAC is missing or wrong),
    ``rotation_invalid`` (a key rotation record forged, edited, deleted or out of step
    with the rows; ``row`` is 0 unless the record disagrees with a row). Keyed links and
    rotations are explained in the module docstring.

    Attributes:
        rows: rows checked.
        anchor_seq, anchor_hash: where the chain starts (after pruned rows).
        head_seq, head_hash: the recorded newest link.
        pruned: rows deleted by pruning so far.
        keyed_links, unkeyed_links: rows by ``link`` scheme.
        unverified_links: keyed links whose MAC was not checked (no key given).
        key_id: the chain's key id (``None``: never keyed).
        keyed_from_seq: the recorded first keyed link (``None``: never keyed).
        key_given: the id of the key verification used, when several were given the
            chain's current key if among them, else the first (``None``: none).
        keys_given: the ids of every key given, in the order given (duplicates dropped).
        keys_missing: key ids the chain uses that were not given, oldest first (links,
            rotation MACs or the head MAC left unchecked for want of them).
        rotations: the key rotation records, in order (empty: never rotated).
        head_authenticated: the head MAC matched (``None``: not checked).
        snapshots_ok: files present with the right hash.
        snapshots_expired: files missing, taken as deleted by retention.
        snapshots_unhashed: events with a snapshot but no hash (chained at migration).
        problems: breaks in chain order (at most 100 kept; ``problem_count`` counts all).
    """

    rows: int = 0
    anchor_seq: int = 0
    anchor_hash: str = GENESIS_HASH
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    pruned: int = 0
    keyed_links: int = 0
    unkeyed_links: int = 0
    unverified_links: int = 0
    key_id: str | None = None
    keyed_from_seq: int | None = None
    key_given: str | None = None
    keys_given: list[str] = field(default_factory=list)
    keys_missing: list[str] = field(default_factory=list)
    rotations: list[RotationCheck] = field(default_factory=list)
    head_authenticated: bool | None = None
    snapshots_ok: int = 0
    snapshots_expired: int = 0
    snapshots_unhashed: int = 0
    snapshots_checked: bool = True
    problems: list[ChainBreak] = field(default_factory=list)
    problem_count: int = 0

    @property
    def needs_key(self) -> bool:
        """The chain is keyed and no key was given, or a key it uses was not given
        (:attr:`keys_missing`): keyed links, rotation MACs or the head MAC are not
        checked, so an intact result would be incomplete."""
        no_key = self.key_given is None and (self.key_id is not None or self.keyed_links > 0)
        return no_key or bool(self.keys_missing)

    @property
    def ok(self) -> bool:
        """``True`` when nothing is broken and nothing was left unchecked for want of the
        key."""
        return self.problem_count == 0 and not self.needs_key

    @property
    def first(self) -> ChainBreak | None:
        """The first broken link in chain order, or ``None``."""
        return self.problems[0] if self.problems else None

    def add(self, problem: ChainBreak) -> None:
        """Record a break (kept up to 100)."""
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``safety-edge events verify`` prints)."""
        first = self.first
        return {
            "ok": self.ok,
            "rows": self.rows,
            "anchor": {"seq": self.anchor_seq, "hash": self.anchor_hash, "pruned": self.pruned},
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "links": {
                "keyed": self.keyed_links,
                "unkeyed": self.unkeyed_links,
                "unverified": self.unverified_links,
            },
            "key": {
                "key_id": self.key_id,
                "keyed_from_seq": self.keyed_from_seq,
                "given": self.key_given,
                "head_authenticated": self.head_authenticated,
            },
            "keys": {"given": list(self.keys_given), "missing": list(self.keys_missing)},
            "rotations": [r.to_dict() for r in self.rotations],
            "snapshots": None
            if not self.snapshots_checked
            else {
                "ok": self.snapshots_ok,
                "expired": self.snapshots_expired,
                "unhashed": self.snapshots_unhashed,
            },
            "first_break": None if first is None else first.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "problem_count": self.problem_count,
        }


def _snapshot_file(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` is a plain relative path inside ``root``, else ``None``."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return root.joinpath(*p.parts)


def _check_snapshot(
    report: VerifyReport,
    *,
    root: Path,
    row_no: int,
    values: Mapping[str, Any],
    strict: bool,
    oldest_present_ms: int | None,
) -> bool | None:
    """Check one event's snapshot; returns ``True`` if present, ``False`` if missing,
    ``None`` when there is nothing to check."""
    rel = values["snapshot"]
    if rel is None:
        return None
    digest = values["snapshot_sha256"]
    seq, eid = values["seq"], values["event_id"]
    path = _snapshot_file(root, str(rel))
    if path is None:
        report.add(
            ChainBreak(
                "snapshot_missing",
                row_no,
                seq,
                eid,
                f"snapshot path {rel!r} is not inside the snapshot folder",
            )
        )
        return False
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        actual = None
    except OSError as exc:
        report.add(
            ChainBreak(
                "snapshot_missing", row_no, seq, eid, f"snapshot {rel} cannot be read: {exc}"
            )
        )
        return False
    if actual is None:
        t = int(values["time_ms"])
        older_present = (
            oldest_present_ms is not None and oldest_present_ms <= t - RETENTION_SLACK_MS
        )
        if strict or older_present:
            why = (
                "an older snapshot is still present, so retention did not delete it"
                if older_present
                else "every snapshot must be present (strict)"
            )
            report.add(
                ChainBreak(
                    "snapshot_missing", row_no, seq, eid, f"snapshot {rel} is missing; {why}"
                )
            )
        else:
            report.snapshots_expired += 1
        return False
    if digest is None:
        report.snapshots_unhashed += 1
    elif actual != digest:
        report.add(
            ChainBreak(
                "snapshot_modified",
                row_no,
                seq,
                eid,
                f"snapshot {rel} has SHA-256 {actual}, the event recorded {digest}",
            )
        )
    else:
        report.snapshots_ok += 1
    return True


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


class _Keys:
    """The keys a verification was given, and the key each part of the chain needs.

    ``history``: the chain's keys, oldest first (see the module docstring); ``related``:
    some given key is in it (else a given key is simply the wrong one, reported as before
    rotations existed); ``missing``: history keys that were needed and not given."""

    def __init__(
        self,
        given: Sequence[ChainKey],
        *,
        chain_key_id: str | None,
        rotations: Sequence[KeyRotation],
    ) -> None:
        self.given: dict[str, ChainKey] = {}
        for k in given:
            self.given.setdefault(k.key_id, k)
        history: list[str] = []
        if rotations:
            history.append(rotations[0].old_key_id)
            history.extend(r.new_key_id for r in rotations)
        elif chain_key_id is not None:
            history.append(chain_key_id)
        self.history = list(dict.fromkeys(history))
        self.rotations = list(rotations)
        self.related = any(k in self.given for k in self.history)
        self.missing: set[str] = set()

    def need(self, key_id: str | None) -> None:
        if key_id is not None and key_id not in self.given:
            self.missing.add(key_id)

    def missing_in_order(self) -> list[str]:
        known = [k for k in self.history if k in self.missing]
        return known + sorted(self.missing.difference(known))

    def given_text(self) -> str:
        ids = list(self.given)
        if len(ids) == 1:
            return f"the given key has id {ids[0]}"
        return f"the given keys have ids {', '.join(ids)}"

    def in_force(self, seq: int) -> str | None:
        """The key the link at ``seq`` must be keyed with (``None``: no keying record)."""
        if not self.history:
            return None
        kid = self.rotations[0].old_key_id if self.rotations else self.history[0]
        for r in self.rotations:
            if r.from_seq <= seq:
                kid = r.new_key_id
        return kid

    def mismatch(self, seq: int, row_key: Any, expected: str) -> str:
        """Why a link keyed with ``row_key`` is wrong where ``expected`` is in force."""
        retired = next((r for r in self.rotations if r.old_key_id == row_key), None)
        later = next((r for r in self.rotations if r.new_key_id == row_key), None)
        if retired is not None and retired.from_seq <= seq:
            return (
                f"the link is keyed with key id {row_key}, which key rotation {retired.n} "
                f"retired from seq {retired.from_seq} on (links from there are keyed with "
                f"{retired.new_key_id}; here {expected}): written after the rotation by "
                "someone holding the retired key"
            )
        if later is not None and later.from_seq > seq:
            return (
                f"the link is keyed with key id {row_key}, which the chain uses only from "
                f"seq {later.from_seq} on (key rotation {later.n}); links at seq {seq} are "
                f"keyed with {expected}"
            )
        return (
            f"the link is keyed with key id {row_key}; links at seq {seq} are keyed with "
            f"{expected} (another key, or the key id edited)"
        )

    def check_mac(self, key_id: str, data: bytes, mac: str) -> bool | None:
        """Whether ``mac`` is the MAC of ``data`` under ``key_id`` (``None``: not given)."""
        key = self.given.get(key_id)
        if key is None:
            self.need(key_id)
            return None
        return hmac.compare_digest(key.mac(data).encode(), str(mac).encode())


def _read_rotations(conn: sqlite3.Connection, report: VerifyReport) -> list[KeyRotation]:
    """The rotation records in ``n`` order; an unreadable one is a break and skipped."""
    if not _has_table(conn, ROTATIONS_TABLE):
        return []
    cols = ", ".join((*_ROTATION_FIELDS, "old_mac", "new_mac"))
    out: list[KeyRotation] = []
    for row in conn.execute(f"SELECT {cols} FROM {ROTATIONS_TABLE} ORDER BY n"):
        try:
            ints = [row[i] for i in (0, 1, 2, 4, 7)]
            if not all(isinstance(v, int) for v in ints):
                raise ValueError("not an integer")
            out.append(
                KeyRotation(
                    n=ints[0],
                    from_seq=ints[1],
                    head_seq=ints[2],
                    head_hash=str(row[3]),
                    keyed_from_seq=ints[3],
                    old_key_id=str(row[5]),
                    new_key_id=str(row[6]),
                    time_ms=ints[4],
                    old_mac=str(row[8]),
                    new_mac=str(row[9]),
                )
            )
        except (TypeError, ValueError):
            report.add(
                ChainBreak(
                    "rotation_invalid",
                    0,
                    None,
                    None,
                    f"key rotation record {row[0]!r} is unreadable (a value of the wrong type): "
                    "edited by hand",
                )
            )
    return out


def verify_evidence(
    conn: sqlite3.Connection,
    *,
    snapshots_root: str | Path | None,
    strict_snapshots: bool = False,
    key: ChainKey | None = None,
    keys: Sequence[ChainKey] = (),
) -> VerifyReport:
    """Check the chain of the events table on ``conn`` and, when ``snapshots_root`` is
    given, every event's snapshot file (present, and its SHA-256 is the recorded one).

    Reads everything in one read transaction (a consistent view while the gateway keeps
    appending). Keeps going after a break, so :attr:`VerifyReport.problems` lists every
    break (up to 100); the *first* is the first in chain order (rotation records that do
    not hold come first: they decide which key each link needs).

    Args:
        conn: a connection to an events database at schema version >= 2 (open it
            read-only; nothing is written). It must be in autocommit mode
            (``isolation_level=None``).
        snapshots_root: the snapshot folder (events hold paths relative to it); ``None``
            checks the chain only.
        strict_snapshots: every referenced snapshot must exist (no allowance for retention).
        key: the chain key. Without any key, keyed links are counted as unverified
            (:attr:`VerifyReport.needs_key`); with one the chain must be keyed with it and
            its head MAC must hold (see the module docstring).
        keys: more keys, for a rotated chain (each part is checked with its own key;
            ``key`` and ``keys`` together are the keys given).

    Raises:
        sqlite3.Error: the database cannot be read.
    """
    given = [*(() if key is None else (key,)), *keys]
    conn.execute("BEGIN")
    try:
        return _verify(
            conn,
            root=None if snapshots_root is None else Path(snapshots_root),
            strict_snapshots=strict_snapshots,
            given=given,
        )
    finally:
        conn.execute("COMMIT")


def _verify(
    conn: sqlite3.Connection,
    *,
    root: Path | None,
    strict_snapshots: bool,
    given: Sequence[ChainKey],
) -> VerifyReport:
    """:func:`verify_evidence` inside the caller's transaction."""
    report = VerifyReport(snapshots_checked=root is not None)
    report.keys_given = list(dict.fromkeys(k.key_id for k in given))
    keyed_schema = "link" in _columns(conn, "events")  # schema 4; before it: all plain
    extra = "key_id, keyed_from_seq, head_mac" if keyed_schema else "NULL, NULL, NULL"
    state = conn.execute(
        f"SELECT anchor_seq, anchor_hash, head_seq, head_hash, pruned, {extra} FROM events_chain"
    ).fetchone()
    stored_head_mac: str | None = None
    if state is not None:
        report.anchor_seq, report.anchor_hash = int(state[0]), str(state[1])
        report.head_seq, report.head_hash = int(state[2]), str(state[3])
        report.pruned = int(state[4])
        report.key_id = None if state[5] is None else str(state[5])
        report.keyed_from_seq = None if state[6] is None else int(state[6])
        stored_head_mac = None if state[7] is None else str(state[7])
    rotations = _read_rotations(conn, report)
    keys = _Keys(given, chain_key_id=report.key_id, rotations=rotations)
    if given:
        report.key_given = report.key_id if report.key_id in keys.given else report.keys_given[0]
    _check_rotations(report, keys)
    heads: dict[int, list[KeyRotation]] = {}
    for r in rotations:
        heads.setdefault(r.head_seq, []).append(r)
    names = (*CHAINED_COLUMNS, "hash", "link", "key_id")
    link_cols = "link, key_id" if keyed_schema else f"'{LINK_PLAIN}', NULL"
    cols = ", ".join((*CHAINED_COLUMNS, "hash"))
    cur = conn.execute(f"SELECT {cols}, {link_cols} FROM events ORDER BY seq, rowid")
    prev_seq: int | None = report.anchor_seq
    prev_hash = report.anchor_hash
    oldest_present_ms: int | None = None
    row_no = 0
    for row in cur:
        row_no += 1
        values = dict(zip(names, row, strict=True))
        _check_link(report, row_no, values, prev_seq, prev_hash, keys)
        seq = values["seq"]
        if isinstance(seq, int) and seq in heads:
            _check_rotation_head(report, row_no, values, heads[seq])
        if root is not None:
            present = _check_snapshot(
                report,
                root=root,
                row_no=row_no,
                values=values,
                strict=strict_snapshots,
                oldest_present_ms=oldest_present_ms,
            )
            if present:
                t = int(values["time_ms"])
                oldest_present_ms = t if oldest_present_ms is None else min(oldest_present_ms, t)
        if isinstance(seq, int):
            prev_seq = seq
        prev_hash = str(values["hash"])
    report.rows = row_no
    _check_end(report, prev_seq, prev_hash)
    _check_head_mac(report, keys, stored_head_mac)
    report.keys_missing = keys.missing_in_order()
    return report


def _check_rotations(report: VerifyReport, keys: _Keys) -> None:
    """Each rotation record must carry MACs that hold, follow on from the one before it
    and from the chain's keying record, and the last must lead to the chain's key."""
    rotations = keys.rotations
    if not rotations:
        return
    if report.key_id is None or report.keyed_from_seq is None:
        report.add(
            ChainBreak(
                "rotation_invalid",
                0,
                None,
                None,
                f"the chain has {len(rotations)} key rotation record(s) but no keying record: "
                "the keying record was cleared",
            )
        )
    for i, r in enumerate(rotations):
        why: list[str] = []
        if r.n != i + 1:
            why.append(f"it is number {r.n} at position {i + 1}: a rotation record was deleted")
        if r.from_seq != r.head_seq + 1:
            why.append(f"its first seq is not the one after its head (seq {r.head_seq})")
        if r.old_key_id == r.new_key_id:
            why.append("its old and new key are the same")
        if i > 0:
            p = rotations[i - 1]
            if r.old_key_id != p.new_key_id:
                why.append(
                    f"its old key is not {p.new_key_id}, the key rotation {p.n} moved to: a "
                    "rotation record was deleted or inserted"
                )
            if r.from_seq < p.from_seq:
                why.append(f"it starts before rotation {p.n} (seq {p.from_seq})")
        start = report.keyed_from_seq
        if start is not None and (r.keyed_from_seq != start or r.from_seq < start):
            why.append(
                f"it records keyed links from seq {r.keyed_from_seq} (starting at seq "
                f"{r.from_seq}); the chain's keying record says from seq {start}"
            )
        if r.head_seq > report.head_seq:
            why.append(
                f"its head (seq {r.head_seq}) is after the recorded chain head (seq "
                f"{report.head_seq}): rows deleted at the end with the head moved back"
            )
        elif r.head_seq == report.head_seq and r.head_hash != report.head_hash:
            why.append("its head is the chain head's seq but not its hash")
        if r.head_seq == report.anchor_seq and r.head_hash != report.anchor_hash:
            why.append("its head is the anchor's seq but not its hash")
        data = r.signed_bytes()
        old_ok = keys.check_mac(r.old_key_id, data, r.old_mac)
        new_ok = keys.check_mac(r.new_key_id, data, r.new_mac)
        for ok, which, kid in ((old_ok, "old", r.old_key_id), (new_ok, "new", r.new_key_id)):
            if ok is False:
                why.append(
                    f"its MAC under the {which} key ({kid}) does not match: the record was "
                    f"edited, or forged by someone without the {which} key"
                )
        report.rotations.append(RotationCheck(r, old_ok, new_ok))
        for w in why:
            report.add(
                ChainBreak(
                    "rotation_invalid",
                    0,
                    r.from_seq,
                    None,
                    f"key rotation {r.n} (key id {r.old_key_id} -> {r.new_key_id} from seq "
                    f"{r.from_seq}): {w}",
                )
            )
    last = rotations[-1]
    if report.key_id is not None and last.new_key_id != report.key_id:
        report.add(
            ChainBreak(
                "rotation_invalid",
                0,
                None,
                None,
                f"the chain is keyed with key id {report.key_id}, but the last key rotation "
                f"({last.n}) moved it to {last.new_key_id}: a rotation record deleted, or the "
                "keying record changed",
            )
        )


def _check_rotation_head(
    report: VerifyReport, row_no: int, values: Mapping[str, Any], rotations: list[KeyRotation]
) -> None:
    """The row a rotation recorded as the head at rotation must still have that hash."""
    for r in rotations:
        if str(values["hash"]) != r.head_hash:
            report.add(
                ChainBreak(
                    "rotation_invalid",
                    row_no,
                    r.head_seq,
                    values["event_id"],
                    f"key rotation {r.n} recorded this row (seq {r.head_seq}) as the head "
                    f"with hash {r.head_hash}; its hash is now {values['hash']}: the chain "
                    "up to the rotation was rewritten after it",
                )
            )


def _check_end(report: VerifyReport, prev_seq: int | None, prev_hash: str) -> None:
    """The last row present must be the recorded head."""
    if (prev_seq, prev_hash) == (report.head_seq, report.head_hash):
        return
    if prev_seq is not None and prev_seq < report.head_seq:
        report.add(
            ChainBreak(
                "rows_deleted",
                0,
                None,
                None,
                f"the newest rows are missing: the chain ends at seq {prev_seq}, the "
                f"recorded head is seq {report.head_seq}",
            )
        )
    elif prev_seq is not None and prev_seq > report.head_seq:
        report.add(
            ChainBreak(
                "row_inserted",
                0,
                None,
                None,
                f"rows after the recorded head (seq {report.head_seq}) up to seq "
                f"{prev_seq} were added outside the event store",
            )
        )
    else:
        report.add(
            ChainBreak(
                "link_broken",
                0,
                None,
                None,
                f"the last row's hash is not the recorded head hash (seq {report.head_seq})",
            )
        )


def _check_head_mac(report: VerifyReport, keys: _Keys, stored: str | None) -> None:
    """With keys given, the chain must be keyed, its current key must be among them (or
    reported missing), its head MAC must hold, and every key given must be the chain's."""
    if not keys.given:
        keys.need(report.key_id)
        return
    if report.key_id is None or report.keyed_from_seq is None:
        report.head_authenticated = False
        report.add(
            ChainBreak(
                "head_unauthenticated",
                0,
                None,
                None,
                "a key was given but the chain has no keying record: the gateway never "
                "stored events with a key, or the keyed links were rewritten without it",
            )
        )
        return
    for kid in keys.given:
        if keys.related and kid not in keys.history:
            report.add(
                ChainBreak(
                    "wrong_key",
                    0,
                    None,
                    None,
                    f"key id {kid} was given, but the chain was never keyed with it (its keys, "
                    f"oldest first: {', '.join(keys.history)}): the wrong key file, or a key "
                    "rotation undone by someone holding an older key",
                )
            )
    key = keys.given.get(report.key_id)
    if key is None:
        if keys.related:  # a rotated chain checked without its newest key
            keys.need(report.key_id)
            return
        report.head_authenticated = False
        report.add(
            ChainBreak(
                "wrong_key",
                0,
                None,
                None,
                f"the chain is keyed with key id {report.key_id}; {keys.given_text()} (wrong key?)",
            )
        )
        return
    expected = head_mac(
        key,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        keyed_from_seq=report.keyed_from_seq,
    )
    report.head_authenticated = stored is not None and hmac.compare_digest(
        stored.encode(), expected.encode()
    )
    if not report.head_authenticated:
        report.add(
            ChainBreak(
                "head_unauthenticated",
                0,
                None,
                None,
                f"the recorded head (seq {report.head_seq}) or keying record (keyed from "
                f"seq {report.keyed_from_seq}) is not the one written with this key: rows "
                "deleted at the end, or the chain rewritten without the key",
            )
        )


def _link_content(
    report: VerifyReport, row_no: int, values: Mapping[str, Any], keys: _Keys
) -> bool | None:
    """Whether the row's fields match its ``hash`` under its link scheme (``None``: not
    checked: unknown scheme, no key, or another key), recording scheme breaks."""
    seq, eid, link = values["seq"], values["event_id"], values["link"]
    keyed = link == LINK_KEYED
    if keyed:
        report.keyed_links += 1
    else:
        report.unkeyed_links += 1
    start = report.keyed_from_seq  # links from it on are keyed, links before it plain
    if not keyed and start is not None and seq >= start:
        report.add(
            ChainBreak(
                "link_downgraded",
                row_no,
                seq,
                eid,
                f"an unkeyed link where the chain is keyed (from seq {start}): the row, or "
                "the chain from here, was rewritten by someone without the key",
            )
        )
    elif keyed and (start is None or seq < start):
        report.add(
            ChainBreak(
                "link_downgraded",
                row_no,
                seq,
                eid,
                "a keyed link before the recorded start of keying "
                f"({'none' if start is None else f'seq {start}'}): the keying record was "
                "moved to hide keyed links",
            )
        )
    if link not in (LINK_PLAIN, LINK_KEYED):
        report.add(ChainBreak("row_edited", row_no, seq, eid, f"unknown link scheme {link!r}"))
        return None
    key: ChainKey | None = None
    if keyed:
        expected = keys.in_force(seq)
        if expected is not None and values["key_id"] != expected:
            report.add(
                ChainBreak(
                    "wrong_key", row_no, seq, eid, keys.mismatch(seq, values["key_id"], expected)
                )
            )
            return None
        kid = expected if expected is not None else values["key_id"]
        key = keys.given.get(kid)
        if key is None:
            if keys.given and not keys.related:
                report.add(
                    ChainBreak(
                        "wrong_key",
                        row_no,
                        seq,
                        eid,
                        f"the link is keyed with key id {kid}; {keys.given_text()} (wrong key?)",
                    )
                )
                return None
            report.unverified_links += 1
            keys.need(None if kid is None else str(kid))
            return None
    try:
        computed = row_link(values, key)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed.encode(), str(values["hash"]).encode())


def _check_link(
    report: VerifyReport,
    row_no: int,
    values: Mapping[str, Any],
    prev_seq: int | None,
    prev_hash: str,
    keys: _Keys,
) -> None:
    seq, eid = values["seq"], values["event_id"]
    if not isinstance(seq, int):
        report.add(
            ChainBreak(
                "row_inserted", row_no, None, eid, f"row has no valid chain position (seq {seq!r})"
            )
        )
        return
    content_ok = _link_content(report, row_no, values, keys)
    if content_ok is False:
        report.add(
            ChainBreak(
                "row_edited",
                row_no,
                seq,
                eid,
                "the row's fields do not match its stored hash (edited after it was written)",
            )
        )
    if values["prev_hash"] != prev_hash:
        base = 0 if prev_seq is None else prev_seq
        if seq > base + 1:
            missing = f"seq {base + 1}" if seq == base + 2 else f"seq {base + 1}..{seq - 1}"
            where = "at the start of the chain (after the anchor)" if row_no == 1 else "before it"
            report.add(
                ChainBreak(
                    "rows_deleted", row_no, seq, eid, f"rows deleted {where}: {missing} missing"
                )
            )
        else:
            report.add(
                ChainBreak(
                    "link_broken",
                    row_no,
                    seq,
                    eid,
                    "prev_hash is not the hash of the row before it: a row was inserted here, "
                    "or the previous row was rewritten together with its hash",
                )
            )
    elif seq != (0 if prev_seq is None else prev_seq) + 1 and content_ok is not False:
        report.add(
            ChainBreak(
                "row_edited",
                row_no,
                seq,
                eid,
                f"seq {seq} does not follow seq {prev_seq} although the link holds",
            )
        )


# -- key rotation ----------------------------------------------------------------------------
def rotate_chain_key(
    conn: sqlite3.Connection,
    *,
    old: ChainKey,
    new: ChainKey,
    time_ms: int | None = None,
) -> tuple[KeyRotation, VerifyReport]:
    """Move the chain on ``conn`` from key ``old`` to key ``new`` (see the module
    docstring); returns the rotation record written and the report of the verification
    that preceded it.

    In one ``BEGIN IMMEDIATE`` transaction (``PRAGMA synchronous = FULL`` is set on
    ``conn`` first, so the commit is on disk when this returns): verify the chain with
    ``old`` (links, rotation records, head MAC; snapshots are not checked; links keyed
    with keys retired by earlier rotations are left unchecked, since only ``old`` is
    given), then add the rotation record (creating :data:`ROTATIONS_TABLE` on the first
    rotation) and set ``events_chain.key_id`` and ``head_mac`` to the new key. A refusal or
    a failure rolls everything back. Run it with the gateway stopped: a store that keeps
    the old key open refuses its next append (the chain is keyed with another key).

    Args:
        conn: a writable connection in autocommit mode (``isolation_level=None``) to an
            events database at schema version >= 4.
        old: the chain's current key.
        new: its successor; never used by this chain before.
        time_ms: the rotation time (Unix ms; default now).

    Raises:
        KeyRotationError: ``new`` is ``old`` or a key the chain used before, the chain is
            not keyed, it is keyed with another key than ``old``, or it does not verify
            with ``old`` (nothing was changed).
        sqlite3.Error: the database cannot be read or written (locked past the busy
            timeout, read-only, full); nothing was changed.
    """
    if new.key_id == old.key_id:
        raise KeyRotationError(
            f"the new key ({new.source}) is the old key (key id {old.key_id}); make a new "
            "one, e.g. `head -c 32 /dev/urandom | base64 > NEW.key`. Nothing was changed"
        )
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")  # the write lock first: the head cannot move meanwhile
    try:
        out = _rotate(conn, old, new, int(time.time() * 1000) if time_ms is None else time_ms)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


def _rotate(
    conn: sqlite3.Connection, old: ChainKey, new: ChainKey, time_ms: int
) -> tuple[KeyRotation, VerifyReport]:
    """:func:`rotate_chain_key` inside its write transaction."""
    from edge.stream.chain_key import EVENTS_KEY_ENV

    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    keyed_schema = (
        version >= 4
        and _has_table(conn, "events_chain")
        and "key_id" in _columns(conn, "events_chain")
    )
    state = conn.execute("SELECT key_id FROM events_chain").fetchone() if keyed_schema else None
    if state is None or state[0] is None:
        raise KeyRotationError(
            "the events chain is not keyed (plain SHA-256 links): there is no key to rotate. "
            "To key it, set storage.events_key_file (or "
            f"{EVENTS_KEY_ENV}) to a key file and start the gateway once: it switches the "
            "chain over to keyed links. Nothing was changed"
        )
    report = _verify(conn, root=None, strict_snapshots=False, given=[old])
    history = [r.rotation.old_key_id for r in report.rotations[:1]] + [
        r.rotation.new_key_id for r in report.rotations
    ]
    current = str(state[0])
    if current != old.key_id:
        retired = next(
            (r.rotation for r in report.rotations if r.rotation.old_key_id == old.key_id), None
        )
        hint = "" if retired is None else f" (retired by key rotation {retired.n})"
        raise KeyRotationError(
            f"the events chain is keyed with key id {current}; the old key from {old.source} "
            f"has id {old.key_id}{hint}: give the chain's current key as the old key. "
            "Nothing was changed"
        )
    if new.key_id in history:
        raise KeyRotationError(
            f"the new key ({new.source}, key id {new.key_id}) was used by this chain before; "
            "a retired key may have leaked: make a new one. Nothing was changed"
        )
    first = report.first
    if first is not None:
        where = "" if first.seq is None else f" at seq {first.seq}"
        raise KeyRotationError(
            f"the events chain does not verify with the old key ({report.problem_count} "
            f"problem(s); first: {first.kind}{where}: {first.detail}); a broken chain is not "
            "rotated (see `safety-edge events verify --key-file OLD`). Nothing was changed"
        )
    if report.head_authenticated is not True or report.keyed_from_seq is None:
        raise KeyRotationError("the chain head is not authenticated with the old key")
    rotation = KeyRotation(
        n=len(report.rotations) + 1,
        from_seq=report.head_seq + 1,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        keyed_from_seq=report.keyed_from_seq,
        old_key_id=old.key_id,
        new_key_id=new.key_id,
        time_ms=int(time_ms),
    )
    data = rotation.signed_bytes()
    rotation = replace(rotation, old_mac=old.mac(data), new_mac=new.mac(data))
    conn.execute(_ROTATIONS_DDL)
    values = rotation.to_dict()
    cols = (*_ROTATION_FIELDS, "old_mac", "new_mac")
    conn.execute(
        f"INSERT INTO {ROTATIONS_TABLE} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        tuple(values[c] for c in cols),
    )
    conn.execute(
        "UPDATE events_chain SET key_id = ?, head_mac = ?",
        (
            new.key_id,
            head_mac(
                new,
                head_seq=report.head_seq,
                head_hash=report.head_hash,
                keyed_from_seq=report.keyed_from_seq,
            ),
        ),
    )
    return rotation, report
