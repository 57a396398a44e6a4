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
(:attr:`VerifyReport.needs_key`). A keyed link whose ``key_id`` is not the given key's is
``wrong_key`` (the id is a hint: an edited ``key_id`` also lands here, still a break).
A store with a key never blesses a head it did not write: when the stored ``head_mac``
does not match, it keeps appending keyed links but leaves that ``head_mac`` as it is,
so verification keeps reporting it.

**What this does and does not prove.** The chain detects rows edited, deleted or inserted
and snapshot files removed or modified by anyone who does not recompute the hashes after
the change (a hand edit with ``sqlite3``, a file replaced, rows deleted to hide an
incident). Plain links are SHA-256, not a signature: someone with write access who knows
the scheme can rewrite the whole plain part of the chain. Keyed links hold against that
as long as the key stays secret; whoever reads the key can forge links and head alike. Neither
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from edge.stream.chain_key import ChainKey

__all__ = [
    "CHAINED_COLUMNS",
    "GENESIS_HASH",
    "LINK_KEYED",
    "LINK_PLAIN",
    "RETENTION_SLACK_MS",
    "BreakKind",
    "ChainBreak",
    "VerifyReport",
    "canonical_row",
    "file_sha256",
    "head_mac",
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
    the keying record moved), ``wrong_key`` (a keyed link, or the chain, under another
    key than the given one), ``head_unauthenticated`` (a key was given and the head MAC is
    missing or wrong). Keyed links are explained in the module docstring.

    Attributes:
        rows: rows checked.
        anchor_seq, anchor_hash: where the chain starts (after pruned rows).
        head_seq, head_hash: the recorded newest link.
        pruned: rows deleted by pruning so far.
        keyed_links, unkeyed_links: rows by ``link`` scheme.
        unverified_links: keyed links whose MAC was not checked (no key given).
        key_id: the chain's key id (``None``: never keyed).
        keyed_from_seq: the recorded first keyed link (``None``: never keyed).
        key_given: the id of the key verification used (``None``: none).
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
    head_authenticated: bool | None = None
    snapshots_ok: int = 0
    snapshots_expired: int = 0
    snapshots_unhashed: int = 0
    snapshots_checked: bool = True
    problems: list[ChainBreak] = field(default_factory=list)
    problem_count: int = 0

    @property
    def needs_key(self) -> bool:
        """The chain is keyed and no key was given: keyed links and the head MAC are not
        checked, so an intact result would be incomplete."""
        return self.key_given is None and (self.key_id is not None or self.keyed_links > 0)

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


def verify_evidence(
    conn: sqlite3.Connection,
    *,
    snapshots_root: str | Path | None,
    strict_snapshots: bool = False,
    key: ChainKey | None = None,
) -> VerifyReport:
    """Check the chain of the events table on ``conn`` and, when ``snapshots_root`` is
    given, every event's snapshot file (present, and its SHA-256 is the recorded one).

    Reads everything in one read transaction (a consistent view while the gateway keeps
    appending). Keeps going after a break, so :attr:`VerifyReport.problems` lists every
    break (up to 100); the *first* is the first in chain order.

    Args:
        conn: a connection to an events database at schema version >= 2 (open it
            read-only; nothing is written). It must be in autocommit mode
            (``isolation_level=None``).
        snapshots_root: the snapshot folder (events hold paths relative to it); ``None``
            checks the chain only.
        strict_snapshots: every referenced snapshot must exist (no retention).
        key: the chain key. Without it keyed links are counted as unverified
            (:attr:`VerifyReport.needs_key`); with it the chain must be keyed with it and
            its head MAC must hold (see the module docstring).

    Raises:
        sqlite3.Error: the database cannot be read.
    """
    report = VerifyReport(snapshots_checked=snapshots_root is not None)
    report.key_given = None if key is None else key.key_id
    root = None if snapshots_root is None else Path(snapshots_root)
    conn.execute("BEGIN")
    try:
        keyed_schema = "link" in _columns(conn, "events")  # schema 4; before it: all plain
        extra = "key_id, keyed_from_seq, head_mac" if keyed_schema else "NULL, NULL, NULL"
        state = conn.execute(
            f"SELECT anchor_seq, anchor_hash, head_seq, head_hash, pruned, {extra} "
            "FROM events_chain"
        ).fetchone()
        stored_head_mac: str | None = None
        if state is not None:
            report.anchor_seq, report.anchor_hash = int(state[0]), str(state[1])
            report.head_seq, report.head_hash = int(state[2]), str(state[3])
            report.pruned = int(state[4])
            report.key_id = None if state[5] is None else str(state[5])
            report.keyed_from_seq = None if state[6] is None else int(state[6])
            stored_head_mac = None if state[7] is None else str(state[7])
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
            _check_link(report, row_no, values, prev_seq, prev_hash, key)
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
                    oldest_present_ms = (
                        t if oldest_present_ms is None else min(oldest_present_ms, t)
                    )
            seq = values["seq"]
            if isinstance(seq, int):
                prev_seq = seq
            prev_hash = str(values["hash"])
        report.rows = row_no
        _check_end(report, prev_seq, prev_hash)
        if key is not None:
            _check_head_mac(report, key, stored_head_mac)
    finally:
        conn.execute("COMMIT")
    return report


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


def _check_head_mac(report: VerifyReport, key: ChainKey, stored: str | None) -> None:
    """With a key given, the chain must be keyed with it and its head MAC must hold."""
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
    if report.key_id != key.key_id:
        report.head_authenticated = False
        report.add(
            ChainBreak(
                "wrong_key",
                0,
                None,
                None,
                f"the chain is keyed with key id {report.key_id}; the given key has id "
                f"{key.key_id} (wrong key?)",
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
    report: VerifyReport, row_no: int, values: Mapping[str, Any], key: ChainKey | None
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
    if keyed and key is None:
        report.unverified_links += 1
        return None
    if keyed and key is not None and values["key_id"] != key.key_id:
        report.add(
            ChainBreak(
                "wrong_key",
                row_no,
                seq,
                eid,
                f"the link is keyed with key id {values['key_id']}; the given key has id "
                f"{key.key_id} (wrong key?)",
            )
        )
        return None
    try:
        computed = row_link(values, key if keyed else None)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed.encode(), str(values["hash"]).encode())


def _check_link(
    report: VerifyReport,
    row_no: int,
    values: Mapping[str, Any],
    prev_seq: int | None,
    prev_hash: str,
    key: ChainKey | None,
) -> None:
    seq, eid = values["seq"], values["event_id"]
    if not isinstance(seq, int):
        report.add(
            ChainBreak(
                "row_inserted", row_no, None, eid, f"row has no valid chain position (seq {seq!r})"
            )
        )
        return
    content_ok = _link_content(report, row_no, values, key)
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
