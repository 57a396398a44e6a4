"""The gateway's one validated configuration (``gateway.yaml``).

Every section is a pydantic model with ``extra="forbid"``: a misspelt key is an error
that names it, never silently ignored. All keys are optional; an empty file (or no file)
gives a working loopback gateway. Relative paths (``data_dir``, ``models_dir``) are
relative to the working directory of the process.

Example::

    gateway_id: site-a-gw-01
    data_dir: /var/lib/safety-edge
    models_dir: /opt/safety-edge/models
    api:
      host: 0.0.0.0
      port: 8080
      workers: 2              # inference threads
      queue_size: 16          # requests waiting for a worker; beyond: 5000 "busy"
      deadline_s: 30
      admin_token: change-me  # or env SAFETY_EDGE_ADMIN_TOKEN; console is off without one
      alert_rules: {error_rate: 0.2, p95_ms: 2000}
    tasks:
      fence: person_vehicle
      hardhat: hardhat
      workwear: workwear
    fallback:                 # off by default; see edge/cloud/fallback.py
      enabled: true
      base_url: https://cloud.example.com
      app_key: KEY            # or env SAFETY_EDGE_FALLBACK_APP_KEY
      app_secret: SECRET      # or env SAFETY_EDGE_FALLBACK_APP_SECRET
      service_codes: {hardhat: CODE1, fence: CODE2}
      uncertain_band: [0.3, 0.6]
      daily_budget: 1000

Cameras, per-camera tasks and zones, filters, MQTT, storage and the service (``safety-edge
run``) are described with a full commented example in ``safety-edge config example``
(:mod:`edge.service.example`); ``safety-edge config check FILE`` reports every problem
with its YAML path and line (:mod:`edge.service.config_check`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.api.alerts import AlertRules
from edge.errors import ConfigError, EdgeError
from edge.mqtt.config import MqttConfig

if TYPE_CHECKING:
    from edge.stream.chain_key import ChainKey
    from edge.stream.lines import LineSpec
    from edge.stream.zones import Schedule, ZoneSpec
    from edge.tasks.rules import Requirement
    from edge.tasks.wearing import WearingRule

__all__ = [
    "ADMIN_TOKEN_ENV",
    "FALLBACK_APP_KEY_ENV",
    "FALLBACK_APP_SECRET_ENV",
    "MQTT_PASSWORD_ENV",
    "MQTT_USERNAME_ENV",
    "ApiConfig",
    "CameraConfig",
    "CameraTaskConfig",
    "FallbackConfig",
    "FiltersConfig",
    "GatewayConfig",
    "LineConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "ServiceConfig",
    "StorageConfig",
    "TaskKind",
    "TasksConfig",
    "TrackerSettings",
    "WearingConfig",
    "ZoneConfig",
    "ZoneRequireConfig",
    "load_config",
    "override_error",
]

ADMIN_TOKEN_ENV = "SAFETY_EDGE_ADMIN_TOKEN"
FALLBACK_APP_KEY_ENV = "SAFETY_EDGE_FALLBACK_APP_KEY"
FALLBACK_APP_SECRET_ENV = "SAFETY_EDGE_FALLBACK_APP_SECRET"
MQTT_USERNAME_ENV = "SAFETY_EDGE_MQTT_USERNAME"
MQTT_PASSWORD_ENV = "SAFETY_EDGE_MQTT_PASSWORD"
CMD_TOKEN_ENV = "SAFETY_EDGE_CMD_TOKEN"
MIB = 1024 * 1024


def _known_providers(v: list[str] | None) -> list[str] | None:
    """``v`` when every name is an alias of :data:`edge.runtime.session.PROVIDER_ALIASES`
    (any case) or an onnxruntime provider name; ``ValueError`` with a did-you-mean (a typo
    such as ``tensortt`` switched off every model at run)."""
    if v is None:
        return v
    import difflib

    import onnxruntime as ort

    from edge.runtime.session import PROVIDER_ALIASES

    names = set(ort.get_all_providers()) | set(ort.get_available_providers())
    for raw in v:
        if raw.lower() in PROVIDER_ALIASES or raw in names:
            continue
        close = difflib.get_close_matches(raw.lower(), sorted(PROVIDER_ALIASES), n=1)
        close = close or difflib.get_close_matches(raw, sorted(names), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown execution provider {raw!r}; {hint}known: "
            f"{', '.join(sorted(PROVIDER_ALIASES))} or an onnxruntime name such as "
            "CPUExecutionProvider"
        )
    return v


class ApiConfig(BaseModel):
    """The HTTP API (``safety-edge serve``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 = any free port")
    workers: int = Field(default=2, ge=1, le=256, description="inference threads")
    queue_size: int = Field(
        default=16,
        ge=0,
        le=100_000,
        description="requests that may wait for a worker; one more is answered 5000 busy",
    )
    deadline_s: float = Field(
        default=30.0, gt=0.0, description="per-request budget from first byte to answer"
    )
    timestamp_skew_s: float = Field(default=300.0, gt=0.0, le=86_400.0)
    rest_status: bool = Field(
        default=False, description="REST HTTP statuses instead of 200 for contract answers"
    )
    accept_fence_sample_path: bool = Field(
        default=False,
        description="also accept a fence Sign over /v1/aiop/api/{code}/electron/fence",
    )
    metered: bool = Field(default=True, description="false: unmetered single-tenant gateway")
    auth: bool = Field(default=True, description="false: no Sign check (trusted network only)")
    metrics_flush_s: float = Field(
        default=5.0, gt=0.0, description="period of stats flush + alert evaluation"
    )
    retention_days: int = Field(default=30, ge=1, description="monitoring data kept")
    alert_rules: AlertRules = Field(default_factory=AlertRules)
    admin_token: str | None = Field(
        default=None,
        description=f"bearer token for /console/api (env {ADMIN_TOKEN_ENV} overrides)",
    )
    max_image_bytes: int = Field(default=5 * MIB, ge=1, description="hard-hat/workwear image")
    max_fence_body_bytes: int = Field(default=50 * MIB, ge=1)
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="width*height from the header, before decoding"
    )
    max_fence_images: int = Field(default=32, ge=1)
    max_inflight_body_bytes: int | None = Field(
        default=None,
        ge=1,
        description="request-body bytes all API requests in flight may hold together; a "
        "request that would go over is answered 5000 busy before its body is read (null: "
        "twice the largest body limit; at least that limit); one AppKey may hold half",
    )
    max_body_reads_per_key: int | None = Field(
        default=None,
        ge=1,
        description="requests of one AppKey whose bodies may be read or held at once; "
        "one more is answered 5000 busy (null: workers + queue_size)",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="seconds from connection open (or the end of the previous answer) to "
        "complete request headers; else the connection is closed",
    )
    max_connections: int = Field(
        default=256, ge=1, le=65_536, description="open HTTP connections; more are closed"
    )
    max_connections_per_client: int = Field(
        default=64, ge=1, le=65_536, description="open HTTP connections per client IP address"
    )
    replay_cache_max: int = Field(default=1_000_000, ge=1)
    db_busy_timeout_ms: int = Field(default=2000, ge=0)
    providers: list[str] = Field(default_factory=lambda: ["cpu"])
    intra_op_threads: int | None = Field(default=None, ge=1)
    allow_spinning: bool = Field(
        default=False,
        description="onnxruntime workers spin after each run (true: fastest for one model "
        "alone; false: several models/cameras share the cores without slowing each other)",
    )
    log_requests: bool = False
    compliance_summary: bool = Field(
        default=False,
        description="hard-hat/workwear answers carry the 'summary' field (header "
        "X-Safety-Edge-Summary: 1|0 overrides per request)",
    )

    _providers = field_validator("providers")(_known_providers)

    def resolved_admin_token(self) -> str | None:
        """The admin token: environment first, then the config; ``None`` = console off."""
        env = os.environ.get(ADMIN_TOKEN_ENV)
        token = env if env else self.admin_token
        return token or None

    def largest_body_bytes(self) -> int:
        """The largest request body any API accepts (bytes): the fence limit or the
        hard-hat/workwear body that carries a ``max_image_bytes`` image."""
        from edge.api.contract import hat_body_limit

        return max(self.max_fence_body_bytes, hat_body_limit(self.max_image_bytes))

    def body_budget_bytes(self) -> int:
        """``max_inflight_body_bytes``, or twice :meth:`largest_body_bytes` when unset."""
        if self.max_inflight_body_bytes is not None:
            return self.max_inflight_body_bytes
        return 2 * self.largest_body_bytes()

    def body_reads_per_key(self) -> int:
        """``max_body_reads_per_key``, or ``workers + queue_size`` when unset."""
        if self.max_body_reads_per_key is not None:
            return self.max_body_reads_per_key
        return self.workers + self.queue_size

    @model_validator(mode="after")
    def _check_body_budget(self) -> ApiConfig:
        largest = self.largest_body_bytes()
        if self.max_inflight_body_bytes is not None and self.max_inflight_body_bytes < largest:
            raise ValueError(
                f"max_inflight_body_bytes ({self.max_inflight_body_bytes}) must be at least "
                f"the largest request body allowed ({largest} bytes: max_fence_body_bytes or "
                "the body of a max_image_bytes image), or such a request is never read"
            )
        return self


class WearingConfig(BaseModel):
    """The worn rule and the three-way result of hard-hat/workwear checks
    (:mod:`edge.tasks.wearing`, :mod:`edge.tasks.compliance`), for the API and cameras.

    ``person_model`` (``null``: ``tasks.fence``) finds the people; without it (or with
    ``worn_rule: false``) answers come from the hat/wear model's boxes alone.
    """

    model_config = ConfigDict(extra="forbid")

    person_model: str | None = Field(
        default=None, description="people for the worn rule and summaries; null: tasks.fence"
    )
    worn_rule: bool = Field(
        default=True, description="a hat counts only on a person's head region (false: any hat)"
    )
    min_person_px: float = Field(
        default=64.0, ge=0.0, le=10_000.0, description="lower person boxes: cannot_tell too_small"
    )
    occluded_fraction: float = Field(
        default=0.5, gt=0.0, le=1.0, description="head/torso share covered: cannot_tell occluded"
    )
    uncertain_band: tuple[float, float] | None = Field(
        default=(0.25, 0.5),
        description="[low, high): a deciding score below high is cannot_tell; people below "
        "low are not counted; null: no band",
    )

    @field_validator("uncertain_band")
    @classmethod
    def _band(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 <= low < high <= 1")
        return v

    def to_rule(self) -> WearingRule:
        """The task layer's rule with these numbers."""
        from edge.tasks.wearing import WearingRule

        return WearingRule(
            min_person_px=self.min_person_px,
            occluded_fraction=self.occluded_fraction,
            uncertain_band=self.uncertain_band,
        )

    def person_model_name(self, tasks: TasksConfig) -> str | None:
        """The person model's manifest name (``None``: the worn rule is off or no model)."""
        if not self.worn_rule:
            return None
        return self.person_model if self.person_model is not None else tasks.fence


class TasksConfig(BaseModel):
    """Which model (manifest name in ``models_dir``) serves each API, and fence options.

    ``None`` switches an API off: it answers 5001 (fence) / 5000 with a details saying so.
    """

    model_config = ConfigDict(extra="forbid")

    fence: str | None = "person_vehicle"
    hardhat: str | None = "hardhat"
    workwear: str | None = "workwear"
    fence_anchor: Literal["bottom_center", "center", "overlap"] = "bottom_center"
    fence_overlap_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    fence_classes: list[str] = Field(
        default_factory=lambda: ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
    )
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    wearing: WearingConfig = Field(
        default_factory=WearingConfig, description="worn rule and three-way summary"
    )


class FallbackConfig(BaseModel):
    """The cloud fallback (:mod:`edge.cloud.fallback`): uncertain results ask an endpoint
    that speaks the contract (the provider's cloud or a bigger safety-edge box).

    Off by default. ``app_key``/``app_secret`` may come from the environment
    (``SAFETY_EDGE_FALLBACK_APP_KEY`` / ``SAFETY_EDGE_FALLBACK_APP_SECRET`` win over the
    file). Only APIs with a service code in ``service_codes`` use the fallback.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    base_url: str | None = Field(default=None, description="e.g. https://cloud.example.com")
    app_key: str | None = Field(default=None, description=f"env {FALLBACK_APP_KEY_ENV} overrides")
    app_secret: str | None = Field(
        default=None, description=f"env {FALLBACK_APP_SECRET_ENV} overrides"
    )
    service_codes: dict[Literal["hardhat", "workwear", "fence"], str] = Field(
        default_factory=dict, description="remote service code per API; absent = no fallback"
    )
    uncertain_band: tuple[float, float] = Field(
        default=(0.3, 0.6), description="[low, high): a box scored in it asks the cloud"
    )
    on_model_error: bool = Field(default=True, description="ask the cloud when inference fails")
    send: Literal["image", "crop"] = Field(
        default="image", description="the whole image, or one crop around the uncertain boxes"
    )
    crop_margin: float = Field(default=0.5, ge=0.0, le=10.0, description="x box size, per side")
    crop_min_size: int = Field(default=96, ge=8, description="crop side at least (pixels)")
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="crops and camera frames")
    match_iou: float = Field(
        default=0.5, gt=0.0, le=1.0, description="a cloud box this close to a sure local one is it"
    )
    deadline_s: float = Field(
        default=2.0, gt=0.0, le=600.0, description="whole fallback, retries included"
    )
    connect_timeout_s: float = Field(default=1.0, gt=0.0, le=60.0)
    max_retries: int = Field(default=2, ge=0, le=10, description="only connect/transport/5000/5001")
    backoff_base_s: float = Field(default=0.1, ge=0.0, le=60.0)
    backoff_max_s: float = Field(default=1.0, ge=0.0, le=600.0)
    breaker_failures: int = Field(default=5, ge=1, description="consecutive failures to open")
    breaker_cooldown_s: float = Field(default=30.0, ge=0.0, description="open -> half-open probe")
    daily_budget: int | None = Field(
        default=1000, ge=0, description="requests per day (retries count); null = unlimited"
    )
    budget_day: Literal["local", "utc"] = "local"
    max_concurrent: int = Field(
        default=2, ge=1, le=64, description="cloud calls in flight; beyond: busy, answered locally"
    )
    report_source: bool = Field(
        default=False,
        description="add 'source' per item and a 'fallback' object to answers (not contract)",
    )
    fence_sample_path: bool = False
    ca_file: str | None = Field(
        default=None,
        description="PEM CA bundle trusted for an https base_url, besides the system CAs",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if (
            parts.scheme in ("http", "https")
            and parts.netloc
            and v.startswith(parts.scheme + "://")
        ):
            return v
        import difflib

        scheme = v.split(":", 1)[0].lower() if ":" in v else ""
        close = difflib.get_close_matches(scheme, ["https", "http"], n=1, cutoff=0.5)
        rest = v.split(":", 1)[1].lstrip("/") if ":" in v else v
        hint = f" (did you mean '{close[0]}://{rest}'?)" if close and rest else ""
        raise ValueError(f"must be http://HOST or https://HOST{hint}")

    @field_validator("uncertain_band")
    @classmethod
    def _check_band(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError("must be [low, high] with 0 <= low < high <= 1")
        return v

    @model_validator(mode="after")
    def _check_enabled(self) -> FallbackConfig:
        if self.enabled and (not self.base_url or not self.service_codes):
            raise ValueError("an enabled fallback needs base_url and at least one service code")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be >= backoff_base_s")
        return self

    def credentials(self) -> tuple[str, str, str]:
        """``(base_url, app_key, app_secret)``, environment first.

        Raises:
            ConfigError: the fallback is enabled but one of them, or every service code,
                is missing.
        """
        key = os.environ.get(FALLBACK_APP_KEY_ENV) or self.app_key
        secret = os.environ.get(FALLBACK_APP_SECRET_ENV) or self.app_secret
        missing = [
            name
            for name, value in (
                ("fallback.base_url", self.base_url),
                (f"fallback.app_key (or {FALLBACK_APP_KEY_ENV})", key),
                (f"fallback.app_secret (or {FALLBACK_APP_SECRET_ENV})", secret),
            )
            if not value
        ]
        if not self.service_codes:
            missing.append("fallback.service_codes")
        if missing:
            raise ConfigError(f"fallback is enabled but {', '.join(missing)} is not set")
        assert self.base_url and key and secret
        return self.base_url, key, secret


# -- cameras, zones, storage, service (issue 6) ---------------------------------------------

TaskKind = Literal["fence", "hardhat", "workwear"]
CLASS_GROUPS: dict[str, tuple[str, ...]] = {
    "people": ("person",),
    "vehicles": ("bicycle", "car", "motorcycle", "bus", "truck"),
}
"""Aliases usable in a zone's ``classes``: expanded to detector class names."""
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _xy_pairs_from_text(v: Any, what: str) -> Any:
    """``"x1,y1,x2,y2,..."`` -> ``[(x1, y1), ...]``; any other value is returned unchanged
    for the field's own validation (zone polygons and line points share this form)."""
    if not isinstance(v, str):
        return v
    try:
        nums = [float(p) for p in v.split(",")]
    except ValueError:
        raise ValueError(f'{what} text must be "x1,y1,x2,y2,..." numbers') from None
    if len(nums) % 2:
        raise ValueError(f"{what} text has an odd count of numbers")
    return [(nums[i], nums[i + 1]) for i in range(0, len(nums), 2)]


_RESERVED_CAMERA_NAMES = frozenset({"cmd", "status", "events", "alerts", "results"})
"""Topic levels under ``{prefix}/{gateway}/`` that the gateway itself uses."""


def _topic_name(v: str, what: str) -> str:
    """A name that becomes an MQTT topic level (camera, task) or appears in events (zone)."""
    from edge.mqtt.topics import validate_segment

    return validate_segment(v, what)


def _expand_classes(v: list[str] | None) -> list[str] | None:
    """A zone's or line's ``classes`` with ``people``/``vehicles`` expanded, deduplicated."""
    if v is None:
        return v
    out: list[str] = []
    for c in v:
        for name in CLASS_GROUPS.get(c, (c,)):
            if not name.strip():
                raise ValueError("class names must be non-empty")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("classes must not be empty (omit the key for the task default)")
    return out


class FiltersConfig(BaseModel):
    """Detections kept for tracking and zones: ``min_score`` (``null``: the model's own
    threshold) and ``min_box_area`` in pixels^2 of the source frame."""

    model_config = ConfigDict(extra="forbid")

    min_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="null: the model's own threshold"
    )
    min_box_area: float = Field(default=0.0, ge=0.0, description="pixels^2 of the camera frame")


class TrackerSettings(BaseModel):
    """Tracker knobs (:class:`edge.stream.tracker.TrackerConfig`); defaults suit 2-10
    detections/s (vtest: at 2 det/s about 80 % of the in-zone detections of people walking
    through reach the zones, 93 % at 10 det/s; below 2 det/s fast walkers may be missed). A
    task's ``max_age_s`` is raised to the longest ``cooldown_s`` of its zones."""

    model_config = ConfigDict(extra="forbid")

    high_score: float = Field(default=0.5, ge=0.0, le=1.0, description="may start tracks")
    low_score: float = Field(default=0.1, ge=0.0, le=1.0, description="only extends tracks")
    match_iou: float = Field(default=0.2, gt=0.0, le=1.0)
    n_init: int = Field(default=2, ge=1, le=100, description="hits before a track counts")
    max_age_s: float = Field(default=3.0, ge=0.0, le=3600.0, description="unseen -> deleted")

    @model_validator(mode="after")
    def _check(self) -> TrackerSettings:
        if self.low_score > self.high_score:
            raise ValueError("low_score must be <= high_score")
        return self


class ScheduleConfig(BaseModel):
    """When a zone is armed: ``days`` (``mon-fri``, ``sat,sun``, ``weekdays``, ``daily``),
    ``hours`` (``["07:00-12:00", "13:00-19:00"]``, ``22:00-06:00`` runs overnight; empty =
    all day) and ``tz`` (IANA name; ``null`` = the gateway's local time)."""

    model_config = ConfigDict(extra="forbid")

    days: str | list[str] = Field(
        default="mon-sun", description="mon-fri, sat,sun, weekdays, daily or a list"
    )
    hours: list[str] = Field(
        default_factory=list, description='["07:00-19:00"]; "22:00-06:00" runs overnight'
    )
    tz: str | None = Field(default=None, description="IANA name; null: local time")

    @field_validator("days")
    @classmethod
    def _days(cls, v: str | list[str]) -> str | list[str]:
        from edge.stream.zones import Schedule

        Schedule.parse(days=v)
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[str]) -> list[str]:
        from edge.stream.zones import TimeRange

        for h in v:
            TimeRange.parse(h)
        return v

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        from edge.stream.zones import Schedule

        if v is not None:
            Schedule(tz=v)
        return v

    def to_schedule(self) -> Schedule:
        from edge.stream.zones import Schedule

        return Schedule.parse(days=self.days, hours=self.hours, tz=self.tz)


class HardhatRequireConfig(BaseModel):
    """A zone's hard-hat rule: a hat on every head, of one of ``colours`` (absent: any)."""

    model_config = ConfigDict(extra="forbid")

    colours: list[str] | None = Field(
        default=None, description="allowed: red, white, blue, yellow, other; absent: any colour"
    )

    @field_validator("colours")
    @classmethod
    def _colours(cls, v: list[str] | None) -> list[str] | None:
        from edge.tasks.rules import hat_colour

        return _colour_list(v, hat_colour)


class WorkwearRequireConfig(BaseModel):
    """A zone's workwear rule: workwear on every person, of one of ``colours`` (absent:
    any), and hi-vis when ``reflective`` (the ``yellow`` class: fluorescent yellow/orange)."""

    model_config = ConfigDict(extra="forbid")

    colours: list[str] | None = Field(
        default=None, description="allowed: light, blue, red, dark, yellow, other; absent: any"
    )
    reflective: bool = Field(default=False, description="hi-vis (yellow/orange) required")

    @field_validator("colours")
    @classmethod
    def _colours(cls, v: list[str] | None) -> list[str] | None:
        from edge.tasks.rules import workwear_colour

        return _colour_list(v, workwear_colour)

    @model_validator(mode="after")
    def _check(self) -> WorkwearRequireConfig:
        self.to_requirement()  # reflective with colours that exclude hi-vis
        return self

    def to_requirement(self) -> Requirement:
        from edge.tasks.rules import Requirement

        return Requirement(
            kind="workwear",
            colours=None if self.colours is None else tuple(self.colours),
            reflective=self.reflective,
        )


def _colour_list(v: list[str] | None, check: Callable[[str], str]) -> list[str] | None:
    if v is None:
        return v
    if not v:
        raise ValueError("colours must not be empty (omit the key for any colour)")
    return list(dict.fromkeys(check(c) for c in v))


class ZoneRequireConfig(BaseModel):
    """What a zone requires of the people in it (``hardhat`` on a hard-hat task's zones,
    ``workwear`` on a workwear task's); a person who breaks it raises the zone's events,
    whose ``attributes.rule`` names the rule (:mod:`edge.tasks.rules`)."""

    model_config = ConfigDict(extra="forbid")

    hardhat: HardhatRequireConfig | None = Field(
        default=None, description="{colours: [red, white]} or {} (any colour)"
    )
    workwear: WorkwearRequireConfig | None = Field(
        default=None, description="{colours: [...]} and/or {reflective: true}"
    )

    @model_validator(mode="after")
    def _check(self) -> ZoneRequireConfig:
        if self.hardhat is None and self.workwear is None:
            raise ValueError("name what the zone requires: hardhat: {...} or workwear: {...}")
        return self

    def to_requirement(self, kind: TaskKind) -> Requirement | None:
        """The requirement for a task of ``kind`` (``None``: none for that kind)."""
        from edge.tasks.rules import Requirement

        if kind == "hardhat" and self.hardhat is not None:
            colours = self.hardhat.colours
            return Requirement(kind="hardhat", colours=None if colours is None else tuple(colours))
        if kind == "workwear" and self.workwear is not None:
            return self.workwear.to_requirement()
        return None


class ZoneConfig(BaseModel):
    """One zone of a camera task (see :class:`edge.stream.zones.ZoneSpec` for behaviour).

    ``polygon``: ``[[x, y], ...]`` (3 or more points) or ``"x1,y1,x2,y2,..."``, in pixels of
    the camera frame, or in 0-1 of its width/height when ``normalized`` (``null``: normalized
    when every coordinate is within 0-1; all below 2 with one above 1 is refused as a
    slip, e.g. 1.05); absent = the whole frame. ``classes``: detector
    class names (or ``people``/``vehicles``) that count; absent = the task's default
    (fence: ``people``; hardhat: the model's bare-head classes; workwear: its no-workwear
    classes).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="unique in the task; no / + # $, whitespace or control characters"
    )
    polygon: list[tuple[float, float]] | None = Field(
        default=None, description='[[x, y], ...] or "x1,y1,..."; absent: the whole frame'
    )
    normalized: bool | None = Field(
        default=None, description="null: auto (all within 0-1; all < 2 with one > 1: refused)"
    )
    classes: list[str] | None = Field(
        default=None, description="class names or people/vehicles; absent: the task default"
    )
    min_dwell_s: float = Field(default=1.0, ge=0.0, le=86_400.0, description="inside before start")
    cooldown_s: float = Field(default=3.0, ge=0.0, le=86_400.0, description="gone before end")
    update_every_s: float | None = Field(
        default=30.0, gt=0.0, description="at most one update per this; null = none"
    )
    anchor: Literal["bottom_center", "center", "overlap"] = Field(
        default="bottom_center", description="point of the box that must be inside"
    )
    overlap_threshold: float = Field(
        default=0.5, gt=0.0, le=1.0, description="anchor overlap: box area share inside"
    )
    edge_margin_frac: float = Field(
        default=0.05,
        ge=0.0,
        le=10.0,
        description="hysteresis at the zone edge, fraction of the box height; 0 = plain test",
    )
    schedule: ScheduleConfig | None = Field(default=None, description="absent = always armed")
    label: str | None = Field(default=None, description="event label; absent = class name")
    require: ZoneRequireConfig | None = Field(
        default=None, description="hardhat/workwear tasks: what people in the zone must wear"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _topic_name(v, "zone name")

    @field_validator("polygon", mode="before")
    @classmethod
    def _polygon_text(cls, v: Any) -> Any:
        return _xy_pairs_from_text(v, "polygon")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is None:
            return v
        from edge.kernels.geometry import validate_polygon

        try:
            validate_polygon(v)
        except EdgeError as exc:
            raise ValueError(str(exc)) from None
        if any(x < 0 or y < 0 for x, y in v):
            raise ValueError("polygon coordinates must be >= 0")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        return _expand_classes(v)

    @model_validator(mode="after")
    def _check(self) -> ZoneConfig:
        if self.polygon is not None:
            self.normalized = _resolve_normalized(
                self.polygon, self.normalized, "polygon", self.name
            )
        return self

    def to_spec(self, *, classes: tuple[str, ...], label: str | None) -> ZoneSpec:
        """The stream layer's zone (``classes``/``label``: resolved against the model)."""
        from edge.stream.zones import ZoneSpec

        return ZoneSpec(
            name=self.name,
            polygon=None if self.polygon is None else tuple(self.polygon),
            normalized=bool(self.normalized),
            classes=classes,
            min_dwell_s=self.min_dwell_s,
            cooldown_s=self.cooldown_s,
            update_every_s=self.update_every_s,
            anchor=self.anchor,
            overlap_threshold=self.overlap_threshold,
            edge_margin_frac=self.edge_margin_frac,
            schedule=None if self.schedule is None else self.schedule.to_schedule(),
            label=self.label if self.label is not None else label,
        )


#: In auto mode, coordinates all below this with one above 1 are taken for 0-1 fractions
#: with a slip (1.05), not for a zone inside the frame's top-left 2x2 pixels.
FRACTION_SLIP_LIMIT = 2.0


def _resolve_normalized(
    points: list[tuple[float, float]], normalized: bool | None, what: str, name: str
) -> bool:
    """``normalized`` as given, or (``None``) whether every coordinate is within 0-1;
    ``ValueError`` when ``True`` is given for pixel coordinates, and in auto mode when
    every coordinate is below :data:`FRACTION_SLIP_LIMIT` but some are above 1 (0-1
    fractions with a slip: taken for pixels they made a zone of 1 pixel)."""
    coords = [c for p in points for c in p]
    small = all(0.0 <= c <= 1.0 for c in coords)
    if normalized is None:
        top = max(coords, default=0.0)
        if not small and top < FRACTION_SLIP_LIMIT:
            raise ValueError(
                f"{what} of {name!r} looks like 0-1 fractions with a value above 1 ({top:g}): "
                "clamp it to 1, or set normalized: false if these are pixels"
            )
        return small
    if normalized and not small:
        raise ValueError(f"normalized: true needs {what} coordinates within 0-1")
    return normalized


class LineConfig(BaseModel):
    """One counting line of a camera task (see :mod:`edge.stream.lines` for behaviour).

    ``points``: ``[[x, y], ...]`` (2 to 16 points, in order; more than 2 is a polyline) or
    ``"x1,y1,x2,y2,..."``, in pixels of the camera frame, or in 0-1 of its width/height
    when ``normalized`` (``null``: normalized when every coordinate is within 0-1; all below
    2 with one above 1 is refused as a slip).
    Walking the line from its first point to its last as drawn on the image, crossing
    from the left-hand side to the right-hand side is ``in``, the other way ``out``.
    ``classes``: as for zones (absent: the task default, e.g. ``people`` for fence).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="unique in the task (with zones); no / + # $, whitespace or control characters"
    )
    points: list[tuple[float, float]] = Field(
        description='required: [[x, y], ...] or "x1,y1,..."; first to last sets in/out'
    )
    normalized: bool | None = Field(
        default=None, description="null: auto (all within 0-1; all < 2 with one > 1: refused)"
    )
    classes: list[str] | None = Field(
        default=None, description="class names or people/vehicles; absent: the task default"
    )
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center", description="point of the box that crosses"
    )
    min_displacement_px: float = Field(
        default=10.0,
        ge=0.0,
        le=10_000.0,
        description="a crossing counts once the anchor is this far past the line",
    )
    min_displacement_frac: float = Field(
        default=0.25,
        ge=0.0,
        le=10.0,
        description="the margin also scales with the box height: "
        "max(min_displacement_px, this x height)",
    )
    schedule: ScheduleConfig | None = Field(default=None, description="absent = always counts")
    label: str | None = Field(default=None, description="event label; absent = class name")
    snapshots: bool = Field(default=True, description="JPEG for each crossing (task's too)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _topic_name(v, "line name")

    @field_validator("points", mode="before")
    @classmethod
    def _points_text(cls, v: Any) -> Any:
        return _xy_pairs_from_text(v, "points")

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        from edge.kernels.geometry import validate_polyline

        validate_polyline(v)
        if any(x < 0 or y < 0 for x, y in v):
            raise ValueError("line coordinates must be >= 0")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        return _expand_classes(v)

    @model_validator(mode="after")
    def _check(self) -> LineConfig:
        self.normalized = _resolve_normalized(self.points, self.normalized, "line", self.name)
        return self

    def to_spec(self, *, classes: tuple[str, ...], label: str | None) -> LineSpec:
        """The stream layer's line (``classes``/``label``: resolved against the model)."""
        from edge.stream.lines import LineSpec

        return LineSpec(
            name=self.name,
            points=tuple(self.points),
            normalized=bool(self.normalized),
            classes=classes,
            anchor=self.anchor,
            min_displacement_px=self.min_displacement_px,
            min_displacement_frac=self.min_displacement_frac,
            schedule=None if self.schedule is None else self.schedule.to_schedule(),
            label=self.label if self.label is not None else label,
            snapshots=self.snapshots,
        )


class CameraTaskConfig(BaseModel):
    """One task on one camera: which model (``null``: the gateway's ``tasks.<kind>``),
    its zones and counting lines, filters (``null``: the gateway's ``filters``) and
    tracker settings. ``fence`` needs at least one zone or line; ``hardhat``/``workwear``
    without zones watch the whole frame (one zone named ``frame``), lines or not."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="null: the gateway's tasks.<kind>")
    zones: list[ZoneConfig] = Field(
        default_factory=list, description="fence: at least one; others: absent = whole frame"
    )
    lines: list[LineConfig] = Field(
        default_factory=list, description="counting lines: crossings per direction"
    )
    filters: FiltersConfig | None = Field(default=None, description="null: the gateway's")
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    snapshots: bool = Field(default=True, description="JPEG for each start event")

    @field_validator("zones")
    @classmethod
    def _unique(cls, v: list[ZoneConfig]) -> list[ZoneConfig]:
        names = [z.name for z in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"zone names must be unique within a task; repeated: {dup}")
        return v

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, v: list[LineConfig], info: ValidationInfo) -> list[LineConfig]:
        names = [ln.name for ln in v]
        zones = {z.name for z in info.data.get("zones", [])}
        dup = sorted({n for n in names if names.count(n) > 1 or n in zones})
        if dup:
            raise ValueError(
                f"line names must be unique within a task, zones included; repeated: {dup}"
            )
        return v


class CameraConfig(BaseModel):
    """One camera: where to read it and which tasks run on it.

    ``source``: ``rtsp://user:${CAM_PASSWORD}@host/stream`` (``${VAR}`` is taken from the
    environment at start), ``http://host/video.mjpg``, ``/dev/video0`` or a device index,
    or a video file. ``target_fps``: detections per second at most (frames in between
    are skipped, counted); ``null``: every frame.

    ``offline_alert_after_s``: the ``camera_offline`` alert is raised only once the camera
    has been offline this long without a break, and resolved only if it was raised, so a
    flaky camera that reconnects within it queues nothing on the alerts topic (each
    alert is an outbox row that is never dropped) and pages nobody. A camera goes offline
    when it cannot be opened or delivers no frame for ``read_timeout_s``; the delay counts
    from then. ``0``: raised at once, as before.

    ``unstable_*``: a camera that keeps dropping and coming back (a stream that freezes
    shortly after each reconnect) may never stay offline long enough for
    ``camera_offline``; ``camera_unstable`` is raised once, within the last
    ``unstable_window_s``, it came back ``unstable_reconnects`` times or was offline for
    ``unstable_offline_ratio`` of the window (with at least one reconnect in it: a camera
    that just stays offline is ``camera_offline``'s), and resolved once both are at most
    half of that (reconnects: fewer than half) over a whole window.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="MQTT topic level: no / + # $, whitespace or control characters; unique"
    )
    source: str | int = Field(
        description="rtsp://..., http://... (MJPEG), /dev/videoN or index, or a file; ${VAR}"
    )
    enabled: bool = True
    target_fps: float | None = Field(
        default=5.0, gt=0.0, le=240.0, description="detections/s at most; null: every frame"
    )
    width: int | None = Field(default=None, ge=16, le=16_384, description="devices: request")
    height: int | None = Field(default=None, ge=16, le=16_384, description="devices: request")
    loop: bool = Field(default=False, description="files: start over at the end")
    realtime: bool = Field(default=True, description="files: pace at the file's frame rate")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0, description="network sources")
    read_timeout_s: float = Field(
        default=10.0, gt=0.0, le=600.0, description="no frame this long: offline, reconnect"
    )
    backoff_max_s: float = Field(default=30.0, ge=0.5, le=3600.0, description="reconnect cap")
    offline_alert_after_s: float = Field(
        default=60.0,
        ge=0.0,
        le=86_400.0,
        description="camera_offline alert only once offline this long without a break "
        "(/healthz and /metrics show offline at once); 0: at once",
    )
    unstable_window_s: float = Field(
        default=600.0,
        ge=5.0,
        le=86_400.0,
        description="sliding window of the camera_unstable check (reconnects, offline time)",
    )
    unstable_reconnects: int | None = Field(
        default=10,
        ge=1,
        le=100_000,
        description="camera_unstable once it came back this often within the window; null: off",
    )
    unstable_offline_ratio: float | None = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="camera_unstable once offline this share of the window (with a reconnect "
        "in it); null: off",
    )
    tasks: dict[TaskKind, CameraTaskConfig] = Field(description="fence, hardhat, workwear")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        name = _topic_name(v, "camera name")
        if name in _RESERVED_CAMERA_NAMES:
            # {prefix}/{gw}/{camera}/... would share its first level with these topics.
            raise ValueError(
                f"camera name {name!r} is reserved for the gateway's own topics "
                f"({', '.join(sorted(_RESERVED_CAMERA_NAMES))})"
            )
        return name

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | int) -> str | int:
        if isinstance(v, int):
            if v < 0:
                raise ValueError("device index must be >= 0")
        elif not v.strip():
            raise ValueError("source must be non-empty")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: dict[TaskKind, CameraTaskConfig]) -> dict[TaskKind, CameraTaskConfig]:
        if not v:
            raise ValueError("a camera needs at least one task (fence, hardhat, workwear)")
        fence = v.get("fence")
        if fence is not None and not fence.zones and not fence.lines:
            raise ValueError("the fence task needs at least one zone or line")
        return v

    @field_validator("tasks")
    @classmethod
    def _zone_rules(cls, v: dict[TaskKind, CameraTaskConfig]) -> dict[TaskKind, CameraTaskConfig]:
        """A zone's ``require`` names its own task's kind (reported at the key)."""
        from pydantic_core import InitErrorDetails, PydanticCustomError

        errors: list[InitErrorDetails] = []
        for kind, task in v.items():
            for zi, zone in enumerate(task.zones):
                req = zone.require
                if req is None:
                    continue
                for other in ("hardhat", "workwear"):
                    if getattr(req, other) is None or other == kind:
                        continue
                    where = (
                        "fence zones require nothing"
                        if kind == "fence"
                        else (f"a {kind} zone may require only {kind}")
                    )
                    errors.append(
                        InitErrorDetails(
                            type=PydanticCustomError(
                                "zone_rule",
                                "{other} does not apply to the {kind} task: {where}",
                                {"other": other, "kind": kind, "where": where},
                            ),
                            loc=(kind, "zones", zi, "require", other),
                            input=getattr(req, other).model_dump(),
                        )
                    )
        if errors:
            raise ValidationError.from_exception_data("CameraConfig", errors)
        return v

    def env_refs(self) -> list[str]:
        """Environment variables named by ``${VAR}`` in ``source``."""
        return _ENV_REF.findall(self.source) if isinstance(self.source, str) else []

    def resolved_source(self) -> str | int:
        """``source`` with ``${VAR}`` replaced from the environment.

        Raises:
            ConfigError: a referenced variable is not set.
        """
        if isinstance(self.source, int):
            return self.source
        missing = [n for n in self.env_refs() if n not in os.environ]
        if missing:
            raise ConfigError(
                f"camera {self.name!r}: source needs environment variable(s) {missing}"
            )
        return _ENV_REF.sub(lambda m: os.environ[m.group(1)], self.source)


class StorageConfig(BaseModel):
    """Snapshots and the events table on disk.

    ``snapshot_dir`` ``null`` = ``<data_dir>/snapshots``. Snapshots older than
    ``snapshot_retention_days`` go, then the oldest until the folder holds at most
    ``snapshot_max_mb``; a background pass runs every ``sweep_interval_s``. Events older
    than ``events_retention_days`` are deleted hourly.

    ``events_max_mb``: a size bound on the events database, in the same hourly pass:
    while its live data (SQLite pages in use, acknowledgements included) is over the
    bound, the oldest events go, down to 90 % of it, with a WARNING naming how many and
    the oldest kept. The freed pages are reused by later events, so the file stops growing
    at about the bound plus an hour's events (plus its ``-wal``, a few MiB); it does not
    shrink. The default (1024 MiB) holds 1.5-2 million events (500-700 bytes each, indexes
    included), over 100 days of a busy site (4 cameras, ~13 000 events a day), so the
    90-day retention decides there and the bound only stops a flood (a camera with a
    steady false positive) from filling a small card. ``null`` or ``0``: no size bound;
    otherwise at least 1.

    ``min_free_mb``: the gateway checks the free space of the filesystem holding
    ``data_dir`` (events, outbox, alert state, snapshots by default) every minute,
    shows it on ``/metrics`` (``safety_edge_data_free_bytes``) and ``/healthz``, and
    raises the ``disk_low`` alert (warning) once free space falls under this floor,
    resolved once it is back to 10 % above it. An absolute floor, not a percentage: what
    must fit (SQLite's WAL and checkpoints, a day of snapshots, the outbox during a broker
    outage) does not grow with the card, and a percentage of a large disk would alarm
    with gigabytes left. ``0``: no alert (the gauge stays).

    ``events_key_file``: a file holding the secret key of the events hash chain (keyed
    HMAC-SHA256 links, :mod:`edge.stream.chain_key`); env ``SAFETY_EDGE_EVENTS_KEY`` (the
    key itself) wins over it. It may not lie inside ``data_dir`` (whoever can write the
    database there could read the key too): keep it on another disk, or at least outside
    the data folder, readable by the gateway's user only.
    """

    model_config = ConfigDict(extra="forbid")

    snapshots: bool = Field(default=True, description="JPEG of each start event")
    snapshot_dir: Path | None = Field(default=None, description="null: <data_dir>/snapshots")
    snapshot_retention_days: float | None = Field(
        default=30.0, gt=0.0, description="older snapshots are deleted; null: no limit"
    )
    snapshot_max_mb: float | None = Field(
        default=2048.0, ge=0.0, description="oldest deleted beyond this total; null: no limit"
    )
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    sweep_interval_s: float = Field(default=600.0, gt=0.0, description="retention pass period")
    events_retention_days: float | None = Field(
        default=90.0, gt=0.0, description="rows of the events table; null: kept forever"
    )
    events_max_mb: float | None = Field(
        default=1024.0,
        ge=0.0,
        allow_inf_nan=False,
        description="the oldest events are deleted (hourly, down to 90 %) while the events "
        "database holds more (MiB, >= 1); null or 0: no size bound",
    )
    min_free_mb: float = Field(
        default=500.0,
        ge=0.0,
        description="disk_low alert when the data_dir's filesystem has less free (MiB, "
        "checked every minute; resolved at 10 % above); 0: no alert",
    )
    events_key_file: Path | None = Field(
        default=None,
        description="secret key for keyed (HMAC-SHA256) event chain links; env "
        "SAFETY_EDGE_EVENTS_KEY overrides; null: plain SHA-256 links",
    )

    @field_validator("events_max_mb")
    @classmethod
    def _events_max_mb(cls, v: float | None) -> float | None:
        if v is not None and 0.0 < v < 1.0:
            raise ValueError(
                "must be at least 1 (MiB; the empty database alone takes about 0.1), "
                "or 0 or null for no size bound"
            )
        return v

    def events_max_bytes(self) -> int | None:
        """``events_max_mb`` in bytes; ``None``: no size bound (``null`` or ``0``)."""
        if not self.events_max_mb:
            return None
        return int(self.events_max_mb * 1024 * 1024)

    def events_key(self) -> ChainKey | None:
        """The events chain key: ``SAFETY_EDGE_EVENTS_KEY`` first, then
        ``events_key_file``; ``None``: plain links.

        Raises:
            ConfigError: the file cannot be read or the key is too short (the message
                names the file or variable, never the key).
        """
        from edge.stream.chain_key import load_chain_key

        return load_chain_key(self.events_key_file)


class RuntimeConfig(BaseModel):
    """Execution providers of the detectors ``safety-edge run`` loads (shared by the
    cameras and the API). ``providers`` ``null``: ``api.providers``. ``provider_options``
    per provider (alias or onnxruntime name), e.g. for TensorRT on a Jetson::

        runtime:
          providers: [tensorrt, cuda, cpu]
          provider_options:
            tensorrt: {trt_fp16_enable: true, trt_engine_cache_enable: true,
                       trt_engine_cache_path: /var/lib/safety-edge/trt-cache}
    """

    model_config = ConfigDict(extra="forbid")

    providers: list[str] | None = Field(
        default=None, description="e.g. [tensorrt, cuda, cpu]; null: api.providers"
    )
    provider_options: dict[str, dict[str, str | int | float | bool]] = Field(
        default_factory=dict, description="per provider, e.g. tensorrt: {trt_fp16_enable: true}"
    )
    intra_op_threads: int | None = Field(
        default=None, ge=1, le=256, description="null: api.intra_op_threads"
    )

    _providers = field_validator("providers")(_known_providers)

    @model_validator(mode="after")
    def _check(self) -> RuntimeConfig:
        named = set(self.providers or [])
        extra = sorted(set(self.provider_options) - named)
        if extra:
            raise ValueError(f"provider_options for providers not listed in providers: {extra}")
        return self

    def provider_specs(self, api: ApiConfig) -> list[str | tuple[str, dict[str, Any]]]:
        """Providers in order, each ``name`` or ``(name, options)`` (see
        :func:`edge.runtime.session.resolve_providers`)."""
        names = self.providers if self.providers is not None else api.providers
        return [
            (n, dict(self.provider_options[n])) if n in self.provider_options else n for n in names
        ]


class ServiceConfig(BaseModel):
    """``safety-edge run``: the in-process API, shutdown bounds, state topic, logs."""

    model_config = ConfigDict(extra="forbid")

    api: bool = Field(
        default=True, description="serve the HTTP API in this process (false: `serve` apart)"
    )
    stop_timeout_s: float = Field(
        default=20.0, gt=0.0, le=600.0, description="SIGTERM to exit, at most (flush included)"
    )
    flush_timeout_s: float = Field(
        default=5.0, ge=0.0, le=600.0, description="SIGTERM: wait for the broker's acks"
    )
    state_interval_s: float = Field(
        default=1.0, gt=0.0, le=3600.0, description="retained state topic refresh"
    )
    stall_timeout_s: float | None = Field(
        default=120.0,
        ge=1.0,
        le=3600.0,
        description=(
            "a camera pipeline or the API event loop without progress this long: "
            "exit 1 (restart); null: off"
        ),
    )
    clock_require_sync: bool = Field(
        default=False,
        description=(
            "wall clock implausible (clock_unsynced, scheduled zones armed) until it is "
            "NTP synchronized: the kernel's NTP state (any client: timesyncd, chrony, "
            "ntpd) or systemd-timesyncd's flag says so"
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line (journald, shippers)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check(self) -> ServiceConfig:
        if self.flush_timeout_s >= self.stop_timeout_s:
            raise ValueError("flush_timeout_s must be < stop_timeout_s")
        return self


def _check_cameras(v: list[CameraConfig]) -> list[CameraConfig]:
    names = [c.name for c in v]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"camera names must be unique; repeated: {dup}")
    return v


class GatewayConfig(BaseModel):
    """One gateway's configuration (see the module docstring for an example)."""

    model_config = ConfigDict(extra="forbid")

    gateway_id: str = "gateway"
    data_dir: Path = Path("var")
    models_dir: Path = Path("models")
    api: ApiConfig = Field(default_factory=ApiConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    cameras: list[CameraConfig] = Field(
        default_factory=list, description="safety-edge run: one pipeline per camera"
    )
    filters: FiltersConfig = Field(
        default_factory=FiltersConfig, description="detections kept (tasks may override)"
    )
    mqtt: MqttConfig | None = Field(default=None, description="absent: no MQTT output")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig, validate_default=True)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @field_validator("gateway_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not v.strip() or len(v) > 64:
            raise ValueError("must be 1 to 64 characters")
        return v

    @field_validator("cameras")
    @classmethod
    def _check_cameras(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        return _check_cameras(v)

    @field_validator("mqtt")
    @classmethod
    def _check_mqtt(cls, v: MqttConfig | None, info: ValidationInfo) -> MqttConfig | None:
        gw = info.data.get("gateway_id")
        if v is not None and isinstance(gw, str):
            from edge.mqtt.topics import validate_gateway_id

            validate_gateway_id(gw)
        return v

    @field_validator("storage")
    @classmethod
    def _check_events_key_file(cls, v: StorageConfig, info: ValidationInfo) -> StorageConfig:
        data_dir = info.data.get("data_dir")
        key = v.events_key_file
        inside = (
            key is not None
            and isinstance(data_dir, Path)
            and key.resolve().is_relative_to(data_dir.resolve())
        )
        if inside:
            raise ValueError(
                f"events_key_file {str(key)!r} lies inside data_dir {str(data_dir)!r}: "
                "whoever can edit the events database there could read the key; keep "
                "it on another disk or at least outside the data folder"
            )
        return v

    @field_validator("service")
    @classmethod
    def _check_stall_timeout(cls, v: ServiceConfig, info: ValidationInfo) -> ServiceConfig:
        # A source read may block for its own open/read timeout without being stuck;
        # twice that leaves room for FFmpeg's overrun and a slow name lookup.
        stall = v.stall_timeout_s
        for c in info.data.get("cameras") or []:
            longest = max(c.open_timeout_s, c.read_timeout_s)
            if stall is not None and c.enabled and stall <= 2 * longest:
                raise ValueError(
                    f"stall_timeout_s ({stall:g} s) must be more than twice the longest "
                    f"open/read timeout of camera {c.name!r} ({longest:g} s): a read may "
                    "block that long without being stuck; raise it or set it to null"
                )
        return v

    def resolved_mqtt(self) -> MqttConfig | None:
        """``mqtt`` with ``SAFETY_EDGE_MQTT_USERNAME``/``SAFETY_EDGE_MQTT_PASSWORD`` and
        ``SAFETY_EDGE_CMD_TOKEN`` (``commands.token``) applied (the environment wins over
        the file); ``None`` when MQTT is off."""
        if self.mqtt is None:
            return None
        update: dict[str, Any] = {}
        user = os.environ.get(MQTT_USERNAME_ENV)
        password = os.environ.get(MQTT_PASSWORD_ENV)
        if user:
            update["username"] = user
        if password:
            update["password"] = SecretStr(password)
        token = os.environ.get(CMD_TOKEN_ENV)
        if token:
            update["commands"] = self.mqtt.commands.model_copy(update={"token": SecretStr(token)})
        return self.mqtt.model_copy(update=update) if update else self.mqtt

    def snapshot_dir(self) -> Path:
        """Where incident snapshots go (``storage.snapshot_dir`` or ``<data_dir>/snapshots``)."""
        return self.storage.snapshot_dir or self.data_dir / "snapshots"


def _format(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


_OVERRIDE_FLAGS = {
    "data_dir": "--data-dir",
    "models_dir": "--models-dir",
    "api.host": "--host",
    "api.port": "--port",
}


def override_error(err: ValidationError) -> ConfigError:
    """The error for a config re-validated after ``serve`` / ``run`` / ``demo-app``
    command-line overrides: the first problem, named by its option and value
    (``--port 99999``) when an override caused it, else by its dotted key."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    flag = _OVERRIDE_FLAGS.get(loc)
    where = f"{flag} {e['input']}" if flag is not None else loc
    return ConfigError(f"command-line override {where}: {e['msg']}")


def config_from_mapping(data: Any, *, source: str = "config") -> GatewayConfig:
    """Validate an already-parsed mapping; ConfigError names every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format(exc)}") from None


def load_config(path: str | Path | None) -> GatewayConfig:
    """Read and validate ``gateway.yaml``; ``None`` gives the defaults.

    Raises:
        ConfigError: missing/unreadable file, invalid YAML, unknown or invalid keys (the
            message names each one with its dotted location).
    """
    if path is None:
        return GatewayConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"config {str(p)!r}: cannot read: {why}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {str(p)!r}: invalid YAML: {exc}") from None
    return config_from_mapping(data, source=f"config {str(p)!r}")
