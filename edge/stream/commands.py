"""``safety-edge events ...``: read, prune and verify the local events table.

Registered on the main parser by :func:`add_subcommands` (called from :mod:`edge.cli`).
The database is :func:`edge.stream.events.events_db_path` in the data directory chosen
by ``--data-dir DIR``, else ``data_dir`` of ``--config FILE``, else
``$SAFETY_EDGE_DATA_DIR``, else ``./var`` (as for the ``apps`` commands). It may run while
the gateway runs (SQLite WAL). Output is JSON on stdout. A failure prints one line
``error <code>: <cause>`` on stderr and exits with status 2.

``events list`` adds ``ack`` to each event of an acknowledged incident (who and when,
from the ``event_acks`` table, :mod:`edge.stream.acks`; ``null`` when not acknowledged).

``events verify`` checks the hash chain and the snapshot files
(:mod:`edge.stream.evidence`), opening the database read-only; it exits 0 when intact,
1 when something is broken (the first broken link is named on stderr), 2 on errors.
Keyed links need the chain key: ``--key-file FILE``, else ``$SAFETY_EDGE_EVENTS_KEY``, else
``storage.events_key_file`` of ``--config``. A keyed chain checked without it prints the
report and exits 2 ("cannot verify keyed links without the key"), unless a break was
found in what could be checked (exit 1). The key is never printed; its id is.

Examples::

    safety-edge events list --since 1h --camera gate
    safety-edge events list --since 2024-06-01T08:00 --until 2024-06-01T12:00 --type start
    safety-edge events prune --older-than 30d
    safety-edge events verify --data-dir /var/lib/safety-edge
    safety-edge events verify --data-dir /var/lib/safety-edge --key-file /etc/safety-edge/events.key
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
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
    parse_time,
)
from edge.stream.evidence import verify_evidence

__all__ = ["add_subcommands"]


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


def _open(args: argparse.Namespace) -> EventStore:
    from edge.api.commands import resolve_data_dir

    return EventStore(path=events_db_path(resolve_data_dir(args)))


def _list(args: argparse.Namespace) -> None:
    since = _time_arg(args.since, "--since")
    until = _time_arg(args.until, "--until")
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
    before = _time_arg(args.older_than, "--older-than")
    assert before is not None
    with _open(args) as store:
        n = store.prune(before_ms=before)
        with AckStore(path=store.path) as acks:
            acks.prune(before_ms=before)
    sys.stdout.write(json.dumps({"deleted": n}) + "\n")


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


def _verify_key(args: argparse.Namespace) -> ChainKey | None:
    """``--key-file``, else ``$SAFETY_EDGE_EVENTS_KEY``, else ``storage.events_key_file``
    of ``--config``; ``None``: no key."""
    if args.key_file:
        return load_chain_key(args.key_file, key_file_first=True)
    key_file = None
    if args.config:
        from edge.config import load_config

        key_file = load_config(args.config).storage.events_key_file
    return load_chain_key(key_file)


def _verify(args: argparse.Namespace) -> int:
    from edge.api.commands import resolve_data_dir

    data_dir = resolve_data_dir(args)
    path = events_db_path(data_dir)
    if not path.is_file():
        raise EventStoreError(f"no events database at {path}")
    root = _snapshot_root(args, data_dir)
    key = _verify_key(args)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise EventStoreError(f"cannot open events database {path}: {exc}") from exc
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version < 2:
            raise EventStoreError(
                f"events database {path} is at schema version {version}, before the hash "
                "chain; open it once with this version (e.g. `safety-edge events list`) to "
                "migrate and chain it"
            )
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
            conn, snapshots_root=root, strict_snapshots=args.strict_snapshots, key=key
        )
    except sqlite3.Error as exc:
        raise EventStoreError(f"cannot read events database {path}: {exc}") from exc
    finally:
        conn.close()
    sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    first = report.first
    unchecked = (
        f"cannot verify keyed links without the key: {report.unverified_links} keyed links "
        f"(keyed from seq {report.keyed_from_seq}, key id {report.key_id}) and the head MAC "
        f"are unchecked; give --key-file FILE or set {EVENTS_KEY_ENV}"
    )
    if first is None:
        if report.needs_key:
            raise ConfigError(unchecked)
        return 0
    where = (
        "after the last row"
        if first.row == 0
        else f"row {first.row} (seq {first.seq}, event {first.event_id})"
    )
    print(
        f"broken: {first.kind} at {where}: {first.detail}"
        + (f" ({report.problem_count} problems in all)" if report.problem_count > 1 else ""),
        file=sys.stderr,
    )
    if report.needs_key:
        print(f"also: {unchecked}", file=sys.stderr)
    return 1


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


def _limit(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= v <= 100_000:
        raise argparse.ArgumentTypeError("must be in 1..100000")
    return v


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``events list``, ``events prune`` and ``events verify``; each leaf sets
    ``func`` -> exit status."""
    events = subparsers.add_parser("events", help="zone events recorded by the pipeline")
    sub = events.add_subparsers(dest="events_command", required=True)

    p = sub.add_parser("list", help="events, newest first, as JSON")
    p.add_argument("--since", help="e.g. 1h, 30m, 2d, an ISO date-time, or Unix time")
    p.add_argument("--until", help="same forms as --since (exclusive)")
    p.add_argument("--camera")
    p.add_argument("--task")
    p.add_argument("--zone")
    p.add_argument("--type", choices=("start", "update", "end", "crossing"))
    p.add_argument("--limit", type=_limit, default=100, help="at most this many (default 100)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_list)

    p = sub.add_parser("prune", help="delete events older than a time")
    p.add_argument("--older-than", required=True, help="e.g. 30d, or an ISO date-time")
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
        help=f"the chain key, for keyed links (default: ${EVENTS_KEY_ENV}, else "
        "storage.events_key_file of --config)",
    )
    p.add_argument(
        "--strict-snapshots",
        action="store_true",
        help="every referenced snapshot must exist (no allowance for retention)",
    )
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_verify)
