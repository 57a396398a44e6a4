"""A client for the three contract APIs, signing exactly like the provider's sample.

The provider's sample builds the body with Python ``json.dumps(params)`` and signs that
same string: ``Sign = md5(AppKey + AppSecret + Timestamp + Path + body)``, lowercase hex,
with ``Timestamp`` the Unix time in milliseconds (13 digits) and ``Path`` the URL path.
This client does the same, so it works against the cloud, another safety-edge gateway,
or this one, by changing only ``base_url``.

Usage::

    with ContractClient(base_url="http://127.0.0.1:8080", app_key=KEY, app_secret=SECRET,
                        service_codes={"hardhat": CODE}) as client:
        answer = client.hat_detect(jpeg_bytes)
        if answer.ok:
            for item in answer.items: ...
        else:
            print(answer.code, answer.details)

Every call answers a typed result: :class:`HatResult` / :class:`FenceResult` on
``code == 0``, :class:`Failure` for a contract failure (any HTTP status carrying the
failure shape, so the REST-status option works too). No answer at all (timeout,
connection refused, a body that is not the contract's) raises :class:`CloudError`.
Timeouts are explicit (:data:`DEFAULT_TIMEOUT`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from edge.closing import Closing
from edge.errors import EdgeError
from edge.tasks.hardhat import HAT_CLASSNAMES
from edge.tasks.workwear import WORKWEAR_CLASSNAMES

__all__ = [
    "API_PATHS",
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_BYTES",
    "MAX_ANSWER_ITEMS",
    "MAX_CLASSNAME_CHARS",
    "CloudError",
    "ContractClient",
    "Failure",
    "FenceItem",
    "FenceLocation",
    "FenceResult",
    "HatItem",
    "HatResult",
    "area_string",
    "parse_fence_answer",
    "parse_hat_answer",
    "sign",
    "signed_headers",
    "ssl_context",
]

Api = Literal["hardhat", "workwear", "fence"]

API_PATHS: Mapping[Api, str] = {
    "hardhat": "SafeHat/base/hat_detect",
    "workwear": "UniformIdentity/base/clothes_detect",
    "fence": "ef-http/electron/fence",
}

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=5.0)
"""Connect 5 s, read/write 60 s (a 50 MB fence batch on a slow gateway), pool 5 s."""

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""Default cap on an answer body (bytes, after content decoding): a contract answer for
32 fence images is a few tens of kB, so 4 MiB is generous; beyond it the answer is a
``protocol`` error and the connection is dropped (a hostile endpoint cannot fill RAM)."""

MAX_ANSWER_ITEMS = 1000
"""Most items (hard-hat/workwear boxes, fence images, or fence locations per image) a
success answer may hold; more is a ``protocol`` error."""

MAX_CLASSNAME_CHARS = 64
"""Longest classname accepted in an answer."""


class CloudError(EdgeError):
    """No contract answer: transport failure, timeout, or a body not in the contract shape.

    ``kind``: ``timeout``, ``connect``, ``tls`` (the server's certificate failed
    verification: not transient, never worth a retry), ``transport`` or ``protocol``
    (not the contract's shape, out-of-range values, or a body over the size cap).
    """

    code = 5000

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def sign(app_key: str, app_secret: str, timestamp: str, path: str, body: str | bytes) -> str:
    """``md5(AppKey + AppSecret + Timestamp + Path + Body)`` as lowercase hex."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    h = hashlib.md5((app_key + app_secret + timestamp + path).encode("utf-8"))
    h.update(raw)
    return h.hexdigest()


def signed_headers(
    *,
    app_key: str,
    app_secret: str,
    path: str,
    body: str | bytes,
    timestamp_ms: int | None = None,
) -> dict[str, str]:
    """The contract headers (``AppKey``, ``Timestamp``, ``Sign``, JSON content type)."""
    ts = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    return {
        "Content-Type": "application/json",
        "AppKey": app_key,
        "Timestamp": ts,
        "Sign": sign(app_key, app_secret, ts, path, body),
    }


def area_string(points: str | Sequence[Sequence[float]]) -> str:
    """``"x1,y1,x2,y2,..."`` from a string (kept) or a sequence of (x, y) points."""
    if isinstance(points, str):
        return points
    return ",".join(f"{float(v):g}" for p in points for v in p)


# -- typed results -------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A contract failure answer: ``code`` != 0, ``details`` says why."""

    code: int
    details: str
    message: str = "error"
    http_status: int = 200

    @property
    def ok(self) -> Literal[False]:
        return False


@dataclass(frozen=True)
class HatItem:
    """One hard-hat/workwear item. ``box`` = (top, left, bottom, right) pixels."""

    box: tuple[int, int, int, int]
    classname: str
    score: float


@dataclass(frozen=True)
class HatResult:
    """A hard-hat/workwear success answer."""

    items: tuple[HatItem, ...]
    code: int = 0

    @property
    def ok(self) -> Literal[True]:
        return True


@dataclass(frozen=True)
class FenceLocation:
    """A target box in pixels."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class FenceItem:
    """The answer for one input image; ``error_code`` set when that image failed."""

    target_num: int
    location: tuple[FenceLocation, ...]
    error_code: int | None = None
    error_details: str | None = None


@dataclass(frozen=True)
class FenceResult:
    """A fence success answer: one item per input image, in order."""

    success: int
    fail: int
    items: tuple[FenceItem, ...]
    code: int = 0

    @property
    def ok(self) -> Literal[True]:
        return True


def _protocol(msg: str) -> CloudError:
    return CloudError(f"answer is not in the contract shape: {msg}", kind="protocol")


_MAX_DETAILS = 512
"""Failure ``details`` longer than this are cut (they end up in logs and outcomes)."""

_MAX_COORD = 2**31 - 1


def _failure(doc: Mapping[str, Any], status: int) -> Failure:
    code = doc.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or code == 0:
        raise _protocol(f"failure code {code!r}")
    details = doc.get("details", "")
    message = doc.get("message", "error")
    return Failure(
        code=code,
        details=str(details)[:_MAX_DETAILS],
        message=str(message)[:_MAX_DETAILS],
        http_status=status,
    )


def _int(v: Any, what: str) -> int:
    """A finite JSON number within the int32 range, as int (floats truncate)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _protocol(f"{what} is {v!r}, not a number")
    if isinstance(v, float) and not math.isfinite(v):
        raise _protocol(f"{what} is {v!r}, not finite")
    if not -_MAX_COORD <= v <= _MAX_COORD:
        raise _protocol(f"{what} is {v!r}, out of range")
    return int(v)


def _items(raw: list[Any], what: str) -> list[Any]:
    if len(raw) > MAX_ANSWER_ITEMS:
        raise _protocol(f"{what} holds {len(raw)} items (at most {MAX_ANSWER_ITEMS})")
    return raw


def _classname(v: Any, what: str, allowed: frozenset[str] | None) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_CLASSNAME_CHARS:
        shown = v[:MAX_CLASSNAME_CHARS] + "..." if isinstance(v, str) else v
        raise _protocol(f"{what} {shown!r} is not a classname of 1..{MAX_CLASSNAME_CHARS} chars")
    if allowed is not None and v not in allowed:
        raise _protocol(f"{what} {v!r} is not one of {sorted(allowed)}")
    return v


HAT_ANSWER_CLASSNAMES = frozenset(HAT_CLASSNAMES)
WORKWEAR_ANSWER_CLASSNAMES = frozenset(WORKWEAR_CLASSNAMES)


def parse_hat_answer(
    doc: Any, status: int = 200, *, classnames: frozenset[str] | None = None
) -> HatResult | Failure:
    """A hard-hat/workwear answer body (parsed JSON) -> typed result.

    A success is checked before it is trusted: at most :data:`MAX_ANSWER_ITEMS` items;
    each ``box`` 4 finite numbers (int32 range) with ``top < bottom`` and
    ``left < right``; ``score`` finite in ``[0, 1]``; ``classname`` a string of
    1..:data:`MAX_CLASSNAME_CHARS` characters and, when ``classnames`` is given, one
    of them. Any violation raises :class:`CloudError` (``protocol``).
    """
    if not isinstance(doc, dict) or "code" not in doc:
        raise _protocol("not a JSON object with a 'code'")
    if doc["code"] != 0:
        return _failure(doc, status)
    raw = doc.get("result", doc.get("data"))
    if not isinstance(raw, list):
        raise _protocol("success without a 'result' list")
    items = []
    for i, it in enumerate(_items(raw, "result")):
        if not isinstance(it, dict):
            raise _protocol(f"result[{i}] is not an object")
        box = it.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise _protocol(f"result[{i}].box is not 4 numbers")
        t, left, b, r = (_int(v, f"result[{i}].box") for v in box)
        if not (t < b and left < r):
            raise _protocol(
                f"result[{i}].box {box!r} is empty or inverted (top<bottom, left<right)"
            )
        score = it.get("score")
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not 0.0 <= float(score) <= 1.0  # False for NaN
        ):
            raise _protocol(f"result[{i}].score is {score!r}, not a number in [0, 1]")
        name = _classname(it.get("classname"), f"result[{i}].classname", classnames)
        items.append(HatItem((t, left, b, r), name, float(score)))
    return HatResult(items=tuple(items))


def _location(loc: Any, what: str) -> FenceLocation:
    if not isinstance(loc, dict):
        raise _protocol(f"{what} is not an object")
    out = FenceLocation(
        left=_int(loc.get("left"), f"{what}.left"),
        top=_int(loc.get("top"), f"{what}.top"),
        width=_int(loc.get("width"), f"{what}.width"),
        height=_int(loc.get("height"), f"{what}.height"),
    )
    if out.width <= 0 or out.height <= 0:
        raise _protocol(f"{what} has width {out.width}, height {out.height} (must be > 0)")
    return out


def parse_fence_answer(doc: Any, status: int = 200) -> FenceResult | Failure:
    """A fence answer body (parsed JSON) -> typed result.

    A success is checked: at most :data:`MAX_ANSWER_ITEMS` images and locations per
    image; each location 4 finite numbers (int32 range) with ``width, height > 0``;
    ``target_num`` >= 0. Any violation raises :class:`CloudError` (``protocol``).
    """
    if not isinstance(doc, dict) or "code" not in doc:
        raise _protocol("not a JSON object with a 'code'")
    if doc["code"] != 0:
        return _failure(doc, status)
    msg = doc.get("message")
    raw = doc.get("result")
    if not isinstance(msg, dict) or not isinstance(raw, list):
        raise _protocol("fence success needs a 'message' object and a 'result' list")
    items = []
    for i, it in enumerate(_items(raw, "result")):
        if not isinstance(it, dict) or not isinstance(it.get("location", []), list):
            raise _protocol(f"result[{i}] is not a fence item")
        raw_locs = _items(it.get("location", []), f"result[{i}].location")
        locs = tuple(_location(loc, f"result[{i}].location[{j}]") for j, loc in enumerate(raw_locs))
        target_num = _int(it.get("target_num", len(locs)), f"result[{i}].target_num")
        if target_num < 0:
            raise _protocol(f"result[{i}].target_num is {target_num}")
        err = it.get("error")
        items.append(
            FenceItem(
                target_num=target_num,
                location=locs,
                error_code=_int(err.get("code"), "error.code") if isinstance(err, dict) else None,
                error_details=(
                    str(err.get("details", ""))[:_MAX_DETAILS] if isinstance(err, dict) else None
                ),
            )
        )
    return FenceResult(
        success=_int(msg.get("success", 0), "message.success"),
        fail=_int(msg.get("fail", 0), "message.fail"),
        items=tuple(items),
    )


# -- the client ------------------------------------------------------------------------


class ContractClient(Closing):
    """Signed calls to the three contract APIs (synchronous, httpx).

    Keyword-only; a context manager; :meth:`close` is idempotent.

    Args:
        base_url: scheme, host, port and optional path prefix, e.g.
            ``"http://127.0.0.1:8080"``; the signed path is the full URL path.
        app_key, app_secret: the application's credentials.
        service_codes: ``{api: service_code}`` for the granted APIs.
        timeout: httpx timeout (default :data:`DEFAULT_TIMEOUT`).
        fence_sample_path: sign fence calls over ``/v1/aiop/api/{code}/electron/fence``
            like the provider's fence sample does (the server must enable
            ``api.accept_fence_sample_path``).
        transport: an httpx transport (e.g. with retries); default plain.
        verify: TLS verification: ``True`` (system CAs), an :class:`ssl.SSLContext`
            (e.g. :func:`ssl_context` for a private CA) or ``False`` (tests only).
            Ignored when ``transport`` is given.
        max_answer_bytes: cap on an answer body (default :data:`MAX_ANSWER_BYTES`);
            a longer body is a ``protocol`` error and is not read further.
    """

    def __init__(
        self,
        *,
        base_url: str,
        app_key: str,
        app_secret: str,
        service_codes: Mapping[str, str],
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        fence_sample_path: bool = False,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        if max_answer_bytes < 1:
            raise ValueError(f"max_answer_bytes must be >= 1, not {max_answer_bytes}")
        self._base = base_url.rstrip("/")
        self._prefix = httpx.URL(self._base).path.rstrip("/")
        self._key = app_key
        self._secret = app_secret
        self._codes = dict(service_codes)
        self._fence_sample = fence_sample_path
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._max_bytes = max_answer_bytes
        self._http = httpx.Client(timeout=self._timeout, transport=transport, verify=verify)
        self._closed = False

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        if not self._closed:
            self._closed = True
            self._http.close()

    def path(self, api: Api) -> str:
        """The URL path of ``api`` for this client's service code."""
        code = self._codes.get(api)
        if code is None:
            raise ValueError(f"no service code for the {api} API (have: {sorted(self._codes)})")
        return f"{self._prefix}/v1/aiop/api/{code}/{API_PATHS[api]}"

    def call(
        self,
        api: Api,
        params: Mapping[str, Any],
        *,
        timestamp_ms: int | None = None,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[int, Any]:
        """POST ``json.dumps(params)`` signed; returns (HTTP status, parsed JSON body).

        The answer is streamed: at most ``max_answer_bytes`` are read, and between chunks
        the call stops when ``deadline`` (a :func:`time.monotonic` instant for the whole
        exchange) has passed or ``stop`` is set. With a deadline, each timeout of the
        request (connect, write, every read) is at most the time left when it starts, so
        a server that drips bytes holds the call no longer than about the deadline plus
        one read timeout.

        Raises:
            CloudError: ``timeout`` (no answer in time, deadline passed or stopped),
                ``connect``, ``tls``, ``transport`` or ``protocol`` (not JSON, or a body
                over the cap).
        """
        path = self.path(api)
        body = json.dumps(params)
        signed_path = path
        if api == "fence" and self._fence_sample:
            signed_path = f"{self._prefix}/v1/aiop/api/{self._codes[api]}/electron/fence"
        headers = signed_headers(
            app_key=self._key,
            app_secret=self._secret,
            path=signed_path,
            body=body,
            timestamp_ms=timestamp_ms,
        )
        url = self._base + path[len(self._prefix) :]
        timeout = self._timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CloudError(f"{api}: no time left before the deadline", kind="timeout")
            timeout = httpx.Timeout(
                connect=_at_most(timeout.connect, left),
                read=_at_most(timeout.read, left),
                write=_at_most(timeout.write, left),
                pool=_at_most(timeout.pool, left),
            )
        try:
            with self._http.stream(
                "POST", url, content=body.encode("utf-8"), headers=headers, timeout=timeout
            ) as resp:
                raw = self._read_capped(api, resp, deadline, stop)
                status = resp.status_code
        except httpx.TimeoutException as exc:
            raise CloudError(
                f"{api}: no answer from {self._base} in time ({exc!r})", kind="timeout"
            ) from exc
        except httpx.ConnectError as exc:
            if _cert_failure(exc):
                raise CloudError(
                    f"{api}: TLS certificate of {self._base} not trusted: {exc}", kind="tls"
                ) from exc
            raise CloudError(
                f"{api}: cannot connect to {self._base}: {exc}", kind="connect"
            ) from exc
        except httpx.HTTPError as exc:
            if _cert_failure(exc):
                raise CloudError(
                    f"{api}: TLS certificate of {self._base} not trusted: {exc}", kind="tls"
                ) from exc
            raise CloudError(f"{api}: transport error: {exc!r}", kind="transport") from exc
        try:
            doc = json.loads(raw)
        except ValueError:
            raise _protocol(f"HTTP {status} with a non-JSON body ({len(raw)} bytes)") from None
        return status, doc

    def _read_capped(
        self,
        api: str,
        resp: httpx.Response,
        deadline: float | None,
        stop: threading.Event | None,
    ) -> bytes:
        """The body of ``resp``, at most ``max_answer_bytes``, stopping at the deadline."""
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise _protocol(
                f"HTTP {resp.status_code} announces {int(declared)} bytes "
                f"(at most {self._max_bytes})"
            )
        buf = bytearray()
        for chunk in resp.iter_bytes():  # each piece as it arrives (no re-buffering)
            buf += chunk
            if len(buf) > self._max_bytes:
                raise _protocol(
                    f"HTTP {resp.status_code} body over {self._max_bytes} bytes (stopped reading)"
                )
            if stop is not None and stop.is_set():
                raise CloudError(f"{api}: stopped while reading the answer", kind="timeout")
            if deadline is not None and time.monotonic() >= deadline:
                raise CloudError(
                    f"{api}: answer from {self._base} still arriving at the deadline "
                    f"({len(buf)} bytes read)",
                    kind="timeout",
                )
        return bytes(buf)

    def hat_detect(
        self,
        image: bytes,
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> HatResult | Failure:
        """Hard hats in one png/jpg/bmp image (file bytes); classnames must be the
        contract's hat classnames. ``deadline``/``stop``: see :meth:`call`."""
        return self._image_answer("hardhat", image, HAT_ANSWER_CLASSNAMES, deadline, stop)

    def clothes_detect(
        self,
        image: bytes,
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> HatResult | Failure:
        """Workwear in one png/jpg/bmp image (file bytes); classnames must be the
        contract's workwear classnames. ``deadline``/``stop``: see :meth:`call`."""
        return self._image_answer("workwear", image, WORKWEAR_ANSWER_CLASSNAMES, deadline, stop)

    def _image_answer(
        self,
        api: Api,
        image: bytes,
        classnames: frozenset[str],
        deadline: float | None,
        stop: threading.Event | None,
    ) -> HatResult | Failure:
        """One image to the hard-hat or workwear API; the answer checked against
        ``classnames``."""
        status, doc = self.call(
            api,
            {"image": base64.b64encode(image).decode("ascii")},
            deadline=deadline,
            stop=stop,
        )
        return parse_hat_answer(doc, status, classnames=classnames)

    def fence(
        self,
        images: Sequence[bytes],
        area: str | Sequence[Sequence[float]],
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> FenceResult | Failure:
        """People/vehicles inside ``area`` (4..9 points) in each of 1..32 images."""
        params = {
            "image": [base64.b64encode(im).decode("ascii") for im in images],
            "area": area_string(area),
        }
        status, doc = self.call("fence", params, deadline=deadline, stop=stop)
        return parse_fence_answer(doc, status)


def _at_most(value: float | None, limit: float) -> float:
    """``min(value, limit)``; ``None`` (no timeout) counts as infinite."""
    return limit if value is None else min(value, limit)


def _cert_failure(exc: BaseException) -> bool:
    """Is an :class:`ssl.SSLCertVerificationError` among ``exc``'s causes/contexts?"""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return False


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system CAs, plus ``ca_file`` (PEM) when given."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx
