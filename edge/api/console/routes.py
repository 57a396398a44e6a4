"""The web console's pages and their JSON/SSE helpers, under ``/console``.

Pages (server-rendered HTML; all but the login page need a session, see
:mod:`edge.api.console.auth`)::

    GET  /console                          -> /console/apps
    GET  /console/login, POST /console/login, POST /console/logout
    GET  /console/apps                     applications; POST: create one
    GET  /console/apps/{key}               keys, grants, resource packages
    POST /console/apps/{key}/secret        the AppSecret, revealed on demand (JSON)
    POST /console/apps/{key}/rotate|disable|enable|grants|packages
    GET  /console/monitoring               charts (data: GET /console/data/stats)
    GET  /console/alerts                   active and past alerts
    GET  /console/cameras                  latest frame of each camera, zones and lines drawn
    GET  /console/cameras/{camera}/frame.jpg
    GET  /console/data/lines               counting-line counts (JSON; the page polls it)
    GET  /console/data/session             200 while the session lives, else 401 (JSON)
    GET  /console/events                   event list with filters, live via SSE:
    GET  /console/events/stream            text/event-stream (``id`` = row id)
    GET  /console/snapshots/{path}         snapshot JPEG (``?thumb=1``: small)
    GET  /console/zones/{camera}/{task}/{zone}   the zone editor; POST (JSON): save
    GET  /console/lines/{camera}/{task}/{line}   the line editor (same page); POST: save
    GET  /console/static/...               CSS, JS, the vendored uPlot

Every answer carries a strict Content-Security-Policy (scripts, styles, images and
connections only from this origin; no inline script), ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store`` for pages and data.

Forms are posted as ``application/x-www-form-urlencoded`` (parsed here, at most
:data:`MAX_FORM_BYTES`), JSON calls as ``application/json``; both carry the session's
CSRF token (:func:`edge.api.console.auth`).

Live events: the SSE stream polls the events table every :data:`SSE_POLL_S` for rows
newer than the last one sent (``event: zone``) and the ``event_acks`` table for
acknowledgements newer than the last one sent (``event: ack``, so a page showing an
incident shows its acknowledgement without a reload), and ends after :data:`SSE_MAX_S`;
the browser reconnects at once with ``Last-Event-ID`` (``<event rowid>.<ack rowid>``),
so nothing is missed or repeated, and a stopping server never waits for an open console
longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import cv2
from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Match, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge import __version__
from edge.api.console.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionStore,
    check_token,
    same_token,
)
from edge.api.console.backend import STATE_KEY, CameraBackend
from edge.api.console.feed import EventFeed, EventFilter, ThumbnailCache, safe_snapshot_path
from edge.api.console.rollup import ROLLUP_FILENAME, HourlyRollup
from edge.api.console.stats import RANGES, StatsQuery, bucket_stats
from edge.api.console.zone_edit import (
    MAX_LINE_POINTS,
    MIN_LINE_POINTS,
    Kind,
    ZoneEditError,
    ZoneEditor,
)
from edge.api.contract import API_PATHS, APIS, PATH_PREFIX
from edge.api.store import TIERS, AppError, AppRecord, Store, StoreError
from edge.kernels.geometry import MAX_AREA_POINTS, MIN_AREA_POINTS
from edge.stream.events import (
    EventStoreError,
    LocalTimeError,
    events_db_path,
    local_if_naive,
    parse_time,
)

if TYPE_CHECKING:
    from edge.api.app import Gateway

__all__ = ["MAX_FORM_BYTES", "SSE_MAX_S", "SSE_POLL_S", "ConsoleState", "mount_console"]

log = logging.getLogger("edge.api.console")

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 64 * 1024
SSE_POLL_S = 0.5
SSE_MAX_S = 5.0
EVENTS_PAGE = 100
"""Rows on one Events page; more in the period: a notice and an "Older" link."""
_ROLLUP_IDLE_S = 60.0
_API_TITLES = {"hardhat": "Hard-hat", "workwear": "Workwear", "fence": "Electronic fence"}
_TIER_LABELS = {"100k": "100k", "400k": "400k", "800k": "800k", "4m": "4M", "8m": "8M"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _Denied(Exception):
    """Internal: answer ``response`` instead of running the handler."""

    def __init__(self, response: Response) -> None:
        super().__init__("denied")
        self.response = response


def _secure(resp: Response, *, cache: bool = False) -> Response:
    for k, v in _SECURITY_HEADERS.items():
        resp.headers[k] = v
    if not cache:
        resp.headers["Cache-Control"] = "no-store"
    return resp


def _iso(v: datetime | int | float | None) -> str:
    """UTC ISO 8601 of a datetime or Unix milliseconds ('' for None)."""
    if v is None:
        return ""
    dt = v if isinstance(v, datetime) else datetime.fromtimestamp(v / 1000, timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fmt_int(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


class ConsoleState:
    """Everything the console keeps between requests (``app.state.console``)."""

    def __init__(self, *, gateway: Gateway, app: FastAPI) -> None:
        import jinja2

        self.gateway = gateway
        self.app = app
        self.store: Store = gateway.store
        self.admin_token = gateway.admin_token  # None also for the refused placeholder
        self.sessions = SessionStore()
        self.throttle: LoginThrottle = gateway.admin_throttle  # one budget with /console/api
        self.feed = EventFeed(path=events_db_path(gateway.config.data_dir))
        self.thumbs = ThumbnailCache()
        self.rollup: HourlyRollup | None = None
        self._editor: ZoneEditor | None = None
        self._editor_backend: object | None = None
        self.closing = asyncio.Event()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["iso"] = _iso
        self.env.filters["num"] = _fmt_int
        self.env.globals.update(
            static=self.static_url,
            api_titles=_API_TITLES,
            tier_labels=_TIER_LABELS,
            tiers=TIERS,
            apis=APIS,
            version=__version__,
            gateway_id=gateway.config.gateway_id,
        )
        self._asset_version = _asset_version()

    # -- helpers ---------------------------------------------------------------------

    def static_url(self, path: str) -> str:
        return f"/console/static/{path}?v={self._asset_version}"

    @property
    def backend(self) -> CameraBackend | None:
        return cast("CameraBackend | None", getattr(self.app.state, STATE_KEY, None))

    @property
    def config(self) -> Any:
        """The configuration the console shows (zone and line edits update it)."""
        ed = self._editor
        return ed.config if ed is not None else self.gateway.config

    def editor(self) -> ZoneEditor:
        """The zone and line editor, bound to the current backend (built on first use)."""
        backend = self.backend
        if self._editor is None or self._editor_backend is not backend:
            config = self._editor.config if self._editor is not None else self.gateway.config
            self._editor = ZoneEditor(
                config=config,
                config_path=None if backend is None else backend.config_path,
                apply=None if backend is None else backend.apply_zone,
                apply_line=None if backend is None else backend.apply_line,
            )
            self._editor_backend = backend
        return self._editor

    def console_off(self, next_: str = "") -> Response:
        """The login page saying the console is off (403): no admin token, or the
        placeholder refused (the page names why)."""
        return self.render(
            "login.html",
            None,
            status=403,
            disabled=True,
            refused=self.gateway.admin_token_refused,
            error="",
            next=next_,
        )

    def render(
        self,
        template: str,
        session: Session | None,
        *,
        status: int = 200,
        **ctx: Any,
    ) -> Response:
        flash: list[tuple[str, str]] = []
        if session is not None:
            flash, session.flash = session.flash, []
        html = self.env.get_template(template).render(
            session=session,
            csrf=session.csrf if session is not None else "",
            flash=flash,
            **ctx,
        )
        return _secure(HTMLResponse(html, status_code=status))

    def snapshot_root(self) -> Path:
        return Path(self.config.snapshot_dir())


def _asset_version() -> str:
    h = hashlib.sha256()
    for p in sorted((HERE / "static").rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(str(p.stat().st_size).encode())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()[:10]


# -- request helpers ------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.url.path.startswith(
        ("/console/data/", "/console/events/stream")
    )


def _browser_form(request: Request) -> bool:
    """A browser's form post: urlencoded, and it asks for HTML (fetch and JSON callers
    do not)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return (
        ctype == "application/x-www-form-urlencoded"
        and "text/html" in request.headers.get("accept", "")
        and not _wants_json(request)
    )


def _form_page(path: str) -> str:
    """The page a console form posting to ``path`` is on: an application's actions
    (``/console/apps/{key}/{action}``) are on its page, other forms post to their own
    page (``/console/apps``); logging out has no page to come back to."""
    parts = path.split("/")
    if len(parts) == 5 and parts[:3] == ["", "console", "apps"]:
        return "/".join(parts[:4])
    return _safe_next(path if path != "/console/logout" else "")


def _session(state: ConsoleState, request: Request) -> Session:
    """The request's session, or :class:`_Denied` (login redirect for pages, 401 else)."""
    if state.admin_token is None:
        raise _Denied(state.console_off())
    s = state.sessions.get(request.cookies.get(SESSION_COOKIE))
    if s is not None:
        return s
    if request.method == "GET" and not _wants_json(request):
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        q = urllib.parse.urlencode({"next": nxt})
        raise _Denied(_secure(RedirectResponse(f"/console/login?{q}", status_code=303)))
    if request.method == "POST" and _browser_form(request):
        # a page's form posted after the session ended: log in again, then that page
        q = urllib.parse.urlencode({"next": _form_page(request.url.path)})
        raise _Denied(_secure(RedirectResponse(f"/console/login?{q}", status_code=303)))
    raise _Denied(
        _secure(JSONResponse({"error": "not logged in (or the session expired)"}, status_code=401))
    )


def _check_origin(request: Request) -> None:
    """Refuse requests another site started (Origin/Sec-Fetch-Site), whatever the token."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = urllib.parse.urlsplit(origin).netloc
        if host.lower() != request.headers.get("host", "").lower():
            raise _Denied(_forbidden("cross-origin request refused"))
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise _Denied(_forbidden("cross-site request refused"))


def _forbidden(why: str) -> Response:
    return _secure(JSONResponse({"error": why}, status_code=403))


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (
        not (length.isascii() and length.isdigit())
        or len(length) > 12
        or int(length) > MAX_FORM_BYTES
    ):
        raise _Denied(_secure(JSONResponse({"error": "request too large"}, status_code=413)))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise _Denied(_secure(JSONResponse({"error": "request too large"}, status_code=413)))
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form body as ``{field: [values]}`` (bounded, UTF-8)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise _Denied(_secure(JSONResponse({"error": "expected a form post"}, status_code=415)))
    body = await _read_body(request)
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200
        )
    except (UnicodeDecodeError, ValueError):
        raise _Denied(
            _secure(JSONResponse({"error": "malformed form data"}, status_code=400))
        ) from None
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def _one(form: Mapping[str, list[str]], key: str) -> str:
    vals = form.get(key)
    return vals[0] if vals else ""


def _package_start(text: str) -> datetime | None:
    """The add-package form's Start: empty = now (``None``); ISO 8601, without an offset
    the gateway's local time (:func:`edge.stream.events.local_if_naive`)."""
    text = text.strip()
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AppError(
            f"Start {text[:40]!r} is not a date or date-time (e.g. 2026-12-01 or "
            "2026-12-01T08:00, the gateway's local time); leave it empty for now"
        ) from None
    try:
        return local_if_naive(dt)
    except LocalTimeError as exc:  # the repeated or skipped hour of a DST change
        raise AppError(f"Start {exc}") from None
    except (ValueError, OverflowError):
        raise AppError(f"Start {text[:40]!r} is out of range") from None


def _csrf(session: Session, given: str | None) -> None:
    if not same_token(given, session.csrf):
        raise _Denied(_forbidden("missing or wrong CSRF token; reload the page"))


async def _post_form(state: ConsoleState, request: Request) -> tuple[Session, dict[str, list[str]]]:
    """Session + origin + CSRF checks of a form post; returns the session and form."""
    session = _session(state, request)
    _check_origin(request)
    form = await _form(request)
    _csrf(session, _one(form, "csrf") or request.headers.get("x-csrf-token"))
    return session, form


async def _post_json(state: ConsoleState, request: Request) -> tuple[Session, Any]:
    """Session + origin + CSRF (header) checks of a JSON post; returns the parsed body."""
    session = _session(state, request)
    _check_origin(request)
    _csrf(session, request.headers.get("x-csrf-token"))
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request)
    if not body:
        return session, None
    if ctype != "application/json":
        raise _Denied(_secure(JSONResponse({"error": "expected JSON"}, status_code=415)))
    try:
        return session, json.loads(body)
    except ValueError:
        raise _Denied(_secure(JSONResponse({"error": "malformed JSON"}, status_code=400))) from None
    except RecursionError:
        raise _Denied(
            _secure(JSONResponse({"error": "malformed JSON: nested too deeply"}, status_code=400))
        ) from None


def _redirect(path: str) -> Response:
    return _secure(RedirectResponse(path, status_code=303))


def _safe_next(nxt: str) -> str:
    if nxt.startswith("/console/") and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return "/console/apps"


async def _run(fn: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(fn)


def _app_view(store: Store, rec: AppRecord) -> dict[str, Any]:
    packages = store.quota(rec.app_key)
    by_api = []
    for g in rec.grants:
        pk = [p for p in packages if p.api == g.api]
        by_api.append(
            {
                "api": g.api,
                "service_code": g.service_code,
                "path": f"{PATH_PREFIX}{g.service_code}/{API_PATHS[g.api]}",
                "remaining": sum(p.remaining for p in pk if p.active),
                "next_expiry": min((p.expires_at for p in pk if p.active), default=None),
                "packages": pk,
            }
        )
    return {"app": rec, "grants": by_api}


# -- the router -----------------------------------------------------------------------------


def mount_console(app: FastAPI, gateway: Gateway) -> ConsoleState | None:
    """Add the console's routes, static files and background rollup to ``app``.

    Call before any catch-all route is added. The console is reachable only when the
    gateway has an admin token (``api.admin_token`` / ``$SAFETY_EDGE_ADMIN_TOKEN``);
    without one every page says so. Returns the state (also ``app.state.console``), or
    ``None`` when Jinja2 is missing (logged; the API works without the console).
    """
    try:
        import jinja2  # noqa: F401 - the pages need it; checked before mounting anything
    except ImportError:
        log.error("web console off: jinja2 is not installed (pip install jinja2)")
        return None
    state = ConsoleState(gateway=gateway, app=app)
    app.state.console = state

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        task = None
        if state.admin_token is not None:
            try:
                state.rollup = HourlyRollup(
                    path=Path(gateway.config.data_dir) / ROLLUP_FILENAME,
                    store_path=gateway.store.path,
                    retention_days=gateway.config.api.retention_days,
                )
                task = asyncio.create_task(_rollup_loop(state.rollup), name="console-rollup")
            except StoreError as exc:
                log.error("console rollup off (week charts read raw data): %s", exc)
        try:
            yield
        finally:
            state.closing.set()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if state.rollup is not None:
                state.rollup.close()

    router = APIRouter(prefix="/console", include_in_schema=False, lifespan=lifespan)
    _add_routes(router, state)
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console-static")
    app.router.routes.append(
        _ConsoleRest("/console/{path:path}", _rest_endpoint(state, router), methods=_METHODS)
    )
    app.add_middleware(_ConsoleHeaders)
    return state


class _ConsoleHeaders:
    """ASGI middleware: every answer under ``/console`` (static files, 404s and 405s,
    framework errors included) gets the console's security headers that its route did
    not set; ``Cache-Control`` stays the route's (static files are cacheable)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/console" and not path.startswith("/console/"):
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self._headers if k not in have]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)


_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class _ConsoleRest(Route):
    """``/console/{path}`` that no console route serves (``/console/api/...`` is left to
    the gateway's own routes): 405 when a route has the path with other methods, else 404
    (HTML for pages, JSON for data) - not the API's catch-all."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith("/console/api/"):
            return Match.NONE, {}
        return super().matches(scope)


def _rest_endpoint(state: ConsoleState, router: APIRouter) -> Callable[[Request], Any]:
    async def console_rest(request: Request) -> Response:
        allow: set[str] = set()
        for r in router.routes:
            if isinstance(r, Route) and r.matches(request.scope)[0] is Match.PARTIAL:
                allow |= r.methods or set()
        if allow:
            resp: Response = JSONResponse(
                {"error": f"method {request.method} not allowed here"}, status_code=405
            )
            resp.headers["Allow"] = ", ".join(sorted(allow))
            return _secure(resp)
        if _wants_json(request) or "text/html" not in request.headers.get("accept", ""):
            return _secure(JSONResponse({"error": "no such console page"}, status_code=404))
        return state.render(
            "error.html",
            None,
            status=404,
            title="No such page",
            message=f"The console has no page {request.url.path}.",
        )

    return console_rest


async def _rollup_loop(rollup: HourlyRollup) -> None:
    """Sum finished hours: in 1 s slices while catching up, then once a minute."""
    await asyncio.sleep(1.0)
    while True:
        pause = _ROLLUP_IDLE_S
        try:
            n = await anyio.to_thread.run_sync(lambda: rollup.catch_up(budget_s=1.0))
            if n > 3:
                pause = 0.5
        except StoreError as exc:
            log.error("console rollup: %s", exc)
        except Exception:  # keep summing next time; logged with traceback
            log.exception("console rollup round failed")
        await asyncio.sleep(pause)


def _guard(
    state: ConsoleState,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: turn :class:`_Denied`, store and zone errors into answers."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def handler(request: Request) -> Response:
            try:
                resp: Response = await fn(request)
                return resp
            except _Denied as d:
                return d.response
            except StoreError as exc:
                log.error("console: %s", exc)
                if _wants_json(request) or request.method == "POST":
                    return _secure(
                        JSONResponse({"error": f"database error: {exc}"}, status_code=503)
                    )
                return state.render(
                    "error.html", None, status=503, title="Database error", message=str(exc)
                )
            except EventStoreError as exc:
                log.error("console: %s", exc)
                return state.render(
                    "error.html", None, status=503, title="Events database error", message=str(exc)
                )

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def _add_routes(router: APIRouter, state: ConsoleState) -> None:
    store = state.store
    guard = _guard(state)

    def route(path: str, methods: list[str]) -> Callable[[Callable[..., Any]], Any]:
        def deco(fn: Callable[..., Any]) -> Any:
            router.add_api_route(path, guard(fn), methods=methods, name=f"console_{fn.__name__}")
            return fn

        return deco

    # -- login --------------------------------------------------------------------------

    @route("", ["GET"])
    async def index(request: Request) -> Response:
        _session(state, request)
        return _redirect("/console/apps")

    @route("/login", ["GET"])
    async def login_page(request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next", ""))
        if state.admin_token is None:
            return state.console_off(nxt)
        token = _new_login_token()
        resp = state.render("login.html", None, disabled=False, error="", next=nxt, login=token)
        _set_cookie(request, resp, LOGIN_COOKIE, token, max_age=600, path="/console/login")
        return resp

    @route("/login", ["POST"])
    async def login(request: Request) -> Response:
        if state.admin_token is None:
            return state.console_off()
        _check_origin(request)
        client = _client(request)
        wait = state.throttle.blocked(client)
        form = await _form(request)
        nxt = _safe_next(_one(form, "next"))
        if wait > 0:
            token = _new_login_token()
            resp = state.render(
                "login.html",
                None,
                status=429,
                disabled=False,
                error=f"Too many failed logins; try again in {int(wait) + 1} s.",
                next=nxt,
                login=token,
            )
            resp.headers["Retry-After"] = str(int(wait) + 1)
            _set_cookie(request, resp, LOGIN_COOKIE, token, max_age=600, path="/console/login")
            return resp
        given = _one(form, "login_csrf")
        if not given:  # not from the login form (it always has the field)
            return _forbidden("missing or wrong login form token; reload the login page")
        if not same_token(given, request.cookies.get(LOGIN_COOKIE, "")):
            # a form from an older tab or older than the cookie's 600 s: not a wrong token
            # (the throttle does not count it), a fresh form to enter it again; a post
            # without the field keeps its JSON 403 and leaves the open form's cookie alone
            log.info("console: login form expired or from another tab (%s)", client)
            return _login_again(
                state, request, 403, "The form expired, enter the token again.", nxt
            )
        if not check_token(_one(form, "token"), state.admin_token):
            state.throttle.failed(client)
            log.warning("console: failed login from %s", client)
            return _login_again(state, request, 401, "Wrong admin token.", nxt)
        state.throttle.succeeded(client)
        session = state.sessions.create(client=client)
        log.info("console: login from %s", client)
        resp = _redirect(nxt)
        _set_cookie(request, resp, SESSION_COOKIE, session.sid, max_age=None, path="/console")
        resp.delete_cookie(LOGIN_COOKIE, path="/console/login", httponly=True, samesite="strict")
        return resp

    @route("/data/session", ["GET"])
    async def session_check(request: Request) -> Response:
        """Whether the request's session is alive (the Events page asks when its stream
        failed): 200 ``{"logged_in": true}``, else 401 JSON."""
        _session(state, request)
        return _secure(JSONResponse({"logged_in": True}))

    @route("/logout", ["POST"])
    async def logout(request: Request) -> Response:
        session, _ = await _post_form(state, request)
        state.sessions.delete(session.sid)
        resp = _redirect("/console/login")
        resp.delete_cookie(SESSION_COOKIE, path="/console", httponly=True, samesite="strict")
        return resp

    # -- applications -----------------------------------------------------------------

    def apps_page(session: Session, *, status: int = 200, error: str = "", **form: Any) -> Response:
        apps = [_app_view(store, a) for a in store.list_apps()]
        return state.render(
            "apps.html",
            session,
            status=status,
            page="apps",
            apps=apps,
            error=error,
            form={"name": "", "description": "", "grants": list(APIS), **form},
        )

    @route("/apps", ["GET"])
    async def apps(request: Request) -> Response:
        session = _session(state, request)
        return cast(Response, await _run(lambda: apps_page(session)))

    @route("/apps", ["POST"])
    async def create_app(request: Request) -> Response:
        session, form = await _post_form(state, request)
        name = _one(form, "name").strip()
        desc = _one(form, "description").strip()
        grants = [g for g in form.get("grants", []) if g]

        def create() -> Response:
            try:
                if not grants:
                    raise AppError("grant at least one API")
                rec = store.create_app(name=name, description=desc, grants=grants)
            except AppError as exc:
                return apps_page(
                    session, status=400, error=str(exc), name=name, description=desc, grants=grants
                )
            log.info("console: application %r created", rec.name)
            session.flash.append(("ok", f"Application {rec.name} created."))
            return _redirect(f"/console/apps/{rec.app_key}")

        return cast(Response, await _run(create))

    def find(key: str) -> AppRecord:
        rec = store.get_app(key)
        if rec is None:
            raise _Denied(
                state.render(
                    "error.html",
                    None,
                    status=404,
                    title="No such application",
                    message=f"There is no application with AppKey {key}.",
                )
            )
        return rec

    def app_page(session: Session, key: str, *, status: int = 200, error: str = "") -> Response:
        view = _app_view(store, find(key))
        granted = {g["api"] for g in view["grants"]}
        return state.render(
            "app.html",
            session,
            status=status,
            page="apps",
            error=error,
            ungranted=[a for a in APIS if a not in granted],
            now=datetime.now(timezone.utc),
            **view,
        )

    @route("/apps/{key}", ["GET"])
    async def app_detail(request: Request) -> Response:
        session = _session(state, request)
        key = request.path_params["key"]
        return cast(Response, await _run(lambda: app_page(session, key)))

    @route("/apps/{key}/secret", ["POST"])
    async def reveal_secret(request: Request) -> Response:
        await _post_json(state, request)
        key = request.path_params["key"]
        rec = await _run(lambda: store.get_app(key))
        if rec is None:
            return _secure(JSONResponse({"error": "no such application"}, status_code=404))
        log.info("console: secret of %r revealed to %s", rec.name, _client(request))
        return _secure(JSONResponse({"app_key": rec.app_key, "app_secret": rec.app_secret}))

    def app_action(
        name: str, act: Callable[[AppRecord, Mapping[str, list[str]]], str]
    ) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            session, form = await _post_form(state, request)
            key = request.path_params["key"]

            def run() -> Response:
                rec = find(key)
                try:
                    msg = act(rec, form)
                except AppError as exc:
                    return app_page(session, key, status=400, error=str(exc))
                log.info("console: %s on application %r: %s", name, rec.name, msg)
                session.flash.append(("ok", msg))
                return _redirect(f"/console/apps/{key}")

            return cast(Response, await _run(run))

        handler.__name__ = name
        return handler

    def rotate(rec: AppRecord, _f: Mapping[str, list[str]]) -> str:
        store.rotate_secret(rec.app_key)
        return "A new AppSecret was issued; the old one no longer works."

    def disable(rec: AppRecord, _f: Mapping[str, list[str]]) -> str:
        store.disable_app(rec.app_key)
        return "Application disabled: its calls are refused (4010)."

    def enable(rec: AppRecord, _f: Mapping[str, list[str]]) -> str:
        store.disable_app(rec.app_key, enabled=True)
        return "Application enabled."

    def grant(rec: AppRecord, f: Mapping[str, list[str]]) -> str:
        api = _one(f, "api")
        store.add_grant(app=rec.app_key, api=api)
        return f"Granted the {_API_TITLES.get(api, api)} API."

    def package(rec: AppRecord, f: Mapping[str, list[str]]) -> str:
        api, tier = _one(f, "api"), _one(f, "tier")
        if api not in rec.service_codes:
            raise AppError(f"the application is not granted the {api or '?'} API")
        # Empty Start = now; the store refuses "now" while the clock looks unset.
        p = store.add_package(
            app=rec.app_key, api=api, tier=tier, start=_package_start(_one(f, "start"))
        )
        return (
            f"Added a {_TIER_LABELS.get(p.tier, p.tier)} package for the "
            f"{_API_TITLES[p.api]} API ({p.calls:,} calls from {_iso(p.start)} "
            f"until {_iso(p.expires_at)})."
        )

    for action_name, fn in (
        ("rotate", rotate),
        ("disable", disable),
        ("enable", enable),
        ("grants", grant),
        ("packages", package),
    ):
        router.add_api_route(
            f"/apps/{{key}}/{action_name}",
            guard(app_action(action_name, fn)),
            methods=["POST"],
            name=f"console_app_{action_name}",
        )

    # -- monitoring ---------------------------------------------------------------------

    @route("/monitoring", ["GET"])
    async def monitoring(request: Request) -> Response:
        session = _session(state, request)
        q = request.query_params
        rng = q.get("range", "hour")
        apps_ = await _run(store.list_apps)
        return state.render(
            "monitoring.html",
            session,
            page="monitoring",
            apps=apps_,
            sel_app=q.get("app", ""),
            sel_api=q.get("api", ""),
            sel_range=rng if rng in RANGES else "hour",
            ranges=list(RANGES),
        )

    @route("/data/stats", ["GET"])
    async def stats_data(request: Request) -> Response:
        _session(state, request)
        q = request.query_params
        app_arg = q.get("app") or None
        api_arg = q.get("api") or None

        def compute() -> Any:
            key = None
            if app_arg:
                rec = store.find_app(app_arg)
                if rec is None:
                    raise ValueError(f"no application {app_arg!r}")
                key = rec.app_key
            query = StatsQuery(range=q.get("range", "hour"), app_key=key, api=api_arg)  # type: ignore[arg-type]
            return bucket_stats(store, query, rollup=state.rollup)

        try:
            data = await _run(compute)
        except ValueError as exc:
            return _secure(JSONResponse({"error": str(exc)}, status_code=400))
        return _secure(JSONResponse(data))

    # -- alerts -------------------------------------------------------------------------

    @route("/alerts", ["GET"])
    async def alerts(request: Request) -> Response:
        session = _session(state, request)

        def load() -> Any:
            names = {a.app_key: a.name for a in store.list_apps()}
            active = store.list_alerts(active=True, limit=500)
            past = store.list_alerts(active=False, limit=200)
            return names, active, past

        names, active, past = await _run(load)
        return state.render(
            "alerts.html",
            session,
            page="alerts",
            names=names,
            active=active,
            past=past,
            now=datetime.now(timezone.utc),
        )

    # -- cameras, events, snapshots ------------------------------------------------------

    def raw_states() -> dict[str, Mapping[str, Any]]:
        backend = state.backend
        return dict(backend.camera_states()) if backend is not None else {}

    def camera_state(cam: Any, st: Mapping[str, Any]) -> dict[str, Any]:
        """A camera's state as the Cameras page shows it (page render and polling alike)."""
        return {
            "enabled": cam.enabled,
            "online": st.get("online"),
            "running": bool(st.get("running", False)),
            "fps": st.get("fps"),
            "off": st.get("off"),
        }

    def camera_views() -> list[dict[str, Any]]:
        states = raw_states()
        out = []
        for cam in state.config.cameras:
            st = states.get(cam.name, {})
            tasks = []
            for kind, task in cam.tasks.items():
                zones = [
                    {
                        "name": z.name,
                        "polygon": None if z.polygon is None else [list(p) for p in z.polygon],
                        "normalized": bool(z.normalized),
                    }
                    for z in task.zones
                ]
                counted = (st.get("lines") or {}).get(kind) or {}
                lines = [
                    {
                        "name": ln.name,
                        "points": [list(p) for p in ln.points],
                        "normalized": bool(ln.normalized),
                        "counts": counted.get(ln.name),
                    }
                    for ln in task.lines
                ]
                tasks.append({"name": kind, "zones": zones, "lines": lines})
            out.append(
                {
                    "name": cam.name,
                    **camera_state(cam, st),
                    "tasks": tasks,
                    "zones_json": json.dumps(
                        [z | {"task": t["name"]} for t in tasks for z in t["zones"]]
                    ),
                    "lines_json": json.dumps(
                        [ln | {"task": t["name"]} for t in tasks for ln in t["lines"]]
                    ),
                }
            )
        return out

    @route("/cameras", ["GET"])
    async def cameras(request: Request) -> Response:
        session = _session(state, request)
        views = await _run(camera_views)
        return state.render(
            "cameras.html",
            session,
            page="cameras",
            cameras=views,
            live=state.backend is not None,
            stamp=int(time.time() * 1000),
        )

    @route("/data/cameras", ["GET"])
    async def camera_state_data(request: Request) -> Response:
        """Each configured camera's state for the Cameras page's polling: ``{"live",
        "time_ms": the gateway's clock (Unix ms, for the page's frame age), "cameras":
        {name: {"enabled", "online" (``null``: no status), "running", "fps" (frames/s or
        ``null``), "off" (why it does not run, or ``null``)}}}``."""
        _session(state, request)

        def load() -> dict[str, Any]:
            states = raw_states()
            out = {
                cam.name: camera_state(cam, states.get(cam.name, {}))
                for cam in state.config.cameras
            }
            live = state.backend is not None
            return {"live": live, "time_ms": int(time.time() * 1000), "cameras": out}

        return _secure(JSONResponse(await _run(load)))

    @route("/data/lines", ["GET"])
    async def line_counts(request: Request) -> Response:
        """Counting-line counts for the Cameras page's polling (``?camera=``: one camera,
        404 when the config has no such camera). Every line of the config is listed;
        its counts are ``null`` while its camera does not run (or has no frame yet)."""
        _session(state, request)
        want = request.query_params.get("camera")

        def load() -> dict[str, Any] | None:
            backend = state.backend
            cams = [c for c in state.config.cameras if want is None or c.name == want]
            if not cams and want is not None:
                return None
            out: dict[str, Any] = {}
            for cam in cams:
                got = backend.line_counts(cam.name) if backend is not None else None
                counted = got or {}
                out[cam.name] = {
                    "running": got is not None,
                    "lines": {
                        kind: {
                            ln.name: _counts((counted.get(kind) or {}).get(ln.name))
                            for ln in task.lines
                        }
                        for kind, task in cam.tasks.items()
                        if task.lines
                    },
                }
            return {"live": backend is not None, "time_ms": int(time.time() * 1000), "cameras": out}

        data = await _run(load)
        if data is None:
            return _secure(JSONResponse({"error": f"no camera {want!r}"}, status_code=404))
        return _secure(JSONResponse(data))

    @route("/cameras/{camera}/frame.jpg", ["GET"])
    async def frame(request: Request) -> Response:
        _session(state, request)
        camera = request.path_params["camera"]

        def load() -> tuple[bytes, str, int | None] | None:
            backend = state.backend
            if backend is not None:
                got = backend.latest_frame(camera)
                if got is not None:
                    ok, buf = cv2.imencode(".jpg", got[0], [cv2.IMWRITE_JPEG_QUALITY, 85])
                    if ok:
                        return buf.tobytes(), _iso(got[1]), int(got[1])
            rel = state.feed.latest_snapshot(camera)
            if rel is not None:
                p = safe_snapshot_path(state.snapshot_root(), rel)
                if p is not None:
                    return p.read_bytes(), "snapshot", None
            return None

        got = await _run(load)
        if got is None:
            return _secure(Response(status_code=404))
        resp = Response(got[0], media_type="image/jpeg")
        resp.headers["X-Frame-Time"] = got[1]
        if got[2] is not None:  # the frame's wall-clock time, Unix ms (the page's "n s old")
            resp.headers["X-Frame-Ms"] = str(got[2])
        return _secure(resp)

    def event_filter(q: Mapping[str, str]) -> tuple[EventFilter, dict[str, str], str]:
        sel = {k: q.get(k, "") for k in ("camera", "task", "since", "until")}
        error = ""
        since = until = None
        try:
            if sel["since"]:
                since = _filter_time(sel["since"])
            if sel["until"]:
                until = _filter_time(sel["until"])
        except ValueError as exc:
            error = str(exc)
            since = until = None
        before = q.get("before", "")
        if before and not error and not (before.isascii() and before.isprintable()):
            error = "before must be an event id"
        if len(before) > 64:
            error = "before must be an event id (64 characters at most)"
        flt = EventFilter(
            camera=sel["camera"] or None,
            task=sel["task"] or None,
            since_ms=since,
            until_ms=until,
            before_id=before or None if until is not None and not error else None,
        )
        return flt, sel, error

    @route("/events", ["GET"])
    async def events(request: Request) -> Response:
        session = _session(state, request)
        flt, sel, error = event_filter(request.query_params)

        def load() -> Any:
            last = state.feed.last_id()
            last_ack = state.feed.last_ack_id()
            rows = state.feed.recent(flt, limit=EVENTS_PAGE + 1)
            more = len(rows) > EVENTS_PAGE
            rows = state.feed.add_acks(rows[:EVENTS_PAGE])
            cams, tasks = state.feed.names()
            cams = sorted(set(cams) | {c.name for c in state.config.cameras})
            tasks = sorted(set(tasks) | {"fence", "hardhat", "workwear"})
            return last, last_ack, rows, more, cams, tasks

        last, last_ack, rows, more, cams, tasks = await _run(load)
        older = None
        if more:
            # the next page: the same filter with its start as Unix ms (a "1h" typed here
            # must not slide by the time the link is followed), ending at the last row
            # shown: (time_ms, event_id) < its own, the list's order (EventFilter.before_id)
            q = {k: v for k, v in (("camera", sel["camera"]), ("task", sel["task"])) if v}
            if flt.since_ms is not None:
                q["since"] = str(flt.since_ms)
            q.update(until=str(rows[-1]["time_ms"]), before=str(rows[-1]["event_id"]))
            older = "/console/events?" + urllib.parse.urlencode(q)
        return state.render(
            "events.html",
            session,
            page="events",
            events=rows,
            page_size=EVENTS_PAGE,
            older=older,
            paged=flt.before_id is not None,
            last_id=last,
            last_ack_id=last_ack,
            cams=cams,
            tasks=tasks,
            sel=sel,
            error=error,
            live=flt.until_ms is None,
        )

    @route("/events/stream", ["GET"])
    async def events_stream(request: Request) -> Response:
        _session(state, request)
        flt, _sel, _err = event_filter(request.query_params)
        flt = EventFilter(camera=flt.camera, task=flt.task, since_ms=flt.since_ms)
        # Two cursors: events rowid and event_acks rowid. Last-Event-ID is "E" or "E.A"
        # (what this stream sent last); else ?after=E and ?acks=A; a missing one starts
        # at the newest row. Ids carry ".A" when the client gave an ack cursor (events.js
        # does), so a reconnect goes on after the last acknowledgement sent too.
        header = request.headers.get("last-event-id")
        q = request.query_params
        if header:
            start, _dot, ack_start = header.partition(".")
            ack_start = ack_start if _dot else q.get("acks", "")
        else:
            start, ack_start = q.get("after", ""), q.get("acks", "")
        after = _event_id(start) if start else await _run(state.feed.last_id)
        if after is None:
            return _secure(
                JSONResponse(
                    {"error": "Last-Event-ID / after must be an event id (0 to 2**63-1, digits)"},
                    status_code=400,
                )
            )
        ack_after = _event_id(ack_start) if ack_start else await _run(state.feed.last_ack_id)
        if ack_after is None:
            return _secure(
                JSONResponse(
                    {"error": "acks must be an acknowledgement id (0 to 2**63-1, digits)"},
                    status_code=400,
                )
            )
        dotted = bool(ack_start)

        async def gen() -> AsyncIterator[bytes]:
            last, last_ack = after, ack_after

            def sse_id() -> str:
                return f"{last}.{last_ack}" if dotted else str(last)

            yield b"retry: 500\n\n"
            end = time.monotonic() + SSE_MAX_S
            while time.monotonic() < end and not state.closing.is_set():
                try:
                    rows = await _run(functools.partial(state.feed.after, last, flt))
                    rows = await _run(functools.partial(state.feed.add_acks, rows))
                    acks = await _run(functools.partial(state.feed.acks_after, last_ack, flt))
                except EventStoreError as exc:
                    log.warning("console event stream: %s", exc)
                    rows, acks = [], []
                for r in rows:
                    last = r["id"]
                    data = json.dumps(r, separators=(",", ":"), ensure_ascii=False)
                    yield f"id: {sse_id()}\nevent: zone\ndata: {data}\n\n".encode()
                for a in acks:
                    last_ack = a["id"]
                    data = json.dumps(a, separators=(",", ":"), ensure_ascii=False)
                    yield f"id: {sse_id()}\nevent: ack\ndata: {data}\n\n".encode()
                if await request.is_disconnected():
                    return
                await asyncio.sleep(SSE_POLL_S)

        resp = StreamingResponse(gen(), media_type="text/event-stream")
        resp.headers["X-Accel-Buffering"] = "no"
        return _secure(resp)

    @route("/snapshots/{path:path}", ["GET"])
    async def snapshot(request: Request) -> Response:
        _session(state, request)
        p = safe_snapshot_path(state.snapshot_root(), request.path_params["path"])
        if p is None:
            return _secure(Response(status_code=404))
        if request.query_params.get("thumb"):
            data = await _run(lambda: state.thumbs.get(p))
        else:
            data = await _run(p.read_bytes)
        if data is None:
            return _secure(Response(status_code=404))
        resp = Response(data, media_type="image/jpeg")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return _secure(resp, cache=True)

    # -- zone and line editor -------------------------------------------------------------

    def editor_page(kind: Kind) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            session = _session(state, request)
            p = request.path_params
            camera, task, name = p["camera"], p["task"], p["name"]
            editor = state.editor()
            try:
                item = editor.zone(camera, task, name) if kind == "zone" else None
                line = editor.line(camera, task, name) if kind == "line" else None
            except ZoneEditError as exc:
                return state.render(
                    "error.html",
                    session,
                    status=404,
                    page="cameras",
                    title=f"No such {kind}",
                    message=str(exc),
                )
            points: list[tuple[float, float]] | None
            if line is not None:
                points, normalized = line.points, bool(line.normalized)
                limits = (MIN_LINE_POINTS, MAX_LINE_POINTS)
            else:
                assert item is not None
                points, normalized = item.polygon, bool(item.normalized)
                limits = (MIN_AREA_POINTS, MAX_AREA_POINTS)
            pts = None if points is None else [list(q) for q in points]
            cfg: dict[str, Any] = {
                "kind": kind,
                "camera": camera,
                "task": task,
                "name": name,
                "points": pts,
                "normalized": normalized,
                "min_points": limits[0],
                "max_points": limits[1],
                "save_url": f"/console/{kind}s/"
                + "/".join(urllib.parse.quote(v, safe="") for v in (camera, task, name)),
            }
            if kind == "zone":
                cfg |= {"zone": name, "polygon": pts}
            return state.render(
                "zone.html",
                session,
                page="cameras",
                kind=kind,
                camera=camera,
                task=task,
                name=name,
                limits=limits,
                editor_json=json.dumps(cfg),
                can_save=editor.config_path is not None,
                config_path=str(editor.config_path) if editor.config_path else "",
                live=state.backend is not None,
                stamp=int(time.time() * 1000),
            )

        handler.__name__ = f"{kind}_page"
        return handler

    def editor_save(kind: Kind) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            _, body = await _post_json(state, request)
            p = request.path_params
            if not isinstance(body, dict):
                return _secure(JSONResponse({"error": "expected a JSON object"}, status_code=400))
            editor = state.editor()
            save = editor.save if kind == "zone" else editor.save_line

            def run() -> Response:
                try:
                    width = int(body.get("width", 0))
                    height = int(body.get("height", 0))
                    where = {"camera": p["camera"], "task": p["task"], kind: p["name"]}
                    res = save(points=body.get("points"), width=width, height=height, **where)
                except (TypeError, ValueError, OverflowError):  # NaN / Infinity: JSON extension
                    return JSONResponse(
                        {"error": "width and height must be finite integers", "code": 4012},
                        status_code=400,
                    )
                except ZoneEditError as exc:
                    return JSONResponse(
                        {"error": exc.details, "code": exc.code}, status_code=exc.status
                    )
                return JSONResponse(res.to_dict())

            return _secure(cast(Response, await _run(run)))

        handler.__name__ = f"{kind}_save"
        return handler

    kinds: tuple[Kind, ...] = ("zone", "line")
    for kind in kinds:
        path = f"/{kind}s/{{camera}}/{{task}}/{{name}}"
        for method, make in (("GET", editor_page), ("POST", editor_save)):
            handler = make(kind)
            router.add_api_route(
                path, guard(handler), methods=[method], name=f"console_{handler.__name__}"
            )


_INT64_MAX = 2**63 - 1


def _event_id(text: str) -> int | None:
    """An SSE event id (events table row id) from ``Last-Event-ID`` / ``after``, or
    ``None``: only ASCII digits (``str.isdigit`` also takes ``²``), at most SQLite's
    largest integer, checked on the length before ``int()`` parses anything."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= _INT64_MAX else None


def _filter_time(text: str) -> int:
    """An event filter's time (:func:`edge.stream.events.parse_time`) as Unix ms that
    SQLite can compare, else :class:`ValueError` with the reason (never another error:
    ``²`` passes ``isdigit``, 5000 digits exceed ``int()``, ``1e400w`` is infinite)."""
    if not text.isascii() or len(text) > 64:
        raise ValueError(f"time {text[:40]!r} is not a duration (1h, 30m, 2d), a date or Unix time")
    try:
        ms = parse_time(text)
    except OverflowError:
        ms = _INT64_MAX + 1
    if not -_INT64_MAX <= ms <= _INT64_MAX:
        raise ValueError(f"time {text[:40]!r} is out of range")
    return ms


def _counts(c: Mapping[str, Any] | None) -> dict[str, int] | None:
    """``{"in": n, "out": m}`` of a line's counters (``None`` when there are none)."""
    return None if c is None else {"in": int(c.get("in", 0)), "out": int(c.get("out", 0))}


def _login_again(
    state: ConsoleState, request: Request, status: int, error: str, nxt: str
) -> Response:
    """The login page again with ``error`` and a fresh login-form token (and its cookie)."""
    token = _new_login_token()
    resp = state.render(
        "login.html", None, status=status, disabled=False, error=error, next=nxt, login=token
    )
    _set_cookie(request, resp, LOGIN_COOKIE, token, max_age=600, path="/console/login")
    return resp


def _new_login_token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def _set_cookie(
    request: Request, resp: Response, name: str, value: str, *, max_age: int | None, path: str
) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
