"""``safety-edge events ...``: read, prune and verify the local events table.

Registered on the main parser by :func:`add_subcommands` (called from :mod:`edge.cli`).
The database is :func:`edge.stream.events.events_db_path` in the data directory chosen
by ``--data-dir DIR``, else ``data_dir`` of ``--config FILE``, else
``$SAFETY_EDGE_DATA_DIR``, else ``./var`` (as for the ``apps`` commands). It may run while
the gateway runs (SQLite WAL). Output is JSON on stdout. A failure prints one line
``error <code>: <cause>`` on stderr and exits with status 2.

``events prune --older-than T`` deletes the events older than ``T`` (as the gateway's
``storage.events_retention_days``); ``--max-mb N`` then deletes the oldest events while
the database holds more than ``N`` MiB of live data, down to 90 % of it (as
``storage.events_max_mb``; :mod:`edge.stream.retention`); at least one is needed. Both
delete a prefix of the chain with the acknowledgements that go with it, and print
``{"deleted": N}`` (with ``--max-mb`` also ``by_age``, ``by_size``, ``db_bytes`` and
``live_bytes``, the file's size and the part in use; the file does not shrink, its
free pages are reused).

``events list`` refuses an ``--until`` that is not after ``--since``; ``events prune``
refuses an ``--older-than`` in the future (it would delete every event). Every ``events``
command refuses a missing database file (``error 5002: no events database at '...'``,
naming the option to check) and creates nothing: a mistyped ``--data-dir`` is an error,
not an empty answer and a stray file. Only the gateway (``safety-edge run``) creates it,
and only the gateway migrates it: a database at an older schema (written by an older
version) is refused (``error 5002: events database ... is at schema version N, older than
this program (M): start the upgraded gateway ...``) and left as it is, so a newly installed
command never migrates the file under an older gateway that still runs.

``events list`` adds ``ack`` to each event of an acknowledged incident (who and when,
from the ``event_acks`` table, :mod:`edge.stream.acks`; ``null`` when not acknowledged).

``events verify`` checks the hash chain and the snapshot files
(:mod:`edge.stream.evidence`), opening the database read-only; it exits 0 when intact,
1 when something is broken (the first broken link is named on stderr), 2 on errors.
Keyed links need the chain key: ``--key-file FILE``, else ``$SAFETY_EDGE_EVENTS_KEY``, else
``storage.events_key_file`` of ``--config``. A keyed chain checked without it prints the
report and exits 2 ("cannot verify keyed links without the key"), unless a break was
found in what could be checked (exit 1). A chain whose key was rotated needs every key it
used: repeat ``--key-file`` (one per key, any order); a key left out is named by its id
(exit 2, as above). The key is never printed; its id is.

``events rotate-key --key-file OLD --new-key-file NEW`` moves a keyed chain to a new key
(:func:`edge.stream.evidence.rotate_chain_key`): offline, with the gateway stopped (it
refuses while another process has the database open), it verifies the chain with OLD,
then records the rotation and keys every later link with NEW, in one transaction. The
database is ``--db FILE``, else found as above. It prints the rotation record as JSON and
exits 0; a refusal (wrong OLD, NEW not new, an unkeyed or broken chain, the database in
use) prints ``error <code>: <cause>``, changes nothing and exits 2. Both keys come from
their files only (never ``$SAFETY_EDGE_EVENTS_KEY``). Then point
``storage.events_key_file`` at NEW and start the gateway; keep OLD for ``events verify``.

Examples::

    safety-edge events list --since 1h --camera gate
    safety-edge events list --since 2024-06-01T08:00 --until 2024-06-01T12:00 --type start
    safety-edge events prune --older-than 30d
    safety-edge events prune --max-mb 512
    safety-edge events verify --data-dir /var/lib/safety-edge
    safety-edge events verify --data-dir /var/lib/safety-edge --key-file /etc/safety-edge/events.key
    safety-edge events rotate-key --db /var/lib/safety-edge/events.sqlite3 \
        --key-file /etc/safety-edge/events.key --new-key-file /etc/safety-edge/events-2.key
    safety-edge events verify --data-dir /var/lib/safety-edge \
        --key-file /etc/safety-edge/events.key --key-file /etc/safety-edge/events-2.key
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, cast

from edge.errors import ConfigError, EdgeError
from edge.stream.acks import AckStore
from edge.stream.chain_key import EVENTS_KEY_ENV, ChainKey, load_chain_key
from edge.stream.events import (
    EventStore,
    EventStoreError,
    EventType,
    ZoneEvent,
    event_to_dict,
    events_db_path,
    old_schema_message,
    parse_time,
)
from edge.stream.evidence import RotationCheck, rotate_chain_key, verify_evidence
from edge.stream.retention import prune_events

__all__ = ["add_subcommands"]

_MIB = 1024 * 1024


def _data_dir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default: from --config, env, ./var)")
    p.add_argument("--config", help="gateway.yaml to take data_dir from")


def _time_arg(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _require_db(args: argparse.Namespace, path: Path) -> None:
    """Refuse a missing events database before anything could create it (file or folder)."""
    from edge.api.commands import missing_database

    cause = missing_database(args, path, "events")
    if cause is not None:
        raise EventStoreError(cause)


def _open(args: argparse.Namespace) -> EventStore:
    """The existing events database (see :func:`_require_db`), at the current schema: an
    older one is refused, not migrated (only the gateway migrates)."""
    from edge.api.commands import resolve_data_dir

    path = events_db_path(resolve_data_dir(args))
    _require_db(args, path)
    return EventStore(path=path, migrate=False)


def _list(args: argparse.Namespace) -> None:
    since = _time_arg(args.since, "--since")
    until = _time_arg(args.until, "--until")
    if since is not None and until is not None and until <= since:
        raise ConfigError(
            f"--until {args.until} is not after --since {args.since}: no event can match"
        )
    with _open(args) as store:
        events = store.list_events(
            since=since,
            until=until,
            camera=args.camera,
            task=args.task,
            zone=args.zone,
            type=cast(EventType | None, args.type),
            limit=args.limit,
        )
        with AckStore(path=store.path) as acks:
            acked = acks.get_many(_incident(e) for e in events)
    out: list[dict[str, Any]] = []
    for e in events:
        d = event_to_dict(e)
        if e.type in ("start", "update", "end"):  # zone incidents (not line crossings)
            ack = acked.get(_incident(e))
            d["ack"] = None if ack is None else ack.summary()
        out.append(d)
    if args.jsonl:
        for d in out:
            sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")


def _incident(e: ZoneEvent) -> str:
    return e.event_id if e.type == "start" or e.start_event_id is None else e.start_event_id


def _prune(args: argparse.Namespace) -> None:
    if args.older_than is None and args.max_mb is None:
        raise ConfigError("give --older-than, --max-mb or both. Nothing was deleted")
    before = _time_arg(args.older_than, "--older-than")
    if before is not None and before > time.time_ns() // 1_000_000:
        raise ConfigError(
            f"--older-than {args.older_than} is in the future: it would delete every event. "
            "Nothing was deleted"
        )
    max_bytes = None if args.max_mb is None else int(args.max_mb * _MIB)
    with _open(args) as store, AckStore(path=store.path) as acks:
        report = prune_events(store, acks, before_ms=before, max_bytes=max_bytes)
    out: dict[str, int] = {"deleted": report.deleted}
    if max_bytes is not None:
        out.update(
            by_age=report.by_age,
            by_size=report.by_size,
            db_bytes=report.size.file_bytes,
            live_bytes=report.size.live_bytes,
        )
    sys.stdout.write(json.dumps(out) + "\n")


def _max_mb(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1.0 <= v < float("inf"):
        raise argparse.ArgumentTypeError("must be at least 1 (MiB)")
    return v


def _snapshot_root(args: argparse.Namespace, data_dir: Path) -> Path | None:
    """``--snapshots``, else the config's snapshot folder, else ``DATA_DIR/snapshots``;
    ``None`` with ``--no-snapshots``. A missing folder is an error when events refer to
    snapshots (checked in :func:`_verify`)."""
    if args.no_snapshots:
        return None
    if args.snapshots:
        root = Path(args.snapshots)
    elif args.config and not args.data_dir:
        from edge.config import load_config

        root = Path(load_config(args.config).snapshot_dir())
    else:
        root = data_dir / "snapshots"
    return root


def _verify_keys(args: argparse.Namespace) -> list[ChainKey]:
    """Every ``--key-file``, else ``$SAFETY_EDGE_EVENTS_KEY``, else
    ``storage.events_key_file`` of ``--config``; empty: no key."""
    if args.key_file:
        keys = [load_chain_key(f, key_file_first=True) for f in args.key_file]
        return [k for k in keys if k is not None]
    key_file = None
    if args.config:
        from edge.config import load_config

        key_file = load_config(args.config).storage.events_key_file
    key = load_chain_key(key_file)
    return [] if key is None else [key]


def _verify(args: argparse.Namespace) -> int:
    from edge.api.commands import resolve_data_dir

    data_dir = resolve_data_dir(args)
    path = events_db_path(data_dir)
    _require_db(args, path)
    root = _snapshot_root(args, data_dir)
    keys = _verify_keys(args)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise EventStoreError(f"cannot open events database {path}: {exc}") from exc
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version < 2:  # before the hash chain (2, 3 are read as they are)
            raise EventStoreError(old_schema_message(path, version))
        # a wrong folder would make every snapshot look expired by retention
        if (
            root is not None
            and not root.is_dir()
            and conn.execute("SELECT 1 FROM events WHERE snapshot IS NOT NULL LIMIT 1").fetchone()
        ):
            raise ConfigError(
                f"snapshot folder {root} does not exist; give --snapshots DIR or --no-snapshots"
            )
        report = verify_evidence(
            conn, snapshots_root=root, strict_snapshots=args.strict_snapshots, keys=keys
        )
    except sqlite3.Error as exc:
        raise EventStoreError(f"cannot read events database {path}: {exc}") from exc
    finally:
        conn.close()
    sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    first = report.first
    if report.keys_given:
        missing = ", ".join(report.keys_missing)
        unchecked = (
            f"cannot verify everything without key id {missing}: {report.unverified_links} "
            "keyed links"
            + (" and the head MAC" if report.head_authenticated is None else "")
            + (" and rotation MACs" if _rotation_unchecked(report.rotations) else "")
            + " are unchecked; give its key file too (--key-file may be repeated)"
        )
    else:
        ids = f"key id {report.key_id}"
        if len(report.keys_missing) > 1:
            ids = f"key ids {', '.join(report.keys_missing)} (rotated; the last is current)"
        unchecked = (
            f"cannot verify keyed links without the key: {report.unverified_links} keyed links "
            f"(keyed from seq {report.keyed_from_seq}, {ids}) and the head MAC are unchecked; "
            f"give --key-file FILE or set {EVENTS_KEY_ENV}"
        )
    if first is None:
        if report.needs_key:
            raise ConfigError(unchecked)
        return 0
    if first.row != 0:
        where = f"row {first.row} (seq {first.seq}, event {first.event_id})"
    elif first.kind == "rotation_invalid":
        where = "a key rotation record"
    else:
        where = "after the last row"
    print(
        f"broken: {first.kind} at {where}: {first.detail}"
        + (f" ({report.problem_count} problems in all)" if report.problem_count > 1 else ""),
        file=sys.stderr,
    )
    if report.needs_key:
        print(f"also: {unchecked}", file=sys.stderr)
    return 1


def _rotation_unchecked(rotations: list[RotationCheck]) -> bool:
    return any(r.old_mac_ok is None or r.new_mac_ok is None for r in rotations)


_SHM_DMS_BYTE = 128
"""The byte of a WAL database's ``-shm`` file every open SQLite connection holds a shared
POSIX lock on (SQLite's unix VFS: ``UNIX_SHM_DMS``, 120 + 8 lock slots), from the first
read until it closes."""


def _open_elsewhere(path: Path) -> bool:
    """Whether another process has the WAL database ``path`` open (the gateway, the API,
    an ``events`` command): probe the ``-shm`` lock byte every connection holds shared.

    Connections of this process are not seen (POSIX record locks are per process). Where
    ``fcntl`` does not exist (Windows) this returns ``False``; the rotation's own write
    transaction still keeps it from interleaving with an append.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        fd = os.open(f"{path}-shm", os.O_RDWR)
    except FileNotFoundError:
        return False  # no connection has it open in WAL mode
    except OSError as exc:
        raise EventStoreError(f"cannot check whether {path} is in use: {exc}") from exc
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE, os.SEEK_SET)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise EventStoreError(f"cannot check whether {path} is in use: {exc}") from exc
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE, os.SEEK_SET)
        return False
    finally:
        os.close(fd)


def _rotate_key(args: argparse.Namespace) -> None:
    if args.db:
        path = Path(args.db)
    else:
        from edge.api.commands import resolve_data_dir

        path = events_db_path(resolve_data_dir(args))
    _require_db(args, path)
    old = load_chain_key(args.key_file, env=False)
    new = load_chain_key(args.new_key_file, env=False)
    assert old is not None and new is not None  # a file was given for each
    if _open_elsewhere(path):
        raise EventStoreError(
            f"events database {path} is open in another process (the gateway, its API, or "
            "an `events` command); key rotation is offline: stop the gateway and try again "
            f"(`fuser {path}-shm` names the process). Nothing was changed"
        )
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
    except sqlite3.Error as exc:
        raise EventStoreError(f"cannot open events database {path}: {exc}") from exc
    try:
        rotation, report = rotate_chain_key(conn, old=old, new=new)
    except sqlite3.Error as exc:
        raise EventStoreError(
            f"cannot rotate the key of events database {path}: {exc}. Nothing was changed"
        ) from exc
    finally:
        conn.close()
    out = {
        "rotated": True,
        "db": str(path),
        "rotation": {
            "n": rotation.n,
            "from_seq": rotation.from_seq,
            "head": {"seq": rotation.head_seq, "hash": rotation.head_hash},
            "old_key_id": rotation.old_key_id,
            "new_key_id": rotation.new_key_id,
            "time_ms": rotation.time_ms,
        },
        "verified": {
            "rows": report.rows,
            "keyed_links": report.keyed_links,
            "unverified_links": report.unverified_links,
            "keys_missing": report.keys_missing,
        },
    }
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    print(
        f"rotated: links from seq {rotation.from_seq} on are keyed with key id "
        f"{rotation.new_key_id}. Set storage.events_key_file (or {EVENTS_KEY_ENV}) to "
        f"{args.new_key_file} before starting the gateway (it refuses the old key now), and "
        f"keep {args.key_file}: `events verify` needs every key (repeat --key-file)",
        file=sys.stderr,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        rc = args.handler(args)
        return 0 if rc is None else int(rc)
    except EdgeError as exc:
        print(f"error {exc.code}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error {ConfigError.code}: {exc}", file=sys.stderr)
        return 2


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``events list``, ``events prune``, ``events verify`` and
    ``events rotate-key``; each leaf sets ``func`` -> exit status."""
    from edge.api.commands import limit_arg

    events = subparsers.add_parser("events", help="zone events recorded by the pipeline")
    sub = events.add_subparsers(dest="events_command", required=True)

    p = sub.add_parser("list", help="events, newest first, as JSON")
    p.add_argument("--since", help="e.g. 1h, 30m, 2d, an ISO date-time, or Unix time")
    p.add_argument("--until", help="same forms as --since (exclusive)")
    p.add_argument("--camera")
    p.add_argument("--task")
    p.add_argument("--zone")
    p.add_argument("--type", choices=("start", "update", "end", "crossing"))
    p.add_argument("--limit", type=limit_arg, default=100, help="at most this many (default 100)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_list)

    p = sub.add_parser(
        "prune", help="delete events older than a time, or the oldest over a size bound"
    )
    p.add_argument("--older-than", help="e.g. 30d, or an ISO date-time")
    p.add_argument(
        "--max-mb",
        type=_max_mb,
        metavar="MIB",
        help="then delete the oldest events while the database holds more than this "
        "(MiB of live data), down to 90 %% of it",
    )
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_prune)

    p = sub.add_parser(
        "verify",
        help="check the events hash chain and the snapshot files (exit 0 intact, 1 broken)",
    )
    p.add_argument(
        "--snapshots",
        metavar="DIR",
        help="snapshot folder (default: from --config, else DATA_DIR/snapshots)",
    )
    p.add_argument("--no-snapshots", action="store_true", help="check the chain only")
    p.add_argument(
        "--key-file",
        metavar="FILE",
        action="append",
        help=f"the chain key, for keyed links (default: ${EVENTS_KEY_ENV}, else "
        "storage.events_key_file of --config); repeat it for each key of a rotated chain",
    )
    p.add_argument(
        "--strict-snapshots",
        action="store_true",
        help="every referenced snapshot must exist (no allowance for retention)",
    )
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_verify)

    p = sub.add_parser(
        "rotate-key",
        help="move a keyed events chain to a new key (offline: stop the gateway first)",
    )
    p.add_argument("--db", metavar="FILE", help="the events database (default: from the data dir)")
    p.add_argument(
        "--key-file", metavar="OLD", required=True, help="the chain's current key (a file)"
    )
    p.add_argument(
        "--new-key-file", metavar="NEW", required=True, help="the key to move to (a file)"
    )
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_rotate_key)
