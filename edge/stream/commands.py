"""``safety-edge events ...``: read (and prune) the local events table.

Registered on the main parser by :func:`add_subcommands` (called from :mod:`edge.cli`).
The database is :func:`edge.stream.events.events_db_path` in the data directory chosen
by ``--data-dir DIR``, else ``data_dir`` of ``--config FILE``, else
``$SAFETY_EDGE_DATA_DIR``, else ``./var`` (as for the ``apps`` commands). It may run while
the gateway runs (SQLite WAL). Output is JSON on stdout. A failure prints one line
``error <code>: <cause>`` on stderr and exits with status 2.

Examples::

    safety-edge events list --since 1h --camera gate
    safety-edge events list --since 2024-06-01T08:00 --until 2024-06-01T12:00 --type start
    safety-edge events prune --older-than 30d
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, cast

from edge.errors import ConfigError, EdgeError
from edge.stream.events import EventStore, EventType, event_to_dict, events_db_path, parse_time

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
    out: list[dict[str, Any]] = [event_to_dict(e) for e in events]
    if args.jsonl:
        for d in out:
            sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")


def _prune(args: argparse.Namespace) -> None:
    before = _time_arg(args.older_than, "--older-than")
    assert before is not None
    with _open(args) as store:
        n = store.prune(before_ms=before)
    sys.stdout.write(json.dumps({"deleted": n}) + "\n")


def _run(args: argparse.Namespace) -> int:
    try:
        args.handler(args)
        return 0
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
    """Register ``events list`` and ``events prune``; each leaf sets ``func`` -> exit status."""
    events = subparsers.add_parser("events", help="zone events recorded by the pipeline")
    sub = events.add_subparsers(dest="events_command", required=True)

    p = sub.add_parser("list", help="events, newest first, as JSON")
    p.add_argument("--since", help="e.g. 1h, 30m, 2d, an ISO date-time, or Unix time")
    p.add_argument("--until", help="same forms as --since (exclusive)")
    p.add_argument("--camera")
    p.add_argument("--task")
    p.add_argument("--zone")
    p.add_argument("--type", choices=("start", "update", "end"))
    p.add_argument("--limit", type=_limit, default=100, help="at most this many (default 100)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_list)

    p = sub.add_parser("prune", help="delete events older than a time")
    p.add_argument("--older-than", required=True, help="e.g. 30d, or an ISO date-time")
    _data_dir_args(p)
    p.set_defaults(func=_run, handler=_prune)
