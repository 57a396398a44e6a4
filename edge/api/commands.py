"""``safety-edge apps|quota|alerts ...``: manage applications, resource packages, alerts.

Registered on the main parser by :func:`add_subcommands` (called from :mod:`edge.cli`).
Every command works on the gateway's SQLite file (:func:`edge.api.store.db_path`) in the
data directory chosen by ``--data-dir DIR``, else ``data_dir`` of ``--config FILE``, else
``$SAFETY_EDGE_DATA_DIR``, else ``./var``; it may run while the gateway serves (SQLite
WAL locking). Output is JSON on stdout (UTF-8, names as written). A failure prints one
line ``error <code>: <cause>`` on stderr and exits with status 2.

``apps create`` opens the database as the gateway does, creating it when it is missing
(the first-run step). Every other command reads or names an existing application
(``apps list|show|disable|enable|rotate-secret|grant``, ``quota add|show``, ``alerts
list``), so it refuses a data directory without the database (``error 5002: no gateway
database at '...'``, naming the option to check) and creates nothing: an empty answer from
a mistyped ``--data-dir`` would read as "no applications", and a write would leave a stray
empty database behind its "no application named ..." error.

Each leaf parser sets ``func``: ``(argparse.Namespace) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.api.store import APIS, TIERS, AppError, AppRecord, Store, StoreError, db_path
from edge.errors import EdgeError
from edge.stream.events import LocalTimeError, local_if_naive

__all__ = ["DATA_DIR_ENV", "add_subcommands", "limit_arg", "missing_database", "resolve_data_dir"]

DATA_DIR_ENV = "SAFETY_EDGE_DATA_DIR"


def resolve_data_dir(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``data_dir`` from ``--config``, else ``$SAFETY_EDGE_DATA_DIR``,
    else ``var``."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if getattr(args, "config", None):
        from edge.config import load_config

        return Path(load_config(args.config).data_dir)
    return Path(os.environ.get(DATA_DIR_ENV) or "var")


def missing_database(args: argparse.Namespace, path: Path, what: str) -> str | None:
    """``None`` when ``path`` is a file; else the cause for a command that must not create
    the ``what`` database (e.g. ``"events"``): ``no events database at 'PATH' (HINT)``, the
    hint naming where the path came from (``--db``, ``--data-dir``, ``--config``'s
    ``data_dir``, ``$SAFETY_EDGE_DATA_DIR``, or the default ``./var``)."""
    if path.is_file():
        return None
    if getattr(args, "db", None):
        hint = "check --db"
    elif getattr(args, "data_dir", None):
        hint = "check --data-dir"
    elif getattr(args, "config", None):
        hint = f"check data_dir in {args.config}"
    elif os.environ.get(DATA_DIR_ENV):
        hint = f"check ${DATA_DIR_ENV}"
    else:
        hint = "the default data directory ./var; give --data-dir DIR or --config FILE"
    return f"no {what} database at {str(path)!r} ({hint})"


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _open(args: argparse.Namespace) -> Store:
    """The store; for a command that reads or names an existing application
    (``args.creates`` false: all but ``apps create``) only an existing file, so that a
    mistyped data directory is an error, not an empty answer and a stray file."""
    path = db_path(resolve_data_dir(args))
    if not args.creates:
        cause = missing_database(args, path, "gateway")
        if cause is not None:
            raise StoreError(f"{cause}; `safety-edge apps create` or the gateway creates it")
    return Store(path=path)


def _parse_grants(text: str) -> list[str]:
    apis = [a.strip().lower() for a in text.split(",") if a.strip()]
    if not apis:
        raise AppError(f"--grant needs one or more of {','.join(APIS)}")
    bad = [a for a in apis if a not in APIS]
    if bad:
        raise AppError(f"--grant: unknown API {bad[0]!r}; expected some of {','.join(APIS)}")
    return apis


def _app_json(app: AppRecord, *, secret: bool) -> dict[str, Any]:
    out = app.to_dict(secret=secret)
    try:
        from edge.api.contract import API_PATHS, PATH_PREFIX
    except ImportError:  # the HTTP layer is optional for these commands
        return out
    out["paths"] = {g.api: f"{PATH_PREFIX}{g.service_code}/{API_PATHS[g.api]}" for g in app.grants}
    return out


def _run(args: argparse.Namespace) -> int:
    """Dispatch to ``args.handler`` with a store; map errors to one stderr line."""
    try:
        with _open(args) as store:
            args.handler(store, args)
        return 0
    except EdgeError as exc:
        print(f"error {exc.code}: {exc}", file=sys.stderr)
        return 2


def _apps_create(store: Store, args: argparse.Namespace) -> None:
    app = store.create_app(
        name=args.name, description=args.description, grants=_parse_grants(args.grant)
    )
    _print(_app_json(app, secret=True))


def _apps_list(store: Store, args: argparse.Namespace) -> None:
    _print([_app_json(a, secret=False) for a in store.list_apps()])


def _find(store: Store, name_or_key: str) -> AppRecord:
    app = store.find_app(name_or_key)
    if app is None:
        raise AppError(f"no application named or keyed {name_or_key!r}")
    return app


def _apps_show(store: Store, args: argparse.Namespace) -> None:
    app = _find(store, args.app)
    out = _app_json(app, secret=args.show_secret)
    out["quota"] = {
        api: {
            "remaining": store.remaining(app_key=app.app_key, api=api),
            "packages": len(store.quota(app.app_key, api=api)),
        }
        for api in app.service_codes
    }
    _print(out)


def _apps_disable(store: Store, args: argparse.Namespace) -> None:
    _print(_app_json(store.disable_app(args.app), secret=False))


def _apps_enable(store: Store, args: argparse.Namespace) -> None:
    _print(_app_json(store.disable_app(args.app, enabled=True), secret=False))


def _apps_rotate(store: Store, args: argparse.Namespace) -> None:
    _print(_app_json(store.rotate_secret(args.app), secret=True))


def _apps_grant(store: Store, args: argparse.Namespace) -> None:
    app = _find(store, args.app)
    for api in _parse_grants(args.api):
        app = store.add_grant(app=app.app_key, api=api)
    _print(_app_json(app, secret=False))


def _parse_start(text: str | None) -> datetime | None:
    """``--start``: ISO 8601; without an offset the gateway's local time (the rule of every
    typed time, :func:`edge.stream.events.local_if_naive`)."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AppError(f"--start {text!r} is not an ISO date/time (e.g. 2026-01-31)") from None
    try:
        return local_if_naive(dt)
    except LocalTimeError as exc:  # the repeated or skipped hour of a clock change
        raise AppError(f"--start {exc}") from None
    except (ValueError, OverflowError):  # local 0001-01-01 or 9999-12-31 leave the range
        raise AppError(
            f"--start {text!r} is out of range in the gateway's time zone: a package's year of "
            "validity must lie within the years 1 to 9999"
        ) from None


def _quota_add(store: Store, args: argparse.Namespace) -> None:
    pkg = store.add_package(
        app=args.app, api=args.api, tier=args.tier, start=_parse_start(args.start)
    )
    out = pkg.to_dict()
    out["app"] = pkg.app_name
    out["api_remaining"] = store.remaining(app_key=pkg.app_key, api=pkg.api)
    _print(out)


def _quota_show(store: Store, args: argparse.Namespace) -> None:
    app = _find(store, args.app)
    packages = store.quota(app.app_key, api=args.api)
    apis = [args.api] if args.api else list(app.service_codes)
    _print(
        {
            "app": app.name,
            "app_key": app.app_key,
            "apis": {
                api: {
                    "remaining": sum(p.remaining for p in packages if p.api == api and p.active),
                    "packages": [p.to_dict() for p in packages if p.api == api],
                }
                for api in apis
            },
        }
    )


def _alerts_list(store: Store, args: argparse.Namespace) -> None:
    active = True if args.active else (False if args.resolved else None)
    _print([a.to_dict() for a in store.list_alerts(active=active, limit=args.limit)])


def limit_arg(text: str) -> int:
    """argparse type of ``alerts list --limit`` and ``events list --limit``: 1..100000
    (SQLite reads -1 as no limit, and 0 would answer nothing)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= v <= 100_000:
        raise argparse.ArgumentTypeError("must be in 1..100000")
    return v


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``apps``, ``quota`` and ``alerts`` on the main parser's sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"gateway data directory (default: ${DATA_DIR_ENV} or ./var)",
    )
    where.add_argument("--config", metavar="FILE", help="take data_dir from this gateway.yaml")

    def leaf(
        sub: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_: str,
        handler: Any,
        *,
        creates: bool = True,
    ) -> argparse.ArgumentParser:
        """``creates``: whether the command may create a missing database file."""
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        p.set_defaults(func=_run, handler=handler, creates=creates)
        return p

    apps = subparsers.add_parser("apps", help="applications: keys, secrets, granted APIs")
    asub = apps.add_subparsers(dest="apps_command", required=True, metavar="ACTION")
    p = leaf(
        asub, "create", "create an application; prints its keys and service codes", _apps_create
    )
    p.add_argument("name", metavar="NAME", help="4 to 15 characters, unique")
    p.add_argument("--description", default="", metavar="TEXT")
    p.add_argument(
        "--grant",
        required=True,
        metavar="APIS",
        help=f"comma-separated APIs to grant: {','.join(APIS)}",
    )
    leaf(asub, "list", "list applications (without secrets)", _apps_list, creates=False)
    p = leaf(
        asub, "show", "show one application and its remaining quota", _apps_show, creates=False
    )
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p.add_argument("--show-secret", action="store_true", help="include the AppSecret")
    p = leaf(
        asub, "disable", "disable an application (its calls get 4010)", _apps_disable, creates=False
    )
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p = leaf(asub, "enable", "re-enable a disabled application", _apps_enable, creates=False)
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p = leaf(
        asub,
        "rotate-secret",
        "issue a new AppSecret (the old one stops working)",
        _apps_rotate,
        creates=False,
    )
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p = leaf(asub, "grant", "grant more APIs to an application", _apps_grant, creates=False)
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p.add_argument(
        "--api", required=True, metavar="APIS", help=f"comma-separated: {','.join(APIS)}"
    )

    quota = subparsers.add_parser("quota", help="resource packages (calls per API per year)")
    qsub = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")
    p = leaf(
        qsub,
        "add",
        "add a resource package (valid one year from its start)",
        _quota_add,
        creates=False,
    )
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p.add_argument("--api", required=True, choices=APIS)
    p.add_argument("--tier", required=True, choices=TIERS, help="calls per year")
    p.add_argument(
        "--start",
        metavar="ISO",
        help="start date/time, e.g. 2026-12-01 or 2026-12-01T08:00+01:00 (without an offset: "
        "the gateway's local time); default now, refused while the clock looks unset (before "
        "this release or the database's newest record): then give --start",
    )
    p = leaf(
        qsub,
        "show",
        "packages and remaining calls of an application",
        _quota_show,
        creates=False,
    )
    p.add_argument("app", metavar="APP", help="name or AppKey")
    p.add_argument("--api", choices=APIS)

    alerts = subparsers.add_parser("alerts", help="alerts raised by the gateway")
    lsub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    p = leaf(lsub, "list", "list alerts, newest first", _alerts_list, creates=False)
    state = p.add_mutually_exclusive_group()
    state.add_argument("--active", action="store_true", help="open alerts only")
    state.add_argument("--resolved", action="store_true", help="resolved alerts only")
    p.add_argument("--limit", type=limit_arg, default=100, help="at most this many (1..100000)")
