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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from edge.closing import Closing
from edge.errors import EdgeError

__all__ = [
    "API_PATHS",
    "DEFAULT_TIMEOUT",
    "CloudError",
    "ContractClient",
    "Failure",
    "FenceItem",
    "FenceLocation",
    "FenceResult",
    "HatItem",
    "HatResult",
    "area_string",
    "sign",
    "signed_headers",
]

Api = Literal["hardhat", "workwear", "fence"]

API_PATHS: Mapping[Api, str] = {
    "hardhat": "SafeHat/base/hat_detect",
    "workwear": "UniformIdentity/base/clothes_detect",
    "fence": "ef-http/electron/fence",
}

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=5.0)
"""Connect 5 s, read/write 60 s (a 50 MB fence batch on a slow gateway), pool 5 s."""


class CloudError(EdgeError):
    """No contract answer: transport failure, timeout, or a body not in the contract shape.

    ``kind``: ``timeout``, ``connect``, ``transport`` or ``protocol``.
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


def _failure(doc: Mapping[str, Any], status: int) -> Failure:
    code = doc.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or code == 0:
        raise _protocol(f"failure code {code!r}")
    details = doc.get("details", "")
    message = doc.get("message", "error")
    return Failure(
        code=code,
        details=str(details),
        message=str(message),
        http_status=status,
    )


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _protocol(f"{what} is {v!r}, not a number")
    return int(v)


def parse_hat_answer(doc: Any, status: int = 200) -> HatResult | Failure:
    """A hard-hat/workwear answer body (parsed JSON) -> typed result."""
    if not isinstance(doc, dict) or "code" not in doc:
        raise _protocol("not a JSON object with a 'code'")
    if doc["code"] != 0:
        return _failure(doc, status)
    raw = doc.get("result", doc.get("data"))
    if not isinstance(raw, list):
        raise _protocol("success without a 'result' list")
    items = []
    for i, it in enumerate(raw):
        if not isinstance(it, dict):
            raise _protocol(f"result[{i}] is not an object")
        box = it.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise _protocol(f"result[{i}].box is not 4 numbers")
        t, left, b, r = (_int(v, f"result[{i}].box") for v in box)
        score = it.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _protocol(f"result[{i}].score is {score!r}")
        items.append(HatItem((t, left, b, r), str(it.get("classname", "")), float(score)))
    return HatResult(items=tuple(items))


def parse_fence_answer(doc: Any, status: int = 200) -> FenceResult | Failure:
    """A fence answer body (parsed JSON) -> typed result."""
    if not isinstance(doc, dict) or "code" not in doc:
        raise _protocol("not a JSON object with a 'code'")
    if doc["code"] != 0:
        return _failure(doc, status)
    msg = doc.get("message")
    raw = doc.get("result")
    if not isinstance(msg, dict) or not isinstance(raw, list):
        raise _protocol("fence success needs a 'message' object and a 'result' list")
    items = []
    for i, it in enumerate(raw):
        if not isinstance(it, dict) or not isinstance(it.get("location", []), list):
            raise _protocol(f"result[{i}] is not a fence item")
        locs = tuple(
            FenceLocation(
                left=_int(loc.get("left"), "left"),
                top=_int(loc.get("top"), "top"),
                width=_int(loc.get("width"), "width"),
                height=_int(loc.get("height"), "height"),
            )
            for loc in it.get("location", [])
            if isinstance(loc, dict)
        )
        err = it.get("error")
        items.append(
            FenceItem(
                target_num=_int(it.get("target_num", len(locs)), f"result[{i}].target_num"),
                location=locs,
                error_code=_int(err.get("code"), "error.code") if isinstance(err, dict) else None,
                error_details=str(err.get("details", "")) if isinstance(err, dict) else None,
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
    ) -> None:
        self._base = base_url.rstrip("/")
        self._prefix = httpx.URL(self._base).path.rstrip("/")
        self._key = app_key
        self._secret = app_secret
        self._codes = dict(service_codes)
        self._fence_sample = fence_sample_path
        self._http = httpx.Client(timeout=timeout, transport=transport)
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
        self, api: Api, params: Mapping[str, Any], *, timestamp_ms: int | None = None
    ) -> tuple[int, Any]:
        """POST ``json.dumps(params)`` signed; returns (HTTP status, parsed JSON body)."""
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
        try:
            resp = self._http.post(url, content=body.encode("utf-8"), headers=headers)
        except httpx.TimeoutException as exc:
            raise CloudError(
                f"{api}: no answer from {self._base} in time ({exc!r})", kind="timeout"
            ) from exc
        except httpx.ConnectError as exc:
            raise CloudError(
                f"{api}: cannot connect to {self._base}: {exc}", kind="connect"
            ) from exc
        except httpx.HTTPError as exc:
            raise CloudError(f"{api}: transport error: {exc!r}", kind="transport") from exc
        try:
            doc = resp.json()
        except ValueError:
            raise _protocol(
                f"HTTP {resp.status_code} with a non-JSON body ({len(resp.content)} bytes)"
            ) from None
        return resp.status_code, doc

    def hat_detect(self, image: bytes) -> HatResult | Failure:
        """Hard hats in one png/jpg/bmp image (file bytes)."""
        status, doc = self.call("hardhat", {"image": base64.b64encode(image).decode("ascii")})
        return parse_hat_answer(doc, status)

    def clothes_detect(self, image: bytes) -> HatResult | Failure:
        """Workwear in one png/jpg/bmp image (file bytes)."""
        status, doc = self.call("workwear", {"image": base64.b64encode(image).decode("ascii")})
        return parse_hat_answer(doc, status)

    def fence(
        self, images: Sequence[bytes], area: str | Sequence[Sequence[float]]
    ) -> FenceResult | Failure:
        """People/vehicles inside ``area`` (4..9 points) in each of 1..32 images."""
        params = {
            "image": [base64.b64encode(im).decode("ascii") for im in images],
            "area": area_string(area),
        }
        status, doc = self.call("fence", params)
        return parse_fence_answer(doc, status)
