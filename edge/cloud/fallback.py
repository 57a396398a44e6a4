"""The cloud fallback: uncertain local results ask an endpoint that speaks the contract.

When a hard-hat/workwear/fence result holds a box scored inside the *uncertain band*
``[low, high)`` (or the local model failed), :class:`FallbackClient` sends the image (or
one crop around the uncertain boxes) to a configured endpoint -- the provider's cloud,
or another safety-edge gateway with a bigger model -- signed per the contract with
:class:`~edge.cloud.client.ContractClient`, and merges the answer.

Merge rule (:func:`merge_boxes`), the same for all three APIs:

- local boxes outside the band are *sure* and stay (``source = "local"``);
- local boxes inside the band are dropped: the remote answer replaces them;
- every remote box is added (``source = "cloud"``) unless it duplicates a sure local box
  (IoU >= ``match_iou``); so the cloud can also confirm, relabel, move or delete
  the uncertain boxes, and add boxes the local model missed;
- when the local model failed, the remote answer is the whole result.

``send: crop`` sends one crop: the union of the uncertain boxes, grown by
``crop_margin`` x its size on each side and to at least ``crop_min_size`` pixels,
clipped to the image (:func:`crop_window`). Remote boxes are shifted back into image
coordinates and compared with the sure local boxes clipped to the crop (a person cut by
the crop border is not counted twice). A fence crop is sent with the whole crop as the
area and the gateway's own zone rule (anchor/overlap) is applied to the boxes mapped back;
``send: image`` sends the request's polygon and the remote's zone decision stands.
The fence contract carries no scores or classes: cloud fence boxes get score
:data:`CLOUD_FENCE_SCORE` and the class of the local box they overlap most (else
``default_class_id``).

Bounds (the fallback never holds the caller past its deadline):

- ``deadline_s`` for the whole call, retries included, and never past the caller's own
  ``timeout_s``; the HTTP exchange runs on a small pool (``max_concurrent`` threads) and
  the caller waits on it with that timeout, so even a server that drips bytes cannot hold
  the caller. Beyond ``max_concurrent`` calls in flight a call answers ``busy`` at once.
- connect timeout ``connect_timeout_s``; read/write timeouts ``deadline_s``; every one
  capped to the time left before the call's deadline. The answer is streamed: the pool
  thread stops reading when the deadline passes or :meth:`FallbackClient.close` is
  called (checked between chunks), and at
  :data:`~edge.cloud.client.MAX_ANSWER_BYTES` (an error of kind ``protocol``).
- answers are checked before the merge (:func:`~edge.cloud.client.parse_hat_answer`):
  finite scores in [0, 1], non-empty boxes, contract classnames, at most
  :data:`~edge.cloud.client.MAX_ANSWER_ITEMS` items; otherwise ``protocol``.
- at most ``max_retries`` retries, with full-jitter exponential backoff
  (``uniform(0, min(backoff_max_s, backoff_base_s * 2**n))``), only for connection
  failures, dropped connections and 5000/5001 answers; never for 4xxx answers,
  timeouts or answers that are not the contract's; never past the deadline; the
  half-open probe is never retried.
- a :class:`~edge.cloud.breaker.CircuitBreaker`: a call fails (for the breaker) when it
  ends without an answer, with a 5xxx answer, or with 4000/4010/4029 (the endpoint is
  unusable: wrong path, credentials or quota); other 4xxx answers are about this one
  image, so they count as the endpoint working.
- a :class:`~edge.cloud.budget.DailyBudget`: every HTTP request sent (retries too)
  draws one; none left = nothing is sent.

When the cloud cannot help, the local result is returned unchanged with
:class:`Outcome` saying why: ``breaker_open``, ``budget_exhausted``, ``busy``,
``timeout`` or ``error`` (``detail`` names the kind or the contract code).
``not_needed`` means no box was uncertain; ``cloud`` means the answer was merged.

Thread-safety: the ``review_*`` methods may be called from several threads at once.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import httpx
import numpy as np
import numpy.typing as npt

from edge.api.contract import CODES, EXTENSION_CODES
from edge.closing import Closing
from edge.cloud.breaker import CircuitBreaker, Ticket
from edge.cloud.budget import BudgetError, DailyBudget, budget_path
from edge.cloud.client import (
    CloudError,
    ContractClient,
    Failure,
    FenceResult,
    HatResult,
    area_string,
    ssl_context,
)
from edge.config import FallbackConfig
from edge.errors import ConfigError
from edge.tasks.fence import AnchorMode, inside_mask
from edge.tasks.hardhat import ResultItem
from edge.types import BoolArray, Detections, FloatArray

__all__ = [
    "CLOUD_FENCE_SCORE",
    "FallbackClient",
    "FallbackStatus",
    "FenceReview",
    "HatReview",
    "Outcome",
    "Source",
    "crop_window",
    "iou_matrix",
    "merge_boxes",
    "prometheus_text",
    "uncertain_mask",
]

log = logging.getLogger("edge.cloud")

FallbackStatus = Literal[
    "not_needed", "cloud", "breaker_open", "budget_exhausted", "busy", "timeout", "error"
]
STATUSES: tuple[FallbackStatus, ...] = (
    "not_needed",
    "cloud",
    "breaker_open",
    "budget_exhausted",
    "busy",
    "timeout",
    "error",
)
Source = Literal["local", "cloud"]
HatApi = Literal["hardhat", "workwear"]

CLOUD_FENCE_SCORE = 1.0
"""Score given to fence boxes decided by the cloud (the fence contract carries none)."""

_ENDPOINT_CODES = frozenset({4000, 4010, 4029})
"""4xxx answers that say the endpoint is unusable for us (path, credentials, quota)."""
_RETRY_CODES = frozenset({5000, 5001})
_RETRY_KINDS = frozenset({"connect", "transport"})
_MAX_REMOTE_IMAGE = 5 * 1024 * 1024


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the fallback did for one result.

    ``status``: see :data:`FallbackStatus`; ``detail``: the cause for the failing ones
    (``"connect: ..."``, ``"4010: ..."``); ``requests``: HTTP requests sent (retries
    included); ``elapsed_ms``: wall time spent in the fallback.
    """

    status: FallbackStatus
    detail: str = ""
    requests: int = 0
    elapsed_ms: float = 0.0

    @property
    def used(self) -> bool:
        """True when the cloud's answer was merged."""
        return self.status == "cloud"

    def to_dict(self) -> dict[str, Any]:
        """``{"status", "detail", "requests", "ms"}`` (JSON-ready)."""
        return {
            "status": self.status,
            "detail": self.detail,
            "requests": self.requests,
            "ms": round(self.elapsed_ms, 1),
        }


@dataclass(frozen=True)
class HatReview:
    """A reviewed hard-hat/workwear result: contract items, highest score first, with
    the source of each (parallel list)."""

    items: list[ResultItem]
    sources: list[Source]
    outcome: Outcome

    def annotated(self) -> list[dict[str, Any]]:
        """The items with an extra ``"source"`` key (the opt-in, non-contract form)."""
        return [{**it, "source": src} for it, src in zip(self.items, self.sources, strict=True)]


@dataclass(frozen=True)
class FenceReview:
    """A reviewed fence result: targets inside the area (highest score first) and the
    source of each (parallel list)."""

    dets: Detections
    sources: list[Source]
    outcome: Outcome

    def locations(self, *, with_source: bool = False) -> list[dict[str, Any]]:
        """The contract's ``location`` list (``source`` added per box when asked)."""
        locs: list[dict[str, Any]] = list(self.dets.to_ltwh_dicts())
        if with_source:
            locs = [{**loc, "source": s} for loc, s in zip(locs, self.sources, strict=True)]
        return locs


# -- pure helpers -------------------------------------------------------------------------


def uncertain_mask(scores: npt.ArrayLike, band: tuple[float, float]) -> BoolArray:
    """(N,) bool: ``low <= score < high``."""
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    lo, hi = band
    return np.asarray((s >= np.float32(lo)) & (s < np.float32(hi)), dtype=np.bool_)


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(N, M) IoU of ``a`` (N,4) and ``b`` (M,4) xyxy boxes; 0 for empty unions."""
    aa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    bb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(aa) == 0 or len(bb) == 0:
        return np.zeros((len(aa), len(bb)), np.float64)
    lt = np.maximum(aa[:, None, :2], bb[None, :, :2])
    rb = np.minimum(aa[:, None, 2:], bb[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(aa[:, 2:] - aa[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(bb[:, 2:] - bb[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    out: npt.NDArray[np.float64] = np.divide(
        inter, union, out=np.zeros_like(inter), where=union > 0
    )
    return out


def crop_window(
    xyxy: npt.ArrayLike, width: int, height: int, *, margin: float, min_size: int
) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, x1, y1)`` (ints, x1/y1 exclusive) around boxes ``xyxy`` (K,4).

    The union of the boxes, grown by ``margin`` x its width/height on each side, then to
    at least ``min_size`` per side (centred, as far as the image allows), clipped to
    ``[0, width] x [0, height]``. Never empty for K >= 1 and a non-empty image.
    """
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        raise ValueError("crop_window needs at least one box")
    x0, y0 = float(b[:, 0].min()), float(b[:, 1].min())
    x1, y1 = float(b[:, 2].max()), float(b[:, 3].max())

    def side(lo: float, hi: float, limit: int) -> tuple[int, int]:
        size = max(hi - lo, 1.0)
        lo, hi = lo - margin * size, hi + margin * size
        want = min(max(hi - lo, float(min_size)), float(limit))
        centre = (lo + hi) / 2.0
        lo = min(max(centre - want / 2.0, 0.0), limit - want)
        a = int(np.floor(lo))
        z = int(np.ceil(lo + want))
        a, z = max(a, 0), min(z, limit)
        return a, max(z, min(a + 1, limit))

    cx0, cx1 = side(x0, x1, width)
    cy0, cy1 = side(y0, y1, height)
    return cx0, cy0, cx1, cy1


def merge_boxes(
    local_xyxy: npt.ArrayLike,
    local_scores: npt.ArrayLike,
    remote_xyxy: npt.ArrayLike,
    *,
    band: tuple[float, float],
    match_iou: float,
    window: tuple[int, int, int, int] | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Which local and which remote boxes make the merged result (see the module doc).

    Args:
        local_xyxy, local_scores: (N,4) / (N,) local boxes (image pixels) and scores.
        remote_xyxy: (M,4) remote boxes, already in image pixels.
        band: the uncertain band ``[low, high)``.
        match_iou: a remote box with IoU >= this against a sure local box duplicates it.
        window: the crop ``(x0, y0, x1, y1)`` the remote saw; sure local boxes are
            clipped to it before matching.

    Returns:
        ``(keep_local, keep_remote)``: indices into the local and the remote boxes.
    """
    lx = np.asarray(local_xyxy, dtype=np.float64).reshape(-1, 4)
    rx = np.asarray(remote_xyxy, dtype=np.float64).reshape(-1, 4)
    sure = np.flatnonzero(~uncertain_mask(local_scores, band))
    ref = lx[sure]
    if window is not None and len(ref):
        x0, y0, x1, y1 = window
        ref = ref.copy()
        ref[:, [0, 2]] = np.clip(ref[:, [0, 2]], x0, x1)
        ref[:, [1, 3]] = np.clip(ref[:, [1, 3]], y0, y1)
    if len(rx) and len(ref):
        dup = (iou_matrix(rx, ref) >= match_iou).any(axis=1)
    else:
        dup = np.zeros((len(rx),), np.bool_)
    return sure.astype(np.intp), np.flatnonzero(~dup).astype(np.intp)


def _tlbr_to_xyxy(boxes: Sequence[Sequence[int]]) -> FloatArray:
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.ascontiguousarray(arr[:, [1, 0, 3, 2]])


def _encode_jpeg(image_bgr: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("could not encode the image as JPEG")
    return bytes(buf.tobytes())


def _visible(xyxy: FloatArray) -> BoolArray:
    """(N,) bool: boxes (N,4) xyxy with a positive area (after clipping to the image)."""
    return np.asarray((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]), dtype=np.bool_)


def _clear_text_remote(base_url: str) -> bool:
    """``http://`` to a host that is not ``localhost`` or a loopback address."""
    url = httpx.URL(base_url)
    if url.scheme != "http":
        return False
    host = url.host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _is_jpeg_or_png(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"


# -- the client ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Call:
    """One logical fallback call, shared by the waiting caller and the pool thread."""

    ticket: Ticket
    deadline: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    requests: int = 0


@dataclass
class _Result:
    status: FallbackStatus
    detail: str
    answer: HatResult | FenceResult | None = None


_KNOWN_CODES = frozenset(
    {code for table in CODES.values() for code in table.values()} | set(EXTENSION_CODES)
)
"""Every code the contract defines: the failure counter's label values for answers."""


def _code_kind(code: int) -> str:
    """The failure-counter kind of a contract failure answer: the code itself when the
    contract defines it, else ``other_code``. The code comes from the endpoint, so a
    misbehaving proxy answering a new number each time must not add a metric series (and
    a dict entry) per request for the life of the process."""
    if code in _KNOWN_CODES:
        return str(code)
    log.debug("cloud answered a code outside the contract: %d", code)
    return "other_code"


class FallbackClient(Closing):
    """Asks the configured endpoint about uncertain results, within bounds.

    Keyword-only; a context manager; :meth:`close` is idempotent.

    Args:
        config: the ``fallback`` section (``enabled`` is not checked here: building
            one means using it).
        data_dir: where the budget file lives (``<data_dir>/cloud-fallback.sqlite3``).
        transport: an httpx transport for the contract client (tests, proxies).
        rng: the backoff jitter source.

    Raises:
        ConfigError: base URL, credentials or service codes missing, or ``ca_file``
            cannot be loaded.
        BudgetError: the budget file cannot be opened.

    Logs one WARNING when ``base_url`` is ``http://`` to a host that is not loopback
    (images and the signed headers would cross the network in clear).
    """

    def __init__(
        self,
        *,
        config: FallbackConfig,
        data_dir: str | Path,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        base_url, key, secret = config.credentials()
        try:
            verify = ssl_context(config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"fallback.ca_file {config.ca_file!r} cannot be loaded: {exc}"
            ) from exc
        if _clear_text_remote(base_url):
            log.warning(
                "cloud fallback: base_url %s is plain http to a non-loopback host; images and "
                "signed requests cross the network unencrypted (use https)",
                base_url,
            )
        self.config = config
        self._clock = time.monotonic
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker_failures,
            cooldown_s=config.breaker_cooldown_s,
        )
        self.budget = DailyBudget(
            path=budget_path(data_dir), limit=config.daily_budget, day=config.budget_day
        )
        try:
            self.client = ContractClient(
                base_url=base_url,
                app_key=key,
                app_secret=secret,
                service_codes={str(k): v for k, v in config.service_codes.items()},
                timeout=httpx.Timeout(
                    connect=config.connect_timeout_s,
                    read=config.deadline_s,
                    write=config.deadline_s,
                    pool=config.connect_timeout_s,
                ),
                fence_sample_path=config.fence_sample_path,
                transport=transport,
                verify=verify,
            )
        except BaseException:
            self.budget.close()
            raise
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_concurrent, thread_name_prefix="edge-cloud"
        )
        self._lock = threading.Lock()
        self._inflight = 0
        self._calls: set[_Call] = set()
        self._closed = False
        self._counts: dict[str, int] = {"reviews": 0, "calls": 0, "requests": 0, "retries": 0}
        self._outcomes: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self._failures: dict[str, int] = {}
        self._last_state = "closed"
        self._budget_warned = ""

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the calls in flight (retries, and answers being read: checked between
        chunks), wait for them (a read blocked on a silent server ends at its timeout,
        at most the call's remaining deadline), close the HTTP client and the budget
        file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls)
        for c in calls:
            c.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
        self.budget.close()

    # -- policy ---------------------------------------------------------------------------

    def handles(self, api: str) -> bool:
        """True when ``api`` has a remote service code (the fallback applies to it)."""
        return api in self.config.service_codes

    def is_uncertain(self, scores: npt.ArrayLike) -> bool:
        """Does any score fall in the uncertain band?"""
        return bool(uncertain_mask(scores, self.config.uncertain_band).any())

    def _wanted(self, api: str, have_local: bool, unsure: BoolArray) -> bool:
        if not self.handles(api):
            return False
        return bool(unsure.any()) if have_local else self.config.on_model_error

    # -- hard-hat / workwear --------------------------------------------------------------

    def review_hat(
        self,
        api: HatApi,
        *,
        image_bgr: npt.NDArray[np.uint8],
        local: Sequence[ResultItem] | None,
        image_file: bytes | None = None,
        timeout_s: float | None = None,
    ) -> HatReview:
        """Review a hard-hat/workwear result.

        Args:
            api: ``"hardhat"`` or ``"workwear"``.
            image_bgr: (H, W, 3) uint8 BGR, the image the local result is about.
            local: the local contract items, or ``None`` when the local model failed.
            image_file: the original file bytes (sent as is in ``image`` mode when JPEG
                or PNG and at most 5 MiB; else the image is encoded as JPEG).
            timeout_s: the caller's remaining time; the call never takes longer than
                ``min(timeout_s, deadline_s)`` (plus scheduling noise).

        Returns:
            the merged items; when the cloud could not help, ``local`` unchanged (an
            empty list when ``local`` is ``None`` -- check ``outcome.used``).
        """
        start = self._clock()
        loc = list(local or [])
        self._count("reviews")
        sources: list[Source] = ["local"] * len(loc)
        scores = np.asarray([it["score"] for it in loc], np.float32)
        unsure = uncertain_mask(scores, self.config.uncertain_band)
        if not self._wanted(api, local is not None, unsure):
            return HatReview(loc, sources, self._finish("not_needed", "", start, 0))
        h, w = image_bgr.shape[:2]
        window: tuple[int, int, int, int] | None = None
        if self.config.send == "crop" and local is not None:
            lx = _tlbr_to_xyxy([it["box"] for it in loc])
            window = crop_window(
                lx[unsure], w, h, margin=self.config.crop_margin, min_size=self.config.crop_min_size
            )
            x0, y0, x1, y1 = window
            payload = _encode_jpeg(image_bgr[y0:y1, x0:x1], self.config.jpeg_quality)
        else:
            payload = self._image_payload(image_bgr, image_file)

        def send(call: _Call) -> HatResult | Failure:
            if api == "hardhat":
                return self.client.hat_detect(payload, deadline=call.deadline, stop=call.stop)
            return self.client.clothes_detect(payload, deadline=call.deadline, stop=call.stop)

        res, requests = self._call(send, timeout_s, start)
        if res.status != "cloud" or not isinstance(res.answer, HatResult):
            return HatReview(loc, sources, self._finish(res.status, res.detail, start, requests))
        remote = res.answer.items
        rxyxy = _tlbr_to_xyxy([r.box for r in remote])
        if window is not None:
            rxyxy = rxyxy + np.asarray(window[:2] * 2, np.float32)
        rxyxy[:, [0, 2]] = np.clip(rxyxy[:, [0, 2]], 0, w)
        rxyxy[:, [1, 3]] = np.clip(rxyxy[:, [1, 3]], 0, h)
        visible = _visible(rxyxy)  # a box wholly outside the image is nothing
        remote = tuple(r for r, v in zip(remote, visible.tolist(), strict=True) if v)
        rxyxy = rxyxy[visible]
        keep_l, keep_r = merge_boxes(
            _tlbr_to_xyxy([it["box"] for it in loc]),
            scores,
            rxyxy,
            band=self.config.uncertain_band,
            match_iou=self.config.match_iou,
            window=window,
        )
        merged: list[tuple[ResultItem, Source]] = [(loc[int(i)], "local") for i in keep_l]
        for j in keep_r:
            x0f, y0f, x1f, y1f = (round(float(v)) for v in rxyxy[int(j)])
            item: ResultItem = {
                "box": [y0f, x0f, y1f, x1f],
                "classname": remote[int(j)].classname,
                "score": round(float(remote[int(j)].score), 4),
            }
            merged.append((item, "cloud"))
        merged.sort(key=lambda p: -p[0]["score"])
        return HatReview(
            [m[0] for m in merged],
            [m[1] for m in merged],
            self._finish("cloud", "", start, requests),
        )

    # -- fence ----------------------------------------------------------------------------

    def review_fence(
        self,
        *,
        image_bgr: npt.NDArray[np.uint8],
        polygon: npt.ArrayLike,
        local: Detections | None,
        image_file: bytes | None = None,
        anchor: AnchorMode = "bottom_center",
        overlap_threshold: float = 0.5,
        default_class_id: int = 0,
        timeout_s: float | None = None,
    ) -> FenceReview:
        """Review a fence result for one image.

        Args:
            image_bgr: (H, W, 3) uint8 BGR.
            polygon: (P, 2) the area in image pixels.
            local: the targets inside the area (:meth:`edge.tasks.fence.FenceTask.run`),
                or ``None`` when the local model failed.
            image_file: the original file bytes (see :meth:`review_hat`).
            anchor, overlap_threshold: the gateway's zone rule, applied to cloud boxes of
                a crop (the remote saw the whole crop as its area).
            default_class_id: class id for a cloud box that overlaps no local box.
            timeout_s: the caller's remaining time.

        Returns:
            targets inside the area, highest score first; ``data["cloud"]`` (N,) bool
            marks those the cloud decided.
        """
        start = self._clock()
        loc = local if local is not None else Detections.empty()
        self._count("reviews")
        loc = loc.with_data(cloud=np.zeros((len(loc),), np.bool_))
        unsure = uncertain_mask(loc.scores, self.config.uncertain_band)
        if not self._wanted("fence", local is not None, unsure):
            return self._fence_review(loc, self._finish("not_needed", "", start, 0))
        poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        h, w = image_bgr.shape[:2]
        window: tuple[int, int, int, int] | None = None
        if self.config.send == "crop" and local is not None:
            window = crop_window(
                loc.xyxy[unsure],
                w,
                h,
                margin=self.config.crop_margin,
                min_size=self.config.crop_min_size,
            )
            x0, y0, x1, y1 = window
            payload = _encode_jpeg(image_bgr[y0:y1, x0:x1], self.config.jpeg_quality)
            cw, ch = x1 - x0, y1 - y0
            area = f"0,0,{cw},0,{cw},{ch},0,{ch}"
        else:
            payload = self._image_payload(image_bgr, image_file, fence=True)
            area = area_string(poly.tolist())

        def send(call: _Call) -> FenceResult | Failure:
            return self.client.fence([payload], area, deadline=call.deadline, stop=call.stop)

        res, requests = self._call(send, timeout_s, start)
        answer = res.answer
        if res.status != "cloud" or not isinstance(answer, FenceResult):
            return self._fence_review(loc, self._finish(res.status, res.detail, start, requests))
        item = answer.items[0] if answer.items else None
        if item is None or item.error_code is not None:
            detail = (
                f"{item.error_code}: {item.error_details}" if item else "fence answer without items"
            )
            self._failure(str(item.error_code) if item else "protocol")
            return self._fence_review(loc, self._finish("error", detail, start, requests))
        rx = np.asarray(
            [[b.left, b.top, b.left + b.width, b.top + b.height] for b in item.location],
            np.float32,
        ).reshape(-1, 4)
        if window is not None:
            rx = rx + np.asarray(window[:2] * 2, np.float32)
        rx[:, [0, 2]] = np.clip(rx[:, [0, 2]], 0, w)
        rx[:, [1, 3]] = np.clip(rx[:, [1, 3]], 0, h)
        rx = rx[_visible(rx)]
        keep_l, keep_r = merge_boxes(
            loc.xyxy,
            loc.scores,
            rx,
            band=self.config.uncertain_band,
            match_iou=self.config.match_iou,
            window=window,
        )
        rx = rx[keep_r]
        iou = iou_matrix(rx, loc.xyxy)
        cls = np.full((len(rx),), default_class_id, np.int32)
        if iou.size:
            best = iou.argmax(axis=1)
            hit = iou[np.arange(len(rx)), best] > 0
            cls[hit] = loc.class_ids[best[hit]]
        remote = Detections(
            xyxy=rx,
            scores=np.full((len(rx),), CLOUD_FENCE_SCORE, np.float32),
            class_ids=cls,
            data={"cloud": np.ones((len(rx),), np.bool_)},
        )
        if window is not None and len(remote):
            remote = remote[
                inside_mask(remote, poly, anchor=anchor, overlap_threshold=overlap_threshold)
            ]
        kept = loc[keep_l]
        kept = Detections(
            xyxy=kept.xyxy,
            scores=kept.scores,
            class_ids=kept.class_ids,
            data={"cloud": kept.data["cloud"]},
        )
        merged = Detections.concatenate([kept, remote])
        merged = merged[np.argsort(-merged.scores, kind="stable")]
        return self._fence_review(merged, self._finish("cloud", "", start, requests))

    @staticmethod
    def _fence_review(dets: Detections, outcome: Outcome) -> FenceReview:
        cloud = dets.data["cloud"]
        sources: list[Source] = ["cloud" if c else "local" for c in cloud.tolist()]
        return FenceReview(dets, sources, outcome)

    # -- the bounded call -----------------------------------------------------------------

    def _image_payload(
        self, image_bgr: npt.NDArray[np.uint8], image_file: bytes | None, *, fence: bool = False
    ) -> bytes:
        if (
            image_file is not None
            and len(image_file) <= _MAX_REMOTE_IMAGE
            and (_is_jpeg_or_png(image_file) or (not fence and image_file[:2] == b"BM"))
        ):
            return image_file
        return _encode_jpeg(image_bgr, self.config.jpeg_quality)

    def _call(
        self,
        send: Callable[[_Call], HatResult | FenceResult | Failure],
        timeout_s: float | None,
        start: float,
    ) -> tuple[_Result, int]:
        """Breaker, concurrency cap, budget, retries and the deadline around ``send``."""
        self._count("calls")
        budget_s = (
            self.config.deadline_s if timeout_s is None else min(timeout_s, self.config.deadline_s)
        )
        deadline = start + budget_s
        if budget_s <= 0 or self._clock() >= deadline:
            return _Result("timeout", "no time left before the caller's deadline"), 0
        ticket = self.breaker.acquire()
        self._note_state()
        if ticket is None:
            return _Result("breaker_open", f"retry in {self.breaker.retry_in_s():.1f} s"), 0
        call = _Call(ticket=ticket, deadline=deadline)
        with self._lock:
            if self._closed:
                self.breaker.release(ticket)
                return _Result("error", "fallback client is closed"), 0
            if self._inflight >= self.config.max_concurrent:
                self.breaker.release(ticket)
                return _Result(
                    "busy", f"{self._inflight} cloud calls in flight (max_concurrent)"
                ), 0
            self._inflight += 1
            self._calls.add(call)
        try:
            fut = self._pool.submit(self._run, call, send)
        except RuntimeError:  # shut down between the check and the submit
            self._settle(call, None)
            self._leave(call)
            return _Result("error", "fallback client is closed"), 0
        try:
            res = fut.result(timeout=max(deadline - self._clock(), 0.0))
        except concurrent.futures.TimeoutError:
            call.stop.set()
            if self._settle(call, False):
                self._failure("deadline")
                log.warning("cloud fallback: no answer within %.2f s", budget_s)
            return _Result("timeout", f"no answer within {budget_s:g} s"), call.requests
        return res, call.requests

    def _run(
        self, call: _Call, send: Callable[[_Call], HatResult | FenceResult | Failure]
    ) -> _Result:
        """In a pool thread: attempts with retries until an answer, a final failure, the
        deadline, or the caller gives up."""
        try:
            return self._attempts(call, send)
        except Exception as exc:  # a bug must not escape into the camera loop / handler
            log.exception("cloud fallback: unexpected error")
            self._failure("internal")
            self._settle(call, False if call.requests else None)
            return _Result("error", f"internal error: {exc!r}")
        finally:
            self._leave(call)

    def _attempts(
        self, call: _Call, send: Callable[[_Call], HatResult | FenceResult | Failure]
    ) -> _Result:
        cfg = self.config
        retries = 0 if call.ticket == "probe" else cfg.max_retries
        last = _Result("error", "no request sent")
        for n in range(retries + 1):
            if call.stop.is_set() or self._clock() >= call.deadline:
                self._settle(call, False if call.requests else None)
                return _Result("timeout", "deadline reached before an answer")
            try:
                taken = self.budget.try_take()
            except BudgetError as exc:
                log.error("cloud fallback: %s", exc)
                self._failure("budget_store")
                self._settle(call, False if call.requests else None)
                return _Result("error", f"budget store: {exc.details}")
            if not taken:
                self._settle(call, False if call.requests else None)
                self._warn_budget()
                return _Result(
                    "budget_exhausted",
                    f"daily budget of {cfg.daily_budget} requests used ({self.budget.today()})",
                )
            if n:
                self._count("retries")
            call.requests += 1
            self._count("requests")
            retryable = False
            try:
                answer = send(call)
            except CloudError as exc:
                self._failure(exc.kind)
                status: FallbackStatus = "timeout" if exc.kind == "timeout" else "error"
                last = _Result(status, f"{exc.kind}: {exc}")
                retryable = exc.kind in _RETRY_KINDS
            else:
                if isinstance(answer, Failure):
                    self._failure(_code_kind(answer.code))
                    last = _Result("error", f"{answer.code}: {answer.details}")
                    if answer.code not in _RETRY_CODES:
                        endpoint_ok = 4000 <= answer.code < 5000 and (
                            answer.code not in _ENDPOINT_CODES
                        )
                        self._settle(call, endpoint_ok)
                        return last
                    retryable = True
                else:
                    self._settle(call, True)
                    return _Result("cloud", "", answer)
            if not retryable or n == retries:
                break
            delay = self._backoff(n)
            if self._clock() + delay >= call.deadline:
                break
            if call.stop.wait(delay):
                break
        self._settle(call, False)
        return last

    def _warn_budget(self) -> None:
        day = self.budget.today()
        with self._lock:
            first, self._budget_warned = self._budget_warned != day, day
        if first:
            log.warning(
                "cloud fallback: daily budget of %s requests used up for %s; answering "
                "locally until the day changes",
                self.config.daily_budget,
                day,
            )

    def _backoff(self, n: int) -> float:
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * (2.0**n))
        with self._rng_lock:
            return self._rng.uniform(0.0, cap)

    def _settle(self, call: _Call, success: bool | None) -> bool:
        """Give the breaker its verdict once per call (``None``: nothing was sent)."""
        with call.lock:
            if call.settled:
                return False
            call.settled = True
        if success is None:
            self.breaker.release(call.ticket)
        else:
            self.breaker.record(call.ticket, success=success)
        self._note_state()
        return True

    def _leave(self, call: _Call) -> None:
        with self._lock:
            if call in self._calls:
                self._calls.discard(call)
                self._inflight -= 1

    # -- bookkeeping ------------------------------------------------------------------------

    def _finish(self, status: FallbackStatus, detail: str, start: float, requests: int) -> Outcome:
        with self._lock:
            self._outcomes[status] += 1
        if status in ("error", "timeout"):
            log.info("cloud fallback unavailable (%s): %s", status, detail)
        return Outcome(
            status=status,
            detail=detail,
            requests=requests,
            elapsed_ms=(self._clock() - start) * 1000.0,
        )

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _failure(self, kind: str) -> None:
        """Count one failed request under ``kind`` (a bounded set: the client's error
        kinds and the contract's codes, see :func:`_code_kind`)."""
        with self._lock:
            self._failures[kind] = self._failures.get(kind, 0) + 1

    def _note_state(self) -> None:
        state = self.breaker.state
        with self._lock:
            prev, self._last_state = self._last_state, state
        if state != prev:
            log.warning("cloud fallback: circuit breaker %s -> %s", prev, state)

    def metrics(self) -> dict[str, Any]:
        """Counters for ``/metrics`` (JSON-ready).

        ``reviews``: results looked at; ``calls``: reviews that wanted the cloud;
        ``requests``: HTTP requests sent (retries included); ``retries``;
        ``outcomes``: per :data:`FallbackStatus`; ``failures``: failed requests by kind
        (``connect``, ``tls``, ``transport``, ``timeout``, ``protocol``, ``deadline``,
        ``budget_store``) or contract code (``"5000"``, ``"4010"``, ...);
        ``breaker``: state, consecutive failures, times opened; ``budget``: day, used,
        limit (``None`` = unlimited); ``inflight``.
        """
        try:
            used: int | None = self.budget.used()
        except BudgetError:
            used = None
        with self._lock:
            return {
                **self._counts,
                "outcomes": dict(self._outcomes),
                "failures": dict(sorted(self._failures.items())),
                "breaker": {
                    "state": self.breaker.state,
                    "consecutive_failures": self.breaker.consecutive_failures,
                    "opened_total": self.breaker.opened_total,
                },
                "budget": {
                    "day": self.budget.today(),
                    "used": used,
                    "limit": self.budget.limit,
                },
                "inflight": self._inflight,
            }


def prometheus_text(metrics: Mapping[str, Any]) -> str:
    """Prometheus exposition lines for :meth:`FallbackClient.metrics` (ends with ``\\n``)."""
    lines: list[str] = []
    add = lines.append

    def metric(name: str, kind: str, help_: str) -> None:
        add(f"# HELP safety_edge_fallback_{name} {help_}")
        add(f"# TYPE safety_edge_fallback_{name} {kind}")

    metric("reviews_total", "counter", "Results checked for uncertain boxes.")
    add(f"safety_edge_fallback_reviews_total {metrics['reviews']}")
    metric("calls_total", "counter", "Results that wanted the cloud.")
    add(f"safety_edge_fallback_calls_total {metrics['calls']}")
    metric("requests_total", "counter", "HTTP requests sent to the cloud, retries included.")
    add(f"safety_edge_fallback_requests_total {metrics['requests']}")
    metric("retries_total", "counter", "Retried requests.")
    add(f"safety_edge_fallback_retries_total {metrics['retries']}")
    metric("outcomes_total", "counter", "Reviews by outcome.")
    for status, n in metrics["outcomes"].items():
        add(f'safety_edge_fallback_outcomes_total{{status="{status}"}} {n}')
    metric("failures_total", "counter", "Failed requests by kind or contract code.")
    for kind, n in metrics["failures"].items():
        add(f'safety_edge_fallback_failures_total{{kind="{kind}"}} {n}')
    metric("breaker_state", "gauge", "Circuit breaker: 0 closed, 1 half-open, 2 open.")
    code = {"closed": 0, "half_open": 1, "open": 2}[metrics["breaker"]["state"]]
    add(f"safety_edge_fallback_breaker_state {code}")
    metric("breaker_opened_total", "counter", "Times the circuit breaker opened.")
    add(f"safety_edge_fallback_breaker_opened_total {metrics['breaker']['opened_total']}")
    budget = metrics["budget"]
    metric("budget_used", "gauge", "Requests drawn from today's budget.")
    used = budget["used"]
    add(f"safety_edge_fallback_budget_used {used if used is not None else 'NaN'}")
    if budget["limit"] is not None:
        metric("budget_limit", "gauge", "Requests allowed per day.")
        add(f"safety_edge_fallback_budget_limit {budget['limit']}")
    metric("inflight", "gauge", "Cloud calls in flight.")
    add(f"safety_edge_fallback_inflight {metrics['inflight']}")
    return "\n".join(lines) + "\n"
