"""``safety-edge serve`` (uvicorn) and ``safety-edge demo-app``.

- ``serve --config gateway.yaml [--host H] [--port P] [--data-dir D] [--models-dir M]``
  runs the HTTP API until SIGINT/SIGTERM (graceful: running requests finish, stats are
  flushed, the store is closed).
- ``demo-app [--config ...] [--data-dir D] [--name demo-app]`` creates, idempotently, a
  demo application granted all three APIs with a 100k package for each API that has no
  active calls left, and prints its keys, service codes and a signed ``curl`` example.

Both print one line ``error <code>: <cause>`` on stderr and exit 2 on failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.api.contract import API_PATHS, APIS, PATH_PREFIX
from edge.config import GatewayConfig, load_config, override_error
from edge.errors import EdgeError

__all__ = ["add_subcommands", "demo_app", "resolve_config", "serve"]

log = logging.getLogger("edge.api.server")

DATA_DIR_ENV = "SAFETY_EDGE_DATA_DIR"
DEMO_NAME = "demo-app"


def resolve_config(args: argparse.Namespace) -> GatewayConfig:
    """``--config`` (or defaults) with ``--host/--port/--data-dir/--models-dir`` applied.

    Without ``--data-dir`` and without a config file, ``$SAFETY_EDGE_DATA_DIR`` is used
    when set (the same rule as the ``apps``/``quota`` commands).
    """
    config = load_config(getattr(args, "config", None))
    merged = config.model_dump()
    if getattr(args, "data_dir", None):
        merged["data_dir"] = Path(args.data_dir)
    elif not getattr(args, "config", None) and os.environ.get(DATA_DIR_ENV):
        merged["data_dir"] = Path(os.environ[DATA_DIR_ENV])
    if getattr(args, "models_dir", None):
        merged["models_dir"] = Path(args.models_dir)
    if getattr(args, "host", None):
        merged["api"]["host"] = args.host
    if getattr(args, "port", None) is not None:
        merged["api"]["port"] = args.port
    try:  # re-validate so overrides obey the same rules as the file
        return GatewayConfig.model_validate(merged)
    except ValidationError as exc:
        raise override_error(exc) from None


def serve(config: GatewayConfig) -> None:
    """Run the gateway on ``config.api.host:port`` until interrupted, with uvicorn's h11
    protocol guarded by ``api.header_timeout_s`` and the connection caps
    (:mod:`edge.api.http_protocol`).

    Raises:
        EdgeError: uvicorn could not start (it exits 3 when it cannot bind); the message
            names the address, uvicorn's log line above gives the cause.
    """
    import uvicorn

    from edge.api.app import build_app
    from edge.api.http_protocol import guarded_protocol

    app = build_app(config)
    try:
        uvicorn.run(
            app,
            host=config.api.host,
            port=config.api.port,
            http=guarded_protocol(config.api),  # h11 + header timeout + connection caps
            access_log=False,
            log_level="info",
            timeout_graceful_shutdown=max(int(config.api.deadline_s) + 5, 10),
            server_header=False,
        )
    except SystemExit as exc:  # uvicorn exits 3 when it cannot bind (address in use, bad host)
        if exc.code in (0, None):
            raise
        raise EdgeError(
            f"the API could not start on {config.api.host}:{config.api.port} (port in use, "
            "not allowed, or host not resolvable? see the log above)"
        ) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
        serve(config)
    except EdgeError as exc:
        print(f"error {exc.code}: {exc}", file=sys.stderr)
        return 2
    return 0


def demo_app(config: GatewayConfig, *, name: str = DEMO_NAME) -> dict[str, Any]:
    """Create (or find) the demo app with every grant and quota; returns what to print.

    Idempotent: an existing app of that name is reused, missing grants are added, and a
    100k package is added only for an API whose active packages have no calls left.
    """
    from edge.api.store import Store, db_path

    with Store(path=db_path(config.data_dir)) as store:
        app = store.find_app(name)
        created = app is None
        if app is None:
            app = store.create_app(
                name=name, description="demo application (safety-edge demo-app)", grants=APIS
            )
        for api in APIS:
            if api not in app.service_codes:
                app = store.add_grant(app=app.app_key, api=api)
        added = []
        for api in APIS:
            if store.remaining(app_key=app.app_key, api=api) <= 0:
                # explicit start: the demo must come up on a gateway whose clock is not
                # set yet (a package dated by that clock is refused without one); it is
                # topped up again at the next demo start once the clock has moved on
                store.add_package(
                    app=app.app_key, api=api, tier="100k", start=datetime.now(timezone.utc)
                )
                added.append(api)
        remaining = {api: store.remaining(app_key=app.app_key, api=api) for api in APIS}
        if not app.enabled:
            app = store.disable_app(app.app_key, enabled=True)
    base = f"http://{config.api.host}:{config.api.port}"
    return {
        "created": created,
        "name": app.name,
        "app_key": app.app_key,
        "app_secret": app.app_secret,
        "service_codes": app.service_codes,
        "paths": {g.api: f"{PATH_PREFIX}{g.service_code}/{API_PATHS[g.api]}" for g in app.grants},
        "packages_added": added,
        "remaining": remaining,
        "base_url": base,
    }


def curl_example(info: dict[str, Any], *, image: str = "samples/vtest_frame.jpg") -> str:
    """A shell snippet that signs and sends one hard-hat request with curl."""
    path = info["paths"]["hardhat"]
    return "\n".join(
        [
            f"KEY={info['app_key']}",
            f"SECRET={info['app_secret']}",
            f"P={path}",
            f'printf \'{{"image": "%s"}}\' "$(base64 -w0 {image})" > /tmp/body.json',
            "TS=$(date +%s%3N)",
            "SIGN=$( { printf '%s' \"$KEY$SECRET$TS$P\"; cat /tmp/body.json; } "
            "| md5sum | cut -d' ' -f1)",
            f'curl -s -X POST "{info["base_url"]}$P" -H "Content-Type: application/json" \\',
            '  -H "AppKey: $KEY" -H "Timestamp: $TS" -H "Sign: $SIGN" \\',
            "  --data-binary @/tmp/body.json",
        ]
    )


def _cmd_demo_app(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
        info = demo_app(config, name=args.name)
    except EdgeError as exc:
        print(f"error {exc.code}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    verb = "created" if info["created"] else "found"
    print(f"demo application {info['name']!r} {verb} in {config.data_dir}")
    print(f"  AppKey:    {info['app_key']}")
    print(f"  AppSecret: {info['app_secret']}")
    for api, p in info["paths"].items():
        print(f"  {api:9s} {info['base_url']}{p}  ({info['remaining'][api]} calls left)")
    where = f"--config {args.config}" if args.config else f"--data-dir {config.data_dir}"
    print(f"\nstart the gateway:  safety-edge serve {where}")
    print("then call it (bash; sign = md5(AppKey+AppSecret+Timestamp+Path+Body)):\n")
    print(curl_example(info))
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve`` and ``demo-app`` on the main ``safety-edge`` parser."""
    p = subparsers.add_parser("serve", help="run the HTTP API (cloud contract) on uvicorn")
    p.add_argument("--config", metavar="FILE", help="gateway.yaml (default: built-in defaults)")
    p.add_argument("--host", help="bind address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: api.port, 8080)")
    p.add_argument("--data-dir", help="SQLite data directory (default: data_dir, ./var)")
    p.add_argument("--models-dir", help="models folder (default: models_dir, ./models)")
    p.set_defaults(func=_cmd_serve)

    d = subparsers.add_parser(
        "demo-app", help="create a demo app with all grants and quota; print keys and curl"
    )
    d.add_argument("--config", metavar="FILE")
    d.add_argument("--data-dir")
    d.add_argument("--host", help="host shown in the printed URLs")
    d.add_argument("--port", type=int, help="port shown in the printed URLs")
    d.add_argument("--name", default=DEMO_NAME, help=f"application name (default {DEMO_NAME})")
    d.add_argument("--json", action="store_true", help="print JSON instead of text")
    d.set_defaults(func=_cmd_demo_app)
