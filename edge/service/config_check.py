"""``safety-edge config check``: every problem of a ``gateway.yaml`` with its path and line.

:func:`check_text` validates in three passes and collects, never stops at the first:

1. YAML: syntax errors (with their line) and duplicate keys (YAML silently keeps the last
   one; here it is an error);
2. the pydantic models of :mod:`edge.config`: each validation error's location
   (``('cameras', 0, 'tasks', 'fence', 'zones', 1, 'polygon')``) is followed through
   the node tree of :func:`yaml.compose` to the line it came from;
3. this machine (only when ``environment=True``): models named by camera tasks exist in
   ``models_dir`` (a did-you-mean for a typo), match their manifest's sha256 and know
   the zones' classes, video files exist, ``${VAR}`` in sources are set. A missing
   model, file or variable is a *warning* for ``config check`` (the file may be checked
   away from the gateway) and, for variables, an error at start-up. A model file that
   does not match its sha256, and a camera none of whose tasks can run while the models
   folder is installed, are errors for ``config check`` and warnings at start-up (the
   loader turns the task off, health says degraded, the other cameras run).

The admin token is judged in every pass that has a config (:func:`_admin_token_problems`):
the documented placeholder or a token under 16 characters is a *warning*, never an
error, so a gateway installed with one still starts after an upgrade (the placeholder
keeps the console off; see :mod:`edge.api.console.auth`).

Each :class:`Problem` prints as ``FILE:LINE: PATH: MESSAGE`` (what editors and CI
annotate). :func:`load_checked` is what ``safety-edge run`` uses: any error raises
:class:`ConfigReportError` carrying the whole report.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import threading
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from edge.config import GatewayConfig, TaskKind
from edge.errors import ConfigError

__all__ = [
    "ConfigReportError",
    "Problem",
    "check_file",
    "check_text",
    "format_report",
    "load_checked",
    "task_model_name",
]

Loc = tuple[str | int, ...]
Severity = Literal["error", "warning"]
Resolver = Callable[[str, int], object]
"""Looks a host name up, as :func:`socket.getaddrinfo` ``(host, port)`` (the default);
raises :class:`OSError` (``socket.gaierror``) when it does not resolve."""

MQTT_RESOLVE_TIMEOUT_S = 3.0
"""How long the ``mqtt.host`` look-up may take (a broken resolver can hang for minutes)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: ``path`` like ``cameras[0].tasks.fence.zones[1].polygon`` (``""`` = the
    whole file), ``line`` 1-based (``None`` when unknown), and what is wrong."""

    path: str
    line: int | None
    message: str
    severity: Severity = "error"

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        head = "warning: " if self.severity == "warning" else ""
        return f"{where}: {head}{self.path or '(file)'}: {self.message}"


class ConfigReportError(ConfigError):
    """The configuration has errors; ``str()`` is the full report, one problem a line."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(format_report(source, self.problems))


def format_report(source: str, problems: Sequence[Problem]) -> str:
    """``N error(s)[, M warning(s)] in SOURCE`` and one line per problem, errors first."""
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    counts = [f"{len(errors)} error{'s' * (len(errors) != 1)}"]
    if warnings:
        counts.append(f"{len(warnings)} warning{'s' * (len(warnings) != 1)}")
    lines = [f"{', '.join(counts)} in {source}"]
    lines += ["  " + p.format(source) for p in errors + warnings]
    return "\n".join(lines)


def format_path(loc: Loc) -> str:
    """``('cameras', 0, 'name')`` -> ``cameras[0].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


# -- YAML nodes ----------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of ``part`` in a mapping, or (item, item) in a sequence."""
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        found = None
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                found = (k, v)  # the last one wins, as in the loaded data
        return found
    if (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and 0 <= part < len(node.value)
    ):
        item = node.value[part]
        return item, item
    return None


def _walk(
    root: yaml.Node | None, data: Any, loc: Sequence[str | int], *, key_line: bool
) -> tuple[Loc, int | None]:
    """Follow ``loc`` through the data and nodes as far as both go.

    Returns the part of ``loc`` that exists in the data (pydantic's union-member and
    validator tags drop out; a missing key at the end is kept) and the line: of the key
    itself when ``key_line`` (unknown keys), else of the value reached.
    """
    path: list[str | int] = []
    node = root
    line = _line(root) if root is not None else None
    cur = data
    if loc and loc[-1] == "[key]":  # a bad dict key: point at the key itself
        loc, key_line = loc[:-1], True
    for i, part in enumerate(loc):
        exists = (isinstance(cur, dict) and isinstance(part, str) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        )
        if not exists:
            if i == len(loc) - 1 and isinstance(cur, dict) and isinstance(part, str):
                path.append(part)  # a missing key: report it at its parent's line
            break
        cur = cur[part]
        path.append(part)
        pair = _child(node, part) if node is not None else None
        if pair is None:
            node = None
            continue
        key, node = pair
        last = i == len(loc) - 1
        line = _line(key) if (key_line and last) else _line(node)
    return tuple(path), line


def _duplicate_keys(node: yaml.Node | None, loc: Loc = ()) -> list[Problem]:
    out: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            if name is not None:
                if name in seen:
                    out.append(
                        Problem(
                            format_path((*loc, name)),
                            _line(k),
                            f"duplicate key (first at line {seen[name]}; YAML would keep "
                            "only this one)",
                        )
                    )
                else:
                    seen[name] = _line(k)
            out += _duplicate_keys(v, (*loc, name if name is not None else "?"))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, (*loc, i))
    return out


# -- pydantic errors -----------------------------------------------------------------------


def _unwrap(tp: Any) -> list[Any]:
    """The member types of ``X | None``, ``list[X]``, ``dict[K, X]`` (the X parts)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(tp):
            out += _unwrap(a)
        return out
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return _unwrap(args[0]) if args else []
    if origin is dict:
        args = typing.get_args(tp)
        return _unwrap(args[1]) if len(args) == 2 else []
    return [tp]


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model whose keys live at ``loc`` (best effort; for suggestions)."""
    model: type[BaseModel] | None = GatewayConfig
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            if part in ("fence", "hardhat", "workwear"):  # dict keys of camera tasks
                continue
            return None
        models = [t for t in _unwrap(field.annotation) if isinstance(t, type)]
        model = next((t for t in models if issubclass(t, BaseModel)), None)
    return model


def _message(err: Any, path: Loc) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden" and path and isinstance(path[-1], str):
        model = _model_at(path[:-1])
        if model is not None:
            allowed = sorted(model.model_fields)
            close = difflib.get_close_matches(path[-1], allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"unknown key; {hint}allowed: {', '.join(allowed)}"
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    inp = err.get("input")
    if isinstance(inp, str | int | float | bool):
        shown = repr(inp)
        if len(shown) <= 60 and shown not in msg:
            msg += f" (got {shown})"
    return msg


def _pydantic_problems(exc: ValidationError, root: yaml.Node | None, data: Any) -> list[Problem]:
    merged: dict[tuple[Loc, int | None], list[str]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        path, line = _walk(root, data, loc, key_line=err.get("type") == "extra_forbidden")
        msgs = merged.setdefault((path, line), [])
        text = _message(err, path)
        if text not in msgs:
            msgs.append(text)
    return [
        Problem(format_path(path), line, msgs[0] if len(msgs) == 1 else " or ".join(msgs))
        for (path, line), msgs in merged.items()
    ]


# -- this machine --------------------------------------------------------------------------


def task_model_name(config: GatewayConfig, kind: TaskKind, model: str | None) -> str | None:
    """The model a camera task uses: its own ``model`` or the gateway's ``tasks.<kind>``."""
    if model is not None:
        return model
    name: str | None = getattr(config.tasks, kind)
    return name


def _environment_problems(
    config: GatewayConfig,
    root: yaml.Node | None,
    data: Any,
    *,
    env_errors: bool,
    resolve: Resolver = socket.getaddrinfo,
) -> list[Problem]:
    from edge.runtime.registry import ModelScan, scan_models
    from edge.service.tasks import default_zone_classes

    out: list[Problem] = []

    def add(loc: Loc, message: str, severity: Severity) -> None:
        path, line = _walk(root, data, loc, key_line=False)
        out.append(Problem(format_path(path), line, message, severity))

    scan = ModelScan(manifests={}, problems=[])
    models_error = ""
    try:
        scan = scan_models(config.models_dir)
    except Exception as exc:  # a missing folder must become one reported problem
        models_error = str(exc)
    manifests = scan.manifests
    for bad in scan.problems:
        # Each bad file by name; the other manifests still resolve. At start-up a
        # warning: the gateway runs the models that load (the task that wants this one
        # is off, health degraded); `config check` fails on it.
        add(("models_dir",), bad.message, "warning" if env_errors else "error")
    for ci, cam in enumerate(config.cameras):
        missing_env = [n for n in cam.env_refs() if not _env_set(n)]
        if missing_env:
            add(
                ("cameras", ci, "source"),
                f"environment variable(s) {', '.join(missing_env)} not set",
                "error" if env_errors else "warning",
            )
        src = cam.source
        if (
            isinstance(src, str)
            and _is_file_source(src)
            and _BROKEN_URL.match(src) is None  # reported as a broken URL instead
            and not Path(src).is_file()
        ):
            add(("cameras", ci, "source"), f"video file {src!r} does not exist", "warning")
        runnable: list[str] = []
        off: list[str] = []
        for kind, task in cam.tasks.items():
            name = task_model_name(config, kind, task.model)
            loc: Loc = ("cameras", ci, "tasks", kind)
            if name is None:
                add(
                    loc,
                    f"no model: tasks.{kind} is null and the task names none; set model:",
                    "error",
                )
                off.append(f"{kind}: no model")
                continue
            manifest = manifests.get(name)
            declared = scan.problem_for(name)
            if manifest is None and declared is not None:
                add(
                    loc,
                    f"model {name!r} does not load: its manifest {declared.path.name} is "
                    "invalid (see models_dir); the task stays off until it is fixed",
                    "warning" if env_errors else "error",
                )
                off.append(f"{kind}: manifest of model {name!r} invalid")
                continue
            if manifest is None:
                close = difflib.get_close_matches(name, sorted(manifests), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                why = models_error or (
                    f"have: {', '.join(sorted(manifests)) or 'none'}; run `make models`"
                )
                add(
                    loc,
                    f"model {name!r} not found in {str(config.models_dir)!r} ({hint}{why}); "
                    "the task stays off until it is installed",
                    "warning",
                )
                off.append(f"{kind}: model {name!r} not found")
                continue
            corrupt = _model_file_problem(manifest)
            if corrupt is not None:
                # config check fails; at start-up the loader turns the task off (health
                # degraded) and the other cameras still run.
                add(loc, corrupt, "warning" if env_errors else "error")
                off.append(f"{kind}: model {name!r} does not load")
                continue
            runnable.append(kind)
            known = list(manifest.class_names)
            if not task.zones and kind != "fence" and not default_zone_classes(kind, known):
                add(
                    loc,
                    f"model {name!r} has no class a {kind} violation is made of "
                    f"(it knows {known}); name the classes in a zone",
                    "error",
                )
            items = [("zones", i, z.classes) for i, z in enumerate(task.zones)]
            items += [("lines", i, ln.classes) for i, ln in enumerate(task.lines)]
            for part, zi, configured in items:
                classes = configured or list(default_zone_classes(kind, known))
                if not classes:
                    add(
                        (*loc, part, zi),
                        f"model {name!r} has no default {kind} classes (it knows {known}); "
                        "set classes:",
                        "error",
                    )
                    continue
                # Hard-hat/workwear tasks track people classed by the answer's classnames
                # (edge/service/tasks.py): no_hat, red_hat, no_workwear, ... count too.
                unknown = [c for c in classes if c not in known and c not in _answers(kind)]
                if unknown:
                    add(
                        (*loc, part, zi, "classes"),
                        f"model {name!r} does not detect {unknown} (it knows {known})",
                        "error",
                    )
        if cam.enabled and cam.tasks and not runnable and off:
            # An error when the models folder is installed (a typo, a corrupt file); with
            # no models there the file may be checked away from the gateway: a warning.
            decisive = bool(manifests) and not env_errors
            add(
                ("cameras", ci, "tasks"),
                f"camera {cam.name!r} will not run: no task can run ({'; '.join(off)})",
                "error" if decisive else "warning",
            )
    wearing = config.tasks.wearing
    person = wearing.person_model_name(config.tasks)
    wears = any(k != "fence" for c in config.cameras if c.enabled for k in c.tasks)
    if person is not None and wears and not models_error and person not in manifests:
        where: Loc = (
            ("tasks", "wearing", "person_model")
            if wearing.person_model is not None
            else ("tasks", "fence")
        )
        _, line = _walk(root, data, where, key_line=False)  # the key may be a default
        out.append(
            Problem(
                format_path(where),
                line,
                f"the worn rule needs a person model: {person!r} not found in "
                f"{str(config.models_dir)!r}; hard-hat/workwear tasks answer from their own "
                "model's boxes alone (tasks.wearing.worn_rule: false says that is intended)",
                "warning",
            )
        )
    out += _startup_problems(config, root, data, env_errors=env_errors, resolve=resolve)
    mqtt = config.resolved_mqtt()  # the environment may supply the user name
    if mqtt is not None and mqtt.commands.enabled and mqtt.username is None:
        add(
            ("mqtt", "commands", "enabled"),
            "commands are on but the gateway logs in without a user name: whoever reaches "
            "the broker can acknowledge alarms; give each gateway its own credentials and "
            "the broker the ACL of deploy/mosquitto/site.acl.template",
            "warning",
        )
    return out


_URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
_BROKEN_URL = re.compile(r"^\s*(rtsps?|https?)\s*:(?!//)", re.IGNORECASE)


def _source_problems(
    config: GatewayConfig, root: yaml.Node | None, data: Any, *, environment: bool
) -> list[Problem]:
    """Camera source typos that would otherwise only show at run as an offline camera: a
    URL scheme without ``://`` (``rtsp:/host``: read as a file name), a URL without a host
    (``http:///video.mjpg``); with ``environment``, a V4L2 device (``/dev/videoN`` or an
    index) that does not exist here (a warning: it may be plugged in later)."""
    from urllib.parse import urlsplit

    from edge.stream.sources import redact_uri, source_kind

    out: list[Problem] = []
    for ci, cam in enumerate(config.cameras):
        src = cam.source
        loc: Loc = ("cameras", ci, "source")
        _, line = _walk(root, data, loc, key_line=False)
        shown = redact_uri(src) if isinstance(src, str) else src

        def add(message: str, severity: Severity, loc: Loc = loc, line: Any = line) -> None:
            out.append(Problem(format_path(loc), line, message, severity))

        if isinstance(src, str):
            m = _BROKEN_URL.match(src)
            if m is not None:
                scheme = m.group(1).lower()
                add(
                    f"{shown!r} starts with {scheme}: but not {scheme}:// (it would be read "
                    f"as a file name): did you mean {scheme}://...?",
                    "error",
                )
                continue
            kind = source_kind(src)
            if kind in ("rtsp", "http"):
                try:
                    host = urlsplit(src.strip()).hostname
                except ValueError:
                    host = None
                if not host:
                    add(f"{shown!r} has no host name or address", "error")
                    continue
        if environment:
            device: str | None = None
            if isinstance(src, int):
                device = f"/dev/video{src}"
            elif source_kind(src) == "device":
                device = src if src.strip().startswith("/") else f"/dev/video{src.strip()}"
            if device is not None and not Path(device).exists():
                add(
                    f"camera device {device} does not exist on this machine (not plugged "
                    "in, or another number)",
                    "warning",
                )
    return out


def _percent_problems(config: GatewayConfig, root: yaml.Node | None, data: Any) -> list[Problem]:
    """A warning for a zone/line in auto mode whose coordinates are all within 0-100
    (and some above 1): taken for pixels, percentages make a zone in the top-left corner."""
    out: list[Problem] = []
    for ci, cam in enumerate(config.cameras):
        for kind, task in cam.tasks.items():
            shapes: list[tuple[str, int, str, list[tuple[float, float]] | None]] = [
                ("zones", i, "polygon", z.polygon) for i, z in enumerate(task.zones)
            ]
            shapes += [("lines", i, "points", ln.points) for i, ln in enumerate(task.lines)]
            for part, i, key, points in shapes:
                if not points:
                    continue
                raw = data["cameras"][ci]["tasks"][kind][part][i]
                coords = [c for p in points for c in p]
                if "normalized" in raw or max(coords) <= 1.0 or max(coords) > 100.0:
                    continue
                loc: Loc = ("cameras", ci, "tasks", kind, part, i, key)
                _, line = _walk(root, data, loc, key_line=False)
                out.append(
                    Problem(
                        format_path(loc),
                        line,
                        "every coordinate is within 0-100, read as pixels: if these are "
                        "percentages, divide by 100; if pixels, set normalized: false",
                        "warning",
                    )
                )
    return out


def _startup_problems(
    config: GatewayConfig,
    root: yaml.Node | None,
    data: Any,
    *,
    env_errors: bool,
    resolve: Resolver = socket.getaddrinfo,
) -> list[Problem]:
    """What ``safety-edge run`` would exit on within seconds (a systemd restart loop):
    TLS files, the events key file, fallback secrets, a data_dir this user cannot write,
    an API address this process cannot bind; and an ``mqtt.host`` name that does not
    resolve here (a warning for both: ``run`` starts, its broker stays disconnected).

    What exists but cannot be used (an unreadable or invalid file, a port this user may
    not bind) is an error. What is merely absent here (a file, a secret variable, an
    address of another machine) is, like a missing video file, a *warning* for ``config
    check`` (the file may be checked away from the gateway) and an error at start-up."""
    import errno

    out: list[Problem] = []
    absent: Severity = "error" if env_errors else "warning"

    def add(loc: Loc, message: str, severity: Severity = "error") -> None:
        _, line = _walk(root, data, loc, key_line=False)
        out.append(Problem(format_path(loc), line, message, severity))

    mqtt = config.resolved_mqtt()
    if mqtt is not None:
        lookup = _unresolved(mqtt.host, mqtt.port, resolve)
        if lookup is not None:
            add(
                ("mqtt", "host"),
                f"{lookup}: the gateway would run with its broker disconnected (/healthz "
                "shows the broker connected: false) unless the name resolves on the gateway",
                "warning",
            )
    if mqtt is not None and mqtt.tls is not None:
        from edge.mqtt.publisher import build_ssl_context

        tls = mqtt.tls
        unreadable = False
        for key, path in (
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
        ):
            err = _open_error(path)
            if err is not None:
                unreadable = True
                if err.errno == errno.ENOENT:
                    add(("mqtt", "tls", key), f"{str(path)!r} not found: run exits", absent)
                else:
                    add(("mqtt", "tls", key), f"cannot read {str(path)!r}: {err.strerror or err}")
        if not unreadable:
            try:
                build_ssl_context(mqtt)
            except ConfigError as exc:
                add(("mqtt", "tls"), str(exc))
    key_file = config.storage.events_key_file
    from edge.stream.chain_key import EVENTS_KEY_ENV

    if key_file is not None and not os.environ.get(EVENTS_KEY_ENV) and not key_file.exists():
        add(
            ("storage", "events_key_file"),
            f"{str(key_file)!r} not found (nor is {EVENTS_KEY_ENV} set): safety-edge run exits",
            absent,
        )
    else:
        try:
            config.storage.events_key()
        except ConfigError as exc:
            add(("storage", "events_key_file"), str(exc))
    if config.fallback.enabled:
        try:
            config.fallback.credentials()
        except ConfigError as exc:  # secrets may come from the gateway's environment
            add(("fallback",), f"{exc}: safety-edge run exits", absent)
    why = _not_writable(config.data_dir)
    if why is not None:
        add(("data_dir",), f"{str(config.data_dir)!r}: {why[0]}", "error" if why[1] else absent)
    snaps = config.storage.snapshot_dir
    why = None if snaps is None else _not_writable(snaps)
    if why is not None:
        add(
            ("storage", "snapshot_dir"),
            f"{str(snaps)!r}: {why[0]}: every snapshot would be lost (events still go on)",
            "warning",
        )
    if config.service.api:
        bind = _bind_problem(config.api.host, config.api.port)
        if bind is not None:
            loc, message, here = bind
            add(loc, message, "error" if here else absent)
    return out


def _unresolved(
    host: str, port: int, resolve: Resolver, timeout_s: float = MQTT_RESOLVE_TIMEOUT_S
) -> str | None:
    """Why ``host`` does not resolve with ``resolve`` (``None``: it does, or it is an IP
    literal). The look-up runs in a daemon thread and is given up after ``timeout_s``
    (a resolver that hangs is left to finish on its own)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    result: list[BaseException | None] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            resolve(host, port)
            result.append(None)
        except Exception as exc:  # gaierror, or whatever a broken resolver raises
            result.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="config-check-resolve", daemon=True).start()
    if not done.wait(timeout_s):
        return f"{host!r} did not resolve within {timeout_s:g} s (a resolver that hangs?)"
    exc = result[0] if result else None
    if exc is None:
        return None
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return f"{host!r} does not resolve on this machine: {why}"


def _open_error(path: Path | None) -> OSError | None:
    """Why ``path`` cannot be opened for reading (``None``: it can, or no path)."""
    if path is None:
        return None
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _not_writable(path: Path) -> tuple[str, bool] | None:
    """Why this user cannot create files in ``path`` (or, while it does not exist, in its
    nearest existing parent, where it would be made) and whether ``path`` itself exists;
    ``None``: it can."""
    base = _nearest_existing(path)
    itself = base == path.absolute()
    if not base.is_dir():
        return f"{str(base)!r} is not a folder", itself
    if not os.access(base, os.W_OK | os.X_OK):
        where = "it" if itself else f"its nearest existing parent {str(base)!r}"
        return f"not writable by this user (uid {os.geteuid()}): {where} is not writable", itself
    return None


def _bind_problem(host: str, port: int) -> tuple[Loc, str, bool] | None:
    """A test bind of ``(host, port)``: the key, why the API could not listen there and
    whether that holds wherever the file is checked (``False``: an address this machine
    does not have, maybe the gateway's). A port in use is left alone (the gateway being
    checked may be running)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return ("api", "host"), f"cannot resolve {host!r}: {exc.strerror or exc}", False
    family, kind, proto, _, addr = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return None
        if exc.errno == errno.EACCES:
            return (
                ("api", "port"),
                f"port {port} needs root or CAP_NET_BIND_SERVICE for this user (uid "
                f"{os.geteuid()}; the shipped systemd unit grants neither): use a port >= "
                "1024, e.g. 8080",
                True,
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return (
                ("api", "host"),
                f"{host!r} is not an address of this machine: the API cannot listen on it "
                "(use 127.0.0.1, 0.0.0.0 or one of its own addresses)",
                False,
            )
        return ("api", "host"), f"cannot listen on {host}:{port}: {exc.strerror or exc}", True
    return None


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _model_file_problem(manifest: Any) -> str | None:
    """Why the ONNX file of ``manifest`` cannot load (missing, unreadable, or not the
    manifest's sha256: replaced or corrupt), or ``None``. Hashes are cached per path, size
    and mtime (a check of several cameras reads each file once)."""
    from edge.runtime.registry import file_sha256

    path = Path(manifest.model_path)
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        digest = _SHA_CACHE.get(key)
        if digest is None:
            digest = _SHA_CACHE[key] = file_sha256(path)
    except OSError as exc:
        return f"model {manifest.name!r}: cannot read {str(path)!r}: {exc.strerror or exc}"
    if digest != manifest.sha256:
        return (
            f"model {manifest.name!r}: {str(path)!r} does not match the manifest's sha256 "
            f"(file {digest[:12]}..., manifest {manifest.sha256[:12]}...): the file was "
            "replaced or is corrupt; reinstall it (`make models`) or fix the manifest"
        )
    return None


def _admin_token_problems(
    config: GatewayConfig, root: yaml.Node | None, data: Any, *, environment: bool
) -> list[Problem]:
    """A warning for a placeholder or short admin token: the file's, or with
    ``environment`` the one in force (``$SAFETY_EDGE_ADMIN_TOKEN`` wins over the file)."""
    from edge.api.console.auth import admin_token_problem
    from edge.config import ADMIN_TOKEN_ENV

    token = config.api.resolved_admin_token() if environment else config.api.admin_token
    problem = admin_token_problem(token)
    if problem is None:
        return []
    message = problem[1]
    if environment and _env_set(ADMIN_TOKEN_ENV) and token != config.api.admin_token:
        message = f"{ADMIN_TOKEN_ENV}: {message}"
    loc: Loc = ("api", "admin_token")
    _, line = _walk(root, data, loc, key_line=False)
    return [Problem(format_path(loc), line, message, "warning")]


def _answers(kind: TaskKind) -> tuple[str, ...]:
    """The answer classnames a hard-hat/workwear zone may name besides the model's."""
    if kind == "hardhat":
        from edge.tasks.hardhat import HAT_CLASSNAMES

        return HAT_CLASSNAMES
    if kind == "workwear":
        from edge.tasks.workwear import WORKWEAR_CLASSNAMES

        return WORKWEAR_CLASSNAMES
    return ()


def _env_set(name: str) -> bool:
    return name in os.environ


def _is_file_source(src: str) -> bool:
    from edge.stream.sources import source_kind

    return source_kind(src) == "file"


# -- entry points --------------------------------------------------------------------------


def check_text(
    text: str,
    *,
    source: str = "gateway.yaml",
    environment: bool = True,
    env_errors: bool = False,
    resolve: Resolver = socket.getaddrinfo,
) -> tuple[GatewayConfig | None, list[Problem]]:
    """Validate YAML ``text``; returns the config (``None`` when it has errors) and every
    problem found. ``environment``: also check models, files and variables on this
    machine; ``env_errors``: an unset ``${VAR}`` is an error (start-up), not a warning;
    ``resolve``: looks ``mqtt.host`` up when ``environment`` (a name that does not
    resolve within :data:`MQTT_RESOLVE_TIMEOUT_S` is a warning)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        msg = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
        return None, [Problem("", line, msg)]
    problems = _duplicate_keys(root)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(
            Problem("", _line(root) if root else 1, "expected a mapping of settings at the top")
        )
        return None, problems
    config: GatewayConfig | None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        config = None
        problems += _pydantic_problems(exc, root, data)
    if config is not None:
        problems += _admin_token_problems(config, root, data, environment=environment)
        problems += _percent_problems(config, root, data)
        problems += _source_problems(config, root, data, environment=environment)
    if config is not None and environment:
        problems += _environment_problems(
            config, root, data, env_errors=env_errors, resolve=resolve
        )
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    if any(p.severity == "error" for p in problems):
        return None, problems
    return config, problems


def check_file(
    path: str | Path,
    *,
    environment: bool = True,
    env_errors: bool = False,
    resolve: Resolver = socket.getaddrinfo,
) -> tuple[GatewayConfig | None, list[Problem]]:
    """:func:`check_text` on a file.

    Raises:
        ConfigError: the file cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"config {str(p)!r}: cannot read: {why}") from None
    return check_text(
        text, source=str(p), environment=environment, env_errors=env_errors, resolve=resolve
    )


def load_checked(path: str | Path) -> tuple[GatewayConfig, list[Problem]]:
    """The config for start-up and its warnings.

    Raises:
        ConfigReportError: any error (the report lists every problem with its line).
        ConfigError: the file cannot be read.
    """
    config, problems = check_file(path, environment=True, env_errors=True)
    if config is None:
        raise ConfigReportError(str(path), problems)
    return config, problems
