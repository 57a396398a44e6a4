"""``safety-edge run`` and ``safety-edge config check|example``.

- ``run --config gateway.yaml [--data-dir D] [--host H] [--port P] [--local-broker]
  [--demo]``: the whole gateway (:class:`~edge.service.gateway.GatewayService`) until
  SIGTERM/SIGINT. A bad config stops start-up with the report of every problem (exit 2).
  ``--local-broker``: when the config has no ``mqtt`` section, start a local mosquitto
  (:mod:`edge.service.local_broker`) and publish to it; if mosquitto is not installed,
  say how to install it and run anyway (events wait in the outbox for
  ``localhost:1883``). ``--demo``: create the demo application (keys printed) and print
  how to watch the events. A second Ctrl-C exits at once.
- ``config check FILE [--offline] [--json]``: every problem with YAML path and line;
  exit 0 without errors (warnings printed), 1 with errors, 2 if unreadable.
- ``config example``: a commented example that passes ``config check``.
- ``config reference``: every key with type, default and description, generated from the
  pydantic models (markdown).

Exit status of ``run``: 0 after a clean stop, 1 when a part died (systemd restarts it),
2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from edge.config import GatewayConfig, override_error
from edge.errors import EdgeError

__all__ = ["add_subcommands"]

log = logging.getLogger("edge.service")


def _err(exc: EdgeError) -> int:
    print(f"error {exc.code}: {exc}", file=sys.stderr)
    return 2


# -- config ----------------------------------------------------------------------------------


def _cmd_config_check(args: argparse.Namespace) -> int:
    from edge.service.config_check import check_file, format_report

    try:
        config, problems = check_file(args.file, environment=not args.offline)
    except EdgeError as exc:
        return _err(exc)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": config is not None,
                    "problems": [
                        {
                            "severity": p.severity,
                            "path": p.path,
                            "line": p.line,
                            "message": p.message,
                        }
                        for p in problems
                    ],
                },
                indent=2,
            )
        )
    elif config is None:
        print(format_report(args.file, problems))
    else:
        cams = len(config.cameras)
        print(f"{args.file}: OK ({cams} camera{'s' * (cams != 1)})")
        for p in problems:
            print("  " + p.format(args.file))
    return 0 if config is not None else 1


def _cmd_config_reference(args: argparse.Namespace) -> int:
    from edge.service.reference import reference_markdown

    sys.stdout.write(reference_markdown())
    return 0


def _cmd_config_example(args: argparse.Namespace) -> int:
    from edge.service.example import EXAMPLE_YAML

    sys.stdout.write(EXAMPLE_YAML)
    return 0


# -- run -------------------------------------------------------------------------------------


def _with_overrides(config: GatewayConfig, args: argparse.Namespace) -> GatewayConfig:
    if not (args.data_dir or args.host or args.port is not None):
        return config
    merged = config.model_dump()  # SecretStr values stay SecretStr
    if args.data_dir:
        merged["data_dir"] = Path(args.data_dir)
    if args.host:
        merged["api"]["host"] = args.host
    if args.port is not None:
        merged["api"]["port"] = args.port
    try:
        return GatewayConfig.model_validate(merged)
    except ValidationError as exc:
        raise override_error(exc) from None


def _start_local_broker(config: GatewayConfig) -> tuple[GatewayConfig, Any]:
    """A local mosquitto when the config has no broker; returns the config pointing at it."""
    from edge.mqtt.config import MqttConfig
    from edge.service.local_broker import INSTALL_HINT, LocalBroker

    if config.mqtt is not None:
        return config, None
    broker = LocalBroker(data_dir=config.data_dir)
    try:
        started = broker.start()
        problem = "" if started else INSTALL_HINT
    except OSError as exc:
        started, problem = False, f"local broker: {exc}"
    if started:
        mqtt = MqttConfig(host=broker.host, port=broker.port)
        return config.model_copy(update={"mqtt": mqtt}), broker
    print(
        f"{problem}.\nRunning anyway: events wait in the outbox "
        f"({config.data_dir / 'outbox.sqlite3'}) until a broker listens on 127.0.0.1:1883.",
        file=sys.stderr,
    )
    return config.model_copy(update={"mqtt": MqttConfig(host="127.0.0.1", port=1883)}), None


def _banner(
    service: Any, config: GatewayConfig, demo: dict[str, Any] | None, notes: list[str]
) -> str:
    lines = [f"safety-edge gateway {config.gateway_id!r} running (Ctrl-C or SIGTERM stops it)"]
    for name, cam in service.cameras.items():
        tasks = ", ".join(
            f"{t}{'' if up else ' (off: ' + cam.reasons.get(t, '?') + ')'}"
            for t, up in cam.tasks_up.items()
        )
        state = "running" if cam.pipeline is not None else f"not running ({cam.off})"
        lines.append(f"  camera {name}: {state}; tasks: {tasks or '-'}")
    if service.api_url:
        lines.append(f"  API:      {service.api_url}   (health: {service.api_url}/healthz)")
    if demo is not None:
        lines.append(f"  demo app: AppKey {demo['app_key']}  AppSecret {demo['app_secret']}")
        for api, path in demo["paths"].items():
            lines.append(f"            {api:9s} POST {service.api_url}{path}")
    mqtt = service.mqtt
    if mqtt is not None:
        topic = f"{mqtt.prefix}/{config.gateway_id}/#"
        sub = ["mosquitto_sub", "-h", mqtt.host, "-p", str(mqtt.port), "-t", topic, "-v"]
        lines.append(f"  MQTT:     {mqtt.host}:{mqtt.port}; watch the events with:")
        lines.append("    " + " ".join(shlex.quote(a) for a in sub))
    else:
        lines.append("  MQTT:     off (no mqtt section); events: safety-edge events list")
    lines.append(
        f"  events:   safety-edge events list --data-dir {shlex.quote(str(config.data_dir))}"
        " --since 10m"
    )
    lines += [f"  note:     {n}" for n in notes]
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.service.config_check import ConfigReportError, load_checked
    from edge.service.gateway import GatewayService
    from edge.service.logs import setup_logging

    try:
        config, warnings = load_checked(args.config)
        config = _with_overrides(config, args)
    except ConfigReportError as exc:
        print(f"{exc}\nnot starting: fix the configuration (safety-edge config check)",
              file=sys.stderr)  # fmt: skip
        return 2
    except EdgeError as exc:
        return _err(exc)
    svc = config.service
    setup_logging(fmt=svc.log_format, level="debug" if args.verbose else svc.log_level)
    for w in warnings:
        log.warning("config: %s", w.format(args.config))

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            print("second interrupt: exiting now", file=sys.stderr)
            os._exit(130)
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    broker = None
    try:
        if args.local_broker:
            config, broker = _start_local_broker(config)
        demo = None
        if args.demo and config.service.api:
            from edge.api.server import demo_app

            demo = demo_app(config)
        service = GatewayService(config=config)
        try:
            service.start()
        except EdgeError as exc:
            return _err(exc)
        from edge.api.console.service_backend import attach_console

        attach_console(service, config_path=Path(args.config))  # live frames, zone editor
        notes = [f"{w.path}: {w.message}" for w in warnings]
        if any("does not exist" in n and "opencv-doc" in n for n in notes):
            notes.append("the sample video comes with Debian's opencv-doc: make deps")
        print(_banner(service, config, demo, notes), flush=True)
        code = service.run(stop)
        report = service.stop()
        if not (report.get("pipelines_stopped", True) and report.get("api_stopped", True)):
            log.warning("some parts did not stop in time: %s", report)
        return code
    except EdgeError as exc:
        return _err(exc)
    finally:
        if broker is not None:
            broker.stop()
        for s, h in old.items():
            signal.signal(s, h)


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run`` and ``config check|example``; each leaf sets ``func`` -> status."""
    r = subparsers.add_parser(
        "run", help="the whole gateway: cameras, events, MQTT and the local API"
    )
    r.add_argument("--config", required=True, metavar="FILE", help="gateway.yaml")
    r.add_argument("--data-dir", help="override data_dir")
    r.add_argument("--host", help="override api.host")
    r.add_argument("--port", type=int, help="override api.port (0: any free port)")
    r.add_argument(
        "--local-broker",
        action="store_true",
        help="no mqtt section: start a local mosquitto and publish to it",
    )
    r.add_argument("--demo", action="store_true", help="create the demo app and print its keys")
    r.set_defaults(func=_cmd_run)

    c = subparsers.add_parser("config", help="check a gateway.yaml or print an example")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    ch = csub.add_parser("check", help="report every problem with its YAML path and line")
    ch.add_argument("file", metavar="FILE")
    ch.add_argument(
        "--offline",
        action="store_true",
        help="only the file itself (no models, files or environment of this machine)",
    )
    ch.add_argument("--json", action="store_true", help="problems as JSON")
    ch.set_defaults(func=_cmd_config_check)
    ex = csub.add_parser("example", help="print a commented example gateway.yaml")
    ex.set_defaults(func=_cmd_config_example)
    rf = csub.add_parser("reference", help="print the config reference (markdown)")
    rf.set_defaults(func=_cmd_config_reference)
