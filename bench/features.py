"""The cost of the edge features: API-key auth, rate limiting, a concurrency cap and the access log.

Four gateways run side by side in front of the shared local Launch server and take turns under
the same h2load load (`-c 4 -m 16`, Predict on `echo`), in calls/s and CPU per call:

- open mode: no tenants, every default on (metrics, the JSON access log, written to a file): the base;
- open mode without the access log (what the log costs);
- auth: one tenant, callers send `authorization: Bearer <key>` (hashed and compared per call);
- auth + rate limits + cap: the tenant also has a tenant-wide and a per-endpoint token bucket (the
  memory backend) and a concurrency cap, all far above the load, so nothing is refused.

The Prometheus counters and histograms cannot be switched off (no setting does), so every variant
pays for them; `metrics.enabled` only opens the scrape port, which all four need so their error
counts can be read. Their share of the time shows in the profile section instead. CPU per call
(from /proc, after the warm-up) moves less with the machine's scheduling than calls/s does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench import h2load
from bench.harness import Harness
from bench.processes import Gateway, gateway_config, handled_codes, start_gateway
from bench.unary import PREDICT_PATH, cpu_during, predict_request
from launch_gateway.server.access.tenants import hash_key

SECTION = "edge features"
API_KEY = "bench-caller-key-0123456789"
ENV = {"BENCH_LAUNCH_KEY": "bench-launch-key", "LAUNCH_GATEWAY_HANDLE_SECRETS": "bench-handle-secret-0123456789"}
UNLIMITED = {"per_second": 1.0e9, "burst": 1_000_000_000}


def _tenant(rate: bool) -> dict[str, Any]:
    tenant: dict[str, Any] = {
        "api_key_hashes": [hash_key(API_KEY)],
        "endpoints": ["*"],
        "upstream": "service",
        "upstream_key_env": "BENCH_LAUNCH_KEY",
    }
    if rate:
        tenant.update(rate=UNLIMITED, endpoint_rates={"echo": UNLIMITED}, max_unary=100_000)
    return tenant


BASE = "open mode"
VARIANTS: dict[str, dict[str, Any]] = {  # the access log is on (the default) unless a variant says otherwise
    BASE: {},
    "open mode, no access log": {"log": {"access": False}},
    "auth": {"tenants": {"bench": _tenant(rate=False)}},
    "auth + rate limits + cap": {"tenants": {"bench": _tenant(rate=True)}},
}
TARGETED = "auth + rate limits + cap"  # the issue: tenants, rate limits, a cap and the access log vs open mode


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    launch = await harness.launch()
    gateways: dict[str, Gateway] = {}
    try:
        for i, (name, sections) in enumerate(VARIANTS.items()):
            config = gateway_config(launch.url, **sections)
            gateways[name] = await start_gateway(harness.scratch, config, name=f"gateway-features-{i}", env=ENV)
            harness.track(gateways[name].server)
        body = h2load.grpc_frame(predict_request())
        rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
        cpu_us: dict[str, list[float]] = {name: [] for name in VARIANTS}
        errors: Counter[str] = Counter()
        cancelled: Counter[str] = Counter()
        for _ in range(sizes.rounds):
            for name, gateway in gateways.items():
                headers = (
                    h2load.GRPC_HEADERS
                    if name.startswith(BASE)
                    else (*h2load.GRPC_HEADERS, f"authorization: Bearer {API_KEY}")
                )
                before = await gateway.metrics()
                load = h2load.run(
                    f"http://{gateway.address}{PREDICT_PATH}",
                    body,
                    headers=headers,
                    clients=4,
                    streams=16,
                    duration=sizes.features_seconds,
                    warmup=sizes.unary_warmup,
                )
                r, (cpu,) = await cpu_during(load, [gateway.server], sizes.unary_warmup)
                calls = r.requests_per_second * sizes.features_seconds
                cpu_us[name].append(cpu / calls * 1e6 if calls else float("nan"))
                codes = handled_codes(before, await gateway.metrics(), "Predict")
                cancelled[name] += codes.pop("Canceled", 0)
                errors.update({f"{name}: {code}": n for code, n in codes.items() if code != "OK"})
                rates[name].append(r.requests_per_second)
    finally:
        for gateway in gateways.values():
            await harness.stop(gateway.server)

    add = harness.report.add
    for name in list(VARIANTS)[1:]:
        targeted = name == TARGETED
        add(
            SECTION,
            f"Predict calls/s, 64 callers (h2load), {name}",
            "calls/s",
            rates[name],
            reference_name="open mode (defaults, access log on)",
            reference=rates[BASE],
            target=">= 0.95 x open mode" if targeted else "",
            check=(lambda f: f.ratio is not None and f.ratio.median >= 0.95) if targeted else None,
        )
    for name in VARIANTS:
        add(
            SECTION,
            f"gateway CPU per Predict call, {name}",
            "µs",
            cpu_us[name],
            reference_name=BASE if name != BASE else "",
            reference=cpu_us[BASE] if name != BASE else None,
            note="less sensitive to scheduling noise than calls/s",
        )
    add(
        SECTION,
        "errors during the feature runs",
        "calls",
        [float(sum(errors.values()))],
        target="0",
        check=lambda f: f.value.median == 0,
        note=", ".join(f"{k} x{v}" for k, v in errors.items()),
    )
    if any(cancelled.values()):
        harness.report.note(f"edge features: CANCELLED calls, in flight when h2load stopped: {dict(cancelled)}")
