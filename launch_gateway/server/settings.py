"""Settings: frozen dataclasses, read from one TOML file, then environment variables, then flags.

Every setting has a dotted name (`upstream.url`), a TOML key (`[upstream] url = ...`) and an
environment variable (`LAUNCH_GATEWAY_UPSTREAM_URL`); later sources override earlier ones. One
validator reads the sections and the `[tenants.<name>]` tables alike, and reports every problem of
a configuration in one pass (`ConfigError`): wrong types, unknown keys, ranges and rules between
values, each with its dotted name and the reason. Every default is stated once, here: the parts
of the gateway take their section of these settings rather than restating them.
Secrets are not settings: the config names where a secret comes from (an environment variable),
never the secret itself. A config file names its tenants or says `auth.open = true`: a file that is
empty (for a moment, while it is rewritten) is refused, never read as open mode.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from launch_gateway.server.access.tenants import HASH_PREFIX, SUBJECT_TYPES, Tenant
from launch_gateway.server.errors import ConfigError
from launch_gateway.server.limits.buckets import Rate

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
    # The upstream connection pool, in shares that cannot take each other's connections:
    max_connections: int = 1024  # unary calls (Predict, SubmitAsync, task polls)
    max_stream_connections: int = 256  # open streams, one each for as long as it lasts
    max_lookup_connections: int = 32  # endpoint lookups (the readiness probe has one more of its own)
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
    poll: float = 30.0  # one GetAsyncTask poll, GetEndpoint and ListEndpoints
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
    """Open mode, where the task-handle secrets come from, and how often the config file is checked for changes."""

    open: bool = False  # open mode: any caller, no API key, the gateway's Launch key (local use); a file must say so
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
    """Looking up callback hosts (the tenants' callback policies are in `[tenants.<name>.callbacks]`), and the
    receiver of Launch's own callbacks, which wakes WaitAsyncTask at once (`upstream.task_callbacks`)."""

    lookup_timeout: float = 2.0  # seconds a callback host lookup may take; then UNAVAILABLE
    lookups_per_tenant: int = 4  # lookups in flight per tenant (a hung one holds its slot); then RESOURCE_EXHAUSTED
    max_lookups: int = 64  # lookup threads in flight for the whole gateway; then UNAVAILABLE
    # The receiver's base URL as Launch reaches it (e.g. https://gateway.internal:9098); empty: no receiver,
    # waits poll only. Its callback URLs are signed with the task-handle secrets.
    public_url: str = ""
    receiver_host: str = "127.0.0.1"  # where the receiver listens (0.0.0.0 for every interface)
    receiver_port: int = 9098  # 0 picks a free one
    url_ttl: float = 86400.0  # seconds a callback URL the gateway gave Launch stays valid (a task's queue time)
    forward_timeout: float = 10.0  # seconds to deliver a callback on to the caller's own callback_url


@dataclass(frozen=True)
class MetricsSettings:
    """The HTTP port with /metrics, /healthz and /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    # 0 picks a free one. Not 9090 (the Prometheus server's), nor 9091-9095 (Pushgateway, Kafka, Alertmanager,
    # Loki's and Tempo's gRPC), 9100+ (the exporters' range) or 9464 (OpenTelemetry's Prometheus exporter).
    port: int = 9097
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
class TracingSettings:
    """OpenTelemetry traces over OTLP/gRPC (the `tracing` extra); off, at no cost, while `otlp_endpoint` is empty."""

    otlp_endpoint: str = ""  # the collector, e.g. http://otel-collector:4317 (https:// for TLS); empty: no tracing
    service_name: str = "launch-gateway"  # the spans' service.name
    sample_ratio: float = 1.0  # share of the traces that start here that are recorded; a caller's choice is followed


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
    tracing: TracingSettings = field(default_factory=TracingSettings)
    tenants: tuple[Tenant, ...] = ()

    @property
    def open_mode(self) -> bool:
        """Every caller is accepted without a key: `auth.open = true`, or no config file at all (only a file
        has tenants, and `load_settings` refuses a file without them unless it says `auth.open`)."""
        return self.auth.open or not self.tenants


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


# --- the one validator: types, unknown keys, ranges and rules between values, in one pass ---------

_REFUSED: Any = object()  # what `_coerce` gives for a value it refused
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
HEX = "0123456789abcdef"
IDENTITY = ("api_key_hashes", "mtls_subjects")


def _in(where: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{where}.{key}" for key in keys)


class _Problems:
    """Every problem of one configuration, in the order found, and the settings whose values were refused."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.refused: set[str] = set()

    def refuse(self, name: str, reason: str) -> Any:
        """A value that cannot be used: reported, left at its default, and not judged again by the rules."""
        self.found.append(f"{name}: {reason}")
        self.refused.add(name)
        return _REFUSED

    def rule(self, broken: bool, name: str, reason: str, *reads: str) -> None:
        """A rule on values, reported when broken unless a value it reads (`name`, `reads`) was refused."""
        if broken and self.refused.isdisjoint((name, *reads)):
            self.found.append(f"{name}: {reason}")


def _coerce(name: str, hint: Any, value: Any, problems: _Problems, strings: bool) -> Any:
    """`value` as the setting's type, or `_REFUSED`; with `strings` (any source but a tenant's table:
    the environment and flags give nothing else), a string may stand for a number, a flag or a list."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value if value in args else problems.refuse(name, f"must be one of {', '.join(args)}, not {value!r}")
    if origin is tuple:
        items = [v.strip() for v in value.split(",") if v.strip()] if strings and isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            shown = "" if name.endswith(".api_key_hashes") else f", not {value!r}"  # may hold a key: not shown
            return problems.refuse(name, f"must be a list of strings{shown}")
        return tuple(items)
    if hint is bool:
        if strings and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        return value if isinstance(value, bool) else problems.refuse(name, f"must be true or false, not {value!r}")
    if hint in (int, float):
        try:
            number = hint(value) if strings and isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int | float) or (hint is int and number % 1):
            return problems.refuse(name, f"must be {'an integer' if hint is int else 'a number'}, not {value!r}")
        return hint(number)
    if hint is str:
        return value if isinstance(value, str) else problems.refuse(name, f"must be a string, not {value!r}")
    if origin is Mapping:  # a tenant's endpoint_rates
        if not isinstance(value, dict):
            return problems.refuse(name, "must be a table of endpoint = {per_second, burst}")
        rates = {k: _coerce(f"{name}.{k}", args[1], v, problems, strings) for k, v in value.items()}
        return {k: v for k, v in rates.items() if v is not _REFUSED}
    if Rate in (hint, *args):  # a tenant's rate (Rate | None)
        return _rate(name, value, problems)
    if dataclasses.is_dataclass(hint):  # a table within a table: a tenant's callbacks
        if not isinstance(value, dict):
            return problems.refuse(name, "must be a table")
        return typing.cast(Any, hint)(**_fields(hint, name, value, problems, strings=strings))
    raise TypeError(f"{name}: no rule for {hint!r}")  # pragma: no cover - a setting of a new type


def _rate(name: str, value: Any, problems: _Problems) -> Any:
    """A rate table (`burst` defaults to one second's worth), or `_REFUSED`."""
    if not isinstance(value, dict) or set(value) - {"per_second", "burst"}:
        return problems.refuse(name, "must be a table with per_second and burst")
    per_second, burst = value.get("per_second"), value.get("burst")
    if not isinstance(per_second, int | float) or isinstance(per_second, bool) or not 0 < per_second < math.inf:
        return problems.refuse(f"{name}.per_second", "must be a number greater than 0")
    if burst is None:
        burst = max(1, int(per_second))
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        return problems.refuse(f"{name}.burst", "must be an integer of at least 1")
    return Rate(float(per_second), burst)


def _fields(
    cls: Any,
    where: str,
    table: Mapping[str, Any],
    problems: _Problems,
    *,
    strings: bool,
    source: Callable[[str, Any], Any] | None = None,
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The accepted values of one table for the dataclass `cls` (its unknown keys and bad values reported);
    `source(dotted name, file value)` gives the value that wins (the environment's, a flag's)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    for key in table:
        if key not in names:
            problems.refuse(f"{where}.{key}", "unknown setting")
    values: dict[str, Any] = {}
    for key in names:
        dotted = f"{where}.{key}"
        raw = source(dotted, table.get(key)) if source else table.get(key)
        if raw is not None and (value := _coerce(dotted, hints[key], raw, problems, strings)) is not _REFUSED:
            values[key] = value
    return values


def _tenants(tables: Any, problems: _Problems) -> tuple[Tenant, ...]:
    """Every `[tenants.<name>]` table as a Tenant (of its accepted values, so the rules can judge it)."""
    if not isinstance(tables, dict):
        problems.refuse("tenants", "must be a table of [tenants.<name>] tables")
        return ()
    tenants = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            problems.refuse(f"tenants.{name}", "must be a table")
            continue
        tenant = Tenant(name=name, **_fields(Tenant, f"tenants.{name}", table, problems, strings=False, skip=("name",)))
        hosts = tuple(h.lower() for h in tenant.callbacks.hosts)  # host names are case-insensitive
        tenants.append(dataclasses.replace(tenant, callbacks=dataclasses.replace(tenant.callbacks, hosts=hosts)))
    return tuple(tenants)


_POSITIVE = (  # settings that must be greater than 0
    "server.grace_period", "server.workers", "server.max_receive_message_bytes", "server.max_send_message_bytes",
    "server.keepalive_time", "server.keepalive_timeout", "upstream.endpoint_cache_ttl", "upstream.max_connections",
    "upstream.max_stream_connections", "upstream.max_lookup_connections",
    "upstream.connect_timeout", "upstream.max_body_bytes", "upstream.retry_attempts", "timeouts.sync",
    "timeouts.submit", "timeouts.poll", "timeouts.stream_idle", "timeouts.max_wait", "auth.reload_interval",
    "metrics.readiness_interval", "poll.initial", "poll.max", "callbacks.lookup_timeout",
    "callbacks.lookups_per_tenant", "callbacks.max_lookups", "callbacks.url_ttl", "callbacks.forward_timeout",
)  # fmt: skip


def _check(s: Settings, problems: _Problems) -> None:
    """Rules on values that types alone do not catch: ranges, and rules between values."""
    rule = problems.rule
    ports = (("server.port", s.server.port), ("metrics.port", s.metrics.port))
    for name, port in (*ports, ("callbacks.receiver_port", s.callbacks.receiver_port)):
        rule(not 0 <= port <= 65535, name, f"must be within 0..65535, not {port}")
    for key in ("keepalive_min_ping_interval", "max_connection_age", "max_connection_age_grace"):
        rule(getattr(s.server, key) < 0, f"server.{key}", "must not be negative")
    url = s.upstream.url
    rule(
        not url.startswith(("http://", "https://")), "upstream.url", f"must start with http:// or https://, not {url!r}"
    )
    for name in _POSITIVE:
        value = getattr(getattr(s, name.split(".")[0]), name.split(".")[1])
        rule(value <= 0, name, f"must be greater than 0, not {value}")
    rule(s.server.workers < 1, "server.workers", f"must be at least 1, not {s.server.workers}")
    for key in ("retry_base", "retry_cap", "breaker_failures", "breaker_cooldown"):
        rule(getattr(s.upstream, key) < 0, f"upstream.{key}", "must not be negative")
    rule(s.timeouts.deadline_margin < 0, "timeouts.deadline_margin", "must not be negative")
    rule(s.poll.multiplier < 1, "poll.multiplier", f"must be at least 1, not {s.poll.multiplier}")
    rule(s.poll.max < s.poll.initial, "poll.max", "must not be less than poll.initial", "poll.initial")
    public = s.callbacks.public_url
    why = f"must be an http:// or https:// URL with no query or fragment, not {public!r}"
    rule(bool(public) and not _plain_base_url(public), "callbacks.public_url", why)
    why = "must be a fixed port when server.workers > 1: the workers share it, and callbacks.public_url names it"
    rule(bool(public) and s.callbacks.receiver_port == 0 and s.server.workers > 1, "callbacks.receiver_port", why)
    ratio, endpoint = s.tracing.sample_ratio, s.tracing.otlp_endpoint
    rule(not 0 <= ratio <= 1, "tracing.sample_ratio", f"must be within 0..1, not {ratio}")
    why = f"must start with http:// or https://, not {endpoint!r}"
    rule(bool(endpoint) and not endpoint.startswith(("http://", "https://")), "tracing.otlp_endpoint", why)
    cert, key, client_ca = s.server.tls_cert_file, s.server.tls_key_file, s.server.tls_client_ca_file
    tls = ("server.tls_cert_file", "server.tls_key_file")
    rule(bool(cert) != bool(key), "server.tls_key_file", "tls_cert_file and tls_key_file go together", *tls)
    rule(bool(client_ca) and not cert, "server.tls_client_ca_file", "mTLS needs tls_cert_file and tls_key_file", *tls)
    for name in (*tls, "server.tls_client_ca_file", "upstream.ca_file"):
        section, field_name = name.split(".")
        path = getattr(getattr(s, section), field_name)
        rule(bool(path) and not Path(path).is_file(), name, f"no such file: {path}")
    owners: dict[str, str] = {}  # key hash -> its tenant: a key names one tenant only
    for tenant in s.tenants:
        w = f"tenants.{tenant.name}"
        for key in ("max_unary", "max_streams", "max_waits"):
            rule(getattr(tenant, key) < 0, f"{w}.{key}", f"must not be negative, not {getattr(tenant, key)}")
        for number, digest in enumerate(tenant.api_key_hashes, 1):
            hexpart = digest.removeprefix(HASH_PREFIX)
            malformed = not digest.startswith(HASH_PREFIX) or len(hexpart) != 64 or bool(set(hexpart) - set(HEX))
            # Nothing of it is shown: what is not a hash may be the key itself, pasted by mistake.
            why = f"entry {number} is not sha256:<64 hex> (see hash-key; the entry is not shown, it may be a key)"
            rule(malformed, f"{w}.api_key_hashes", why)
            rule(digest in owners, f"{w}.api_key_hashes", f"a key also belongs to {owners.get(digest)}")
            owners[digest] = tenant.name
        rule(not tenant.endpoints, f"{w}.endpoints", 'must list at least one endpoint name or pattern ("*" for all)')
        nobody = not tenant.api_key_hashes and not tenant.mtls_subjects
        rule(nobody, w, "needs api_key_hashes or mtls_subjects, or nobody can be this tenant", *_in(w, IDENTITY))
        keyless = tenant.upstream == "service" and not (tenant.upstream_key_env or tenant.upstream_key_file)
        why = "service mode needs upstream_key_env or upstream_key_file"
        rule(keyless, f"{w}.upstream_key_env", why, *_in(w, ("upstream", "upstream_key_file")))
        types = tenant.mtls_subject_types
        unknown = sorted(set(types) - set(SUBJECT_TYPES))
        why = f"must list some of {', '.join(SUBJECT_TYPES)}, not {', '.join(map(repr, unknown[:3])) or 'none'}"
        rule(bool(unknown) or not types, f"{w}.mtls_subject_types", why)
    mtls = any(t.mtls_subjects for t in s.tenants) and not client_ca
    why = "mtls_subjects need server.tls_client_ca_file (client certificates)"
    rule(mtls, "tenants", why, "server.tls_client_ca_file")
    why = "open mode accepts every caller, so it cannot have tenants; remove auth.open or the [tenants.*] tables"
    rule(s.auth.open and bool(s.tenants), "auth.open", why)


def _plain_base_url(url: str) -> bool:
    """Whether `url` is `http[s]://host[:port][/path]`: a base the receiver's routes are appended to."""
    scheme, _, rest = url.partition("://")
    return scheme in ("http", "https") and bool(rest) and not rest.startswith("/") and not set("?#@ \\") & set(rest)


def build_settings(
    file_values: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    from_file: bool = False,
) -> Settings:
    """Settings from parsed TOML, then `env`, then `overrides` (dotted names; None means unset).

    Every problem is found in one pass and raised in one ConfigError: a refused value is reported and
    left at its default, so that the ranges and the rules between values are still judged. Values
    `from_file` must have tenants or `auth.open = true`: without a file, no tenants is open mode.
    """

    def source(dotted: str, raw: Any) -> Any:
        if env and env_var(dotted) in env:
            raw = env[env_var(dotted)]
        if overrides and overrides.get(dotted) is not None:
            raw = overrides[dotted]
        return raw

    problems = _Problems()
    file_values = dict(file_values or {})
    sections: dict[str, Any] = {}
    for section, cls in _sections().items():
        table = file_values.pop(section, {})
        if not isinstance(table, dict):
            problems.refuse(section, f"must be a table ([{section}])")
            table = {}
        sections[section] = cls(**_fields(cls, section, table, problems, strings=True, source=source))
    tenant_tables = file_values.pop("tenants", {})
    tenants = _tenants(tenant_tables, problems)
    for key in file_values:
        problems.refuse(key, "unknown section")
    settings = Settings(**sections, tenants=tenants)
    _check(settings, problems)
    # An empty file (one being rewritten in place, `cat new > gateway.toml`) must never mean open mode.
    why = "the file configures no tenants; add [tenants.<name>] tables, or set auth.open = true for open mode"
    rule = problems.rule
    rule(from_file and not tenant_tables and not settings.auth.open, "auth.open", why + " (any caller, no key)")
    if problems.found:
        raise ConfigError(problems.found)
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
        except UnicodeDecodeError as exc:  # a ValueError, not a TOMLDecodeError: read_text decodes first
            raise ConfigError([f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason})"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML ({exc})"]) from exc
    return build_settings(file_values, env, overrides, from_file=path is not None)
