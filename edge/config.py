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

Later issues add sections (cameras, mqtt, storage) as new fields here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.api.alerts import AlertRules
from edge.errors import ConfigError

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ApiConfig",
    "GatewayConfig",
    "TasksConfig",
    "load_config",
]

ADMIN_TOKEN_ENV = "SAFETY_EDGE_ADMIN_TOKEN"
MIB = 1024 * 1024


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
    replay_cache_max: int = Field(default=1_000_000, ge=1)
    db_busy_timeout_ms: int = Field(default=2000, ge=0)
    providers: list[str] = Field(default_factory=lambda: ["cpu"])
    intra_op_threads: int | None = Field(default=None, ge=1)
    log_requests: bool = False

    def resolved_admin_token(self) -> str | None:
        """The admin token: environment first, then the config; ``None`` = console off."""
        env = os.environ.get(ADMIN_TOKEN_ENV)
        token = env if env else self.admin_token
        return token or None


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


class GatewayConfig(BaseModel):
    """One gateway's configuration (see the module docstring for an example)."""

    model_config = ConfigDict(extra="forbid")

    gateway_id: str = "gateway"
    data_dir: Path = Path("var")
    models_dir: Path = Path("models")
    api: ApiConfig = Field(default_factory=ApiConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)

    @field_validator("gateway_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not v.strip() or len(v) > 64:
            raise ValueError("must be 1 to 64 characters")
        return v


def _format(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


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
    except OSError as exc:
        raise ConfigError(f"config {str(p)!r}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {str(p)!r}: invalid YAML: {exc}") from None
    return config_from_mapping(data, source=f"config {str(p)!r}")
