"""Settings: frozen dataclasses, read from one TOML file, then environment variables, then flags.

Every setting has a dotted name (`upstream.url`), a TOML key (`[upstream] url = ...`) and an
environment variable (`LAUNCH_GATEWAY_UPSTREAM_URL`); later sources override earlier ones. A bad
value is reported with its dotted name and the reason, all problems at once (`ConfigError`).
Secrets are not settings: the config names where a secret comes from (an environment variable),
never the secret itself.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from launch_gateway.server.access.tenants import Tenant, parse_tenants
from launch_gateway.server.errors import ConfigError

ENV_PREFIX = "LAUNCH_GATEWAY_"


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the gRPC server listens."""

    host: str = "127.0.0.1"
    port: int = 50051
    reflection: bool = True
    grace_period: float = 10.0  # seconds calls in flight get to finish on shutdown
    max_receive_message_bytes: int = 4 * 1024 * 1024  # larger requests: RESOURCE_EXHAUSTED
    max_send_message_bytes: int = 16 * 1024 * 1024  # larger responses: RESOURCE_EXHAUSTED
    tls_cert_file: str = ""  # PEM; with tls_key_file, the server speaks TLS
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # PEM CA bundle; client certificates are then required (mTLS)
    keepalive_time: float = 7200.0  # seconds between server pings on an idle connection (gRPC default)
    keepalive_timeout: float = 20.0  # seconds to wait for a ping's answer before closing
    keepalive_min_ping_interval: float = 300.0  # clients pinging more often get GOAWAY too_many_pings
    keepalive_permit_without_calls: bool = False  # allow client pings on connections without calls
    max_connection_age: float = 0.0  # seconds; >0 sends GOAWAY after it, so clients rebalance (0: never)
    max_connection_age_grace: float = 30.0  # seconds calls get to finish after that GOAWAY
    workers: int = 1  # processes sharing the port (SO_REUSEPORT), one event loop each
    max_pending_requests: int = 10000  # calls grpc-core queues before the handler takes them (burst room)


@dataclass(frozen=True)
class UpstreamSettings:
    """The Launch API the gateway calls."""

    url: str = "https://api.scale.com/v1/launch"
    # "service": the gateway's own key (from api_key_env) for every call;
    # "forward": each caller's key, from its `authorization` metadata.
    auth: Literal["service", "forward"] = "service"
    api_key_env: str = "LAUNCH_API_KEY"
    endpoint_cache_ttl: float = 15.0  # seconds a name -> endpoint lookup is reused
    max_connections: int = 1024  # pooled keep-alive connections to the upstream; each open stream holds one
    connect_timeout: float = 5.0
    ca_file: str = ""  # PEM bundle to verify the upstream's TLS certificate; default: the system's
    max_body_bytes: int = 16 * 1024 * 1024  # larger upstream answers are refused (RESOURCE_EXHAUSTED)
    retry_attempts: int = 3  # per request, where repeating is safe (see the README's failure semantics)
    retry_base: float = 0.025  # seconds: jittered exponential backoff from here...
    retry_cap: float = 0.25  # ...up to here
    breaker_failures: int = 5  # consecutive upstream failures that open the circuit (0: no breaker)
    breaker_cooldown: float = 5.0  # seconds the circuit stays open before one probe call


@dataclass(frozen=True)
class TimeoutSettings:
    """Upstream time limits in seconds, used when the caller sets no deadline (a deadline always wins)."""

    sync: float = 300.0  # Predict
    submit: float = 30.0  # SubmitAsync
    poll: float = 30.0  # one GetAsyncTask poll, and GetEndpoint
    stream_idle: float = 60.0  # StreamPredict: longest quiet time between upstream reads (Launch pings every 15 s)
    max_wait: float = 900.0  # WaitAsyncTask with neither a timeout nor a deadline
    deadline_margin: float = 0.02  # kept back from the caller's deadline to answer in time


@dataclass(frozen=True)
class PollSettings:
    """How WaitAsyncTask polls the upstream: exponential backoff from `initial` up to `max`."""

    initial: float = 0.05
    multiplier: float = 1.5
    max: float = 1.0


@dataclass(frozen=True)
class AuthSettings:
    """Where the task-handle secrets come from, and how often the config file is checked for changes."""

    handle_secrets_env: str = "LAUNCH_GATEWAY_HANDLE_SECRETS"  # comma-separated; the first one signs
    handle_secrets_file: str = ""  # alternative: one secret per line
    reload_interval: float = 2.0  # seconds between checks of the config file (SIGHUP reloads at once)


@dataclass(frozen=True)
class LimitsSettings:
    """The rate limiter's backend."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url_env: str = "LAUNCH_GATEWAY_REDIS_URL"  # the URL may hold a password: it is never in the file
    redis_prefix: str = "launch-gateway:rl:"
    fail_open: bool = True  # Redis down: allow (true, as Envoy does) or refuse (false)


@dataclass(frozen=True)
class CallbackSettings:
    """Looking up callback hosts (the tenants' callback policies are in `[tenants.<name>.callbacks]`)."""

    lookup_timeout: float = 2.0  # seconds a callback host lookup may take; then UNAVAILABLE
    lookups_per_tenant: int = 4  # lookups in flight per tenant (a hung one holds its slot); then RESOURCE_EXHAUSTED
    max_lookups: int = 64  # lookup threads in flight for the whole gateway; then UNAVAILABLE


@dataclass(frozen=True)
class MetricsSettings:
    """The HTTP port with /metrics, /healthz and /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9090  # 0 picks a free one
    endpoints: tuple[str, ...] = ()  # endpoint names that get their own label (besides tenants' exact names)
    readiness_interval: float = 5.0  # seconds between background checks that the upstream answers
    multiprocess_dir: str = ""  # set by `serve --workers N` for its children: where metrics are shared


@dataclass(frozen=True)
class LogSettings:
    """Logging: level, JSON or human lines, and the one-line-per-RPC access log."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "human"] = "json"
    access: bool = True


@dataclass(frozen=True)
class Settings:
    """All settings; one section per concern. `tenants` come from `[tenants.<name>]` tables."""

    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    poll: PollSettings = field(default_factory=PollSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    tenants: tuple[Tenant, ...] = ()


def _sections() -> dict[str, type[Any]]:
    """The scalar sections (every field but `tenants`)."""
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if f.name != "tenants"}


def setting_names() -> list[str]:
    """Every dotted setting name, in declaration order."""
    return [f"{s}.{f.name}" for s, cls in _sections().items() for f in dataclasses.fields(cls)]


def env_var(name: str) -> str:
    """The environment variable that overrides a dotted setting."""
    return ENV_PREFIX + name.replace(".", "_").upper()


def _coerce(name: str, hint: Any, value: Any, problems: list[str]) -> Any:
    """`value` as the setting's type; strings (from env or flags) are parsed."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            problems.append(f"{name}: must be one of {', '.join(map(str, choices))}, not {value!r}")
        return value
    if origin is tuple:
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            problems.append(f"{name}: must be a list of strings, not {value!r}")
            return ()
        return tuple(items)
    if hint is bool:
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        if not isinstance(value, bool):
            problems.append(f"{name}: must be true or false, not {value!r}")
        return value
    if hint in (int, float):
        try:
            number = hint(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int | float) or (hint is int and number != int(number)):
            problems.append(f"{name}: must be {'an integer' if hint is int else 'a number'}, not {value!r}")
            return value
        return hint(number)
    if hint is str and not isinstance(value, str):
        problems.append(f"{name}: must be a string, not {value!r}")
    return value


def _check(settings: Settings, problems: list[str]) -> None:
    """Rules between values that types alone do not catch."""
    for name, port in (("server.port", settings.server.port), ("metrics.port", settings.metrics.port)):
        if not 0 <= port <= 65535:
            problems.append(f"{name}: must be within 0..65535, not {port}")
    for name in ("keepalive_min_ping_interval", "max_connection_age", "max_connection_age_grace"):
        if getattr(settings.server, name) < 0:
            problems.append(f"server.{name}: must not be negative")
    if not settings.upstream.url.startswith(("http://", "https://")):
        problems.append(f"upstream.url: must start with http:// or https://, not {settings.upstream.url!r}")
    positive = {
        "server.grace_period": settings.server.grace_period,
        "upstream.endpoint_cache_ttl": settings.upstream.endpoint_cache_ttl,
        "upstream.max_connections": settings.upstream.max_connections,
        "server.workers": settings.server.workers,
        "upstream.connect_timeout": settings.upstream.connect_timeout,
        "upstream.max_body_bytes": settings.upstream.max_body_bytes,
        "upstream.retry_attempts": settings.upstream.retry_attempts,
        "timeouts.sync": settings.timeouts.sync,
        "timeouts.submit": settings.timeouts.submit,
        "timeouts.poll": settings.timeouts.poll,
        "timeouts.stream_idle": settings.timeouts.stream_idle,
        "timeouts.max_wait": settings.timeouts.max_wait,
        "server.max_receive_message_bytes": settings.server.max_receive_message_bytes,
        "server.max_send_message_bytes": settings.server.max_send_message_bytes,
        "auth.reload_interval": settings.auth.reload_interval,
        "metrics.readiness_interval": settings.metrics.readiness_interval,
        "server.keepalive_time": settings.server.keepalive_time,
        "server.keepalive_timeout": settings.server.keepalive_timeout,
        "poll.initial": settings.poll.initial,
        "poll.max": settings.poll.max,
        "callbacks.lookup_timeout": settings.callbacks.lookup_timeout,
        "callbacks.lookups_per_tenant": settings.callbacks.lookups_per_tenant,
        "callbacks.max_lookups": settings.callbacks.max_lookups,
    }
    problems.extend(f"{k}: must be greater than 0, not {v}" for k, v in positive.items() if v <= 0)
    if settings.server.workers < 1:
        problems.append(f"server.workers: must be at least 1, not {settings.server.workers}")
    for name in ("retry_base", "retry_cap", "breaker_failures", "breaker_cooldown"):
        if getattr(settings.upstream, name) < 0:
            problems.append(f"upstream.{name}: must not be negative")
    if settings.timeouts.deadline_margin < 0:
        problems.append("timeouts.deadline_margin: must not be negative")
    if settings.poll.multiplier < 1:
        problems.append(f"poll.multiplier: must be at least 1, not {settings.poll.multiplier}")
    if settings.poll.max < settings.poll.initial:
        problems.append("poll.max: must not be less than poll.initial")
    if bool(settings.server.tls_cert_file) != bool(settings.server.tls_key_file):
        problems.append("server.tls_key_file: tls_cert_file and tls_key_file go together")
    if settings.server.tls_client_ca_file and not settings.server.tls_cert_file:
        problems.append("server.tls_client_ca_file: mTLS needs tls_cert_file and tls_key_file")
    for name in ("server.tls_cert_file", "server.tls_key_file", "server.tls_client_ca_file", "upstream.ca_file"):
        section, key = name.split(".")
        path = getattr(getattr(settings, section), key)
        if path and not Path(path).is_file():
            problems.append(f"{name}: no such file: {path}")
    if any(t.mtls_subjects for t in settings.tenants) and not settings.server.tls_client_ca_file:
        problems.append("tenants: mtls_subjects need server.tls_client_ca_file (client certificates)")


def build_settings(
    file_values: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from parsed TOML, then `env`, then `overrides` (dotted names; None means unset)."""
    problems: list[str] = []
    file_values = dict(file_values or {})
    sections: dict[str, Any] = {}
    for section, cls in _sections().items():
        table = file_values.pop(section, {})
        if not isinstance(table, dict):
            problems.append(f"{section}: must be a table ([{section}])")
            table = {}
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        problems.extend(f"{section}.{key}: unknown setting" for key in table if key not in known)
        values: dict[str, Any] = {}
        for name in known:
            dotted = f"{section}.{name}"
            raw = table.get(name)
            if env and env_var(dotted) in env:
                raw = env[env_var(dotted)]
            if overrides and overrides.get(dotted) is not None:
                raw = overrides[dotted]
            if raw is not None:
                values[name] = _coerce(dotted, hints[name], raw, problems)
        sections[section] = values
    tenants = parse_tenants(file_values.pop("tenants", {}), problems)
    problems.extend(f"{key}: unknown section" for key in file_values)
    if problems:
        raise ConfigError(problems)
    settings = Settings(**{name: cls(**sections[name]) for name, cls in _sections().items()}, tenants=tenants)
    _check(settings, problems)
    if problems:
        raise ConfigError(problems)
    return settings


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from a TOML file (optional), the environment and flag overrides."""
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    return build_settings(file_values, env, overrides)
