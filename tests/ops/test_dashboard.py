"""The Grafana dashboard and the alert rules query what a real gateway exports; promtool accepts the rules.

Every metric a PromQL expression names must be a sample name in a real scrape, and every label it
matches or groups by must be a label of that metric (or `job`/`instance`, which Prometheus adds), so a
renamed metric or label breaks a test here rather than a panel in production.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, LAUNCH_KEY_A, bearer, tenants
from tests.ops.conftest import http_get
from tests.ops.test_metrics import traffic_stack  # noqa: F401  (the fixture, used by `scraped`)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "launch-gateway.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ALERTS.with_name("alerts_test.yml")

OURS = re.compile(r"\b(?:grpc_server_|gateway_)[a-z0-9_:]*")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
ADDED_BY_PROMETHEUS = {"job", "instance"}
SYNTHESIZED = {"up"}  # series Prometheus makes itself while scraping

# What the dashboard must show: each of these is queried by some panel.
DASHBOARD_METRICS = {
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "gateway_upstream_requests_total",
    "gateway_upstream_request_duration_seconds_bucket",
    "gateway_stream_events_total",
    "gateway_stream_first_event_seconds_bucket",
    "gateway_ratelimit_decisions_total",
    "gateway_auth_failures_total",
    "gateway_inflight_calls",
    "gateway_async_wait_seconds_bucket",
    "gateway_async_wait_polls_total",
    "gateway_async_waits_total",
    "gateway_task_callbacks_total",
    "gateway_endpoint_cache_total",
    "gateway_config_reloads_total",
    "gateway_ready",
    "gateway_upstream_reachable",
    "gateway_tenant_calls_total",
    "gateway_tenant_errors_total",
    "gateway_tenant_upstream_seconds_total",
    "gateway_tenant_stream_events_total",
}
PER_SECOND_UNITS = {"reqps", "eps", "ops", "cps"}  # Grafana's unit ids (valueFormats/categories.ts, Throughput)
CODE_MATCHER = re.compile(r'grpc_code(=~|!~)"([^"]*)"')

Scrape = dict[str, set[str]]  # sample name -> its label names


def labels_by_sample(text: str) -> Scrape:
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


@pytest.fixture
async def scraped(traffic_stack: Stack, make_stack: StackFactory) -> Scrape:  # noqa: F811
    """`traffic_stack`'s scrape, plus one from a tenant that was rate-limited.

    `traffic_stack` runs in open mode, which makes no rate-limit decisions, and the gateway creates
    `gateway_ratelimit_decisions_total` series only at the first decision.
    """
    _, text = await http_get(traffic_stack, "/metrics")
    limited = await make_stack(
        api_keys=[LAUNCH_KEY_A],
        settings={"tenants": tenants(**{"team-a": {"rate": {"per_second": 0.01, "burst": 1}}})},
        gateway_env=ENV,
    )
    echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
    await limited.stub.Predict(echo, timeout=10, metadata=bearer(KEY_A))
    with pytest.raises(grpc.aio.AioRpcError):
        await limited.stub.Predict(echo, timeout=10, metadata=bearer(KEY_A))
    _, more = await http_get(limited, "/metrics")
    scrape = labels_by_sample(text)
    for name, names in labels_by_sample(more).items():
        scrape.setdefault(name, set()).update(names)
    return scrape


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def variable_queries() -> list[str]:
    return [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def problems_with(expr: str, scrape: Scrape) -> list[str]:
    """What in `expr` the scrape does not have: metrics, or labels those metrics do not carry."""
    selectors = SELECTOR.findall(expr)
    names = set(OURS.findall(expr)) | {metric for metric, _ in selectors if metric not in SYNTHESIZED}
    problems = [f"no metric {name}" for name in sorted(names) if name not in scrape]
    for metric, matchers in selectors:
        if metric in scrape:
            missing = set(MATCHER.findall(matchers)) - scrape[metric] - ADDED_BY_PROMETHEUS
            problems.extend(f"{metric} has no label {label}" for label in sorted(missing))
    known = set().union(*(scrape.get(name, set()) for name in names)) | ADDED_BY_PROMETHEUS
    for grouping in GROUPING.findall(expr):
        labels = {label.strip() for label in grouping.split(",") if label.strip()}
        problems.extend(f"groups by {label}, which none of {sorted(names)} has" for label in sorted(labels - known))
    return problems


async def test_dashboard_queries_only_metrics_and_labels_a_real_gateway_exports(scraped: Scrape) -> None:
    problems = [f"{title}: {p}" for title, expr in panel_queries() for p in problems_with(expr, scraped)]
    problems += [f"variable {q}: {p}" for q in variable_queries() for p in problems_with(q, scraped)]
    assert not problems, "\n".join(problems)


async def test_alert_rules_query_only_metrics_and_labels_a_real_gateway_exports(scraped: Scrape) -> None:
    problems = [f"{r['alert']}: {p}" for r in alert_rules() for p in problems_with(r["expr"], scraped)]
    assert not problems, "\n".join(problems)


def test_dashboard_has_a_panel_for_every_metric_it_should_show() -> None:
    queried = {name for _, expr in panel_queries() for name in OURS.findall(expr)}
    assert DASHBOARD_METRICS - queried == set()


def test_dashboard_is_scoped_by_datasource_job_and_instance() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {variables["job"]["type"], variables["instance"]["type"]} == {"query"}
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            for metric, matchers in SELECTOR.findall(target["expr"]):
                assert 'job=~"$job"' in matchers, f"{panel['title']}: {metric} is not scoped by $job"
                assert 'instance=~"$instance"' in matchers, f"{panel['title']}: {metric} is not scoped by $instance"


def panels_by_title() -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in dashboard()["panels"]}


def test_rate_panels_have_a_per_second_unit() -> None:
    for panel in dashboard()["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        if exprs and all("rate(" in e and " / " not in e and "histogram_quantile" not in e for e in exprs):
            assert panel["fieldConfig"]["defaults"]["unit"] in PER_SECOND_UNITS, panel["title"]
    assert panels_by_title()["Stream events per second"]["fieldConfig"]["defaults"]["unit"] == "eps"


def test_per_code_panels_draw_only_the_codes_that_occur() -> None:
    """Every method and code pair exists from the start at zero: 6 methods x 17 codes drawn as flat lines."""
    for title, expr in panel_queries():
        if "grpc_server_handled_total" in expr and re.search(r"by \(grpc_method, grpc_code\)", expr):
            assert expr.rstrip().endswith("> 0"), title


def test_counts_over_the_time_range_do_not_change_with_zoom() -> None:
    for title, expr in panel_queries():
        if "increase(" in expr:
            assert "[$__range]" in expr, title
            assert "$__rate_interval" not in expr, title
    reloads = panels_by_title()["Config reloads in the time range"]
    assert reloads["type"] == "stat"
    assert all(t["instant"] for t in reloads["targets"])


def test_the_error_ratio_panel_counts_what_the_paging_alert_counts() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "LaunchGatewayErrorRatioHigh")
    (target,) = panels_by_title()["Server error ratio by method"]["targets"]
    assert set(CODE_MATCHER.findall(target["expr"])) == set(CODE_MATCHER.findall(rule["expr"]))
    matchers = dict(CODE_MATCHER.findall(rule["expr"]))
    assert "ResourceExhausted" not in matchers["=~"].split("|")  # the numerator: server-caused codes only
    assert set(matchers["!~"].split("|")) == {"ResourceExhausted", "Unauthenticated", "PermissionDenied"}


def test_histogram_quantiles_keep_the_le_label() -> None:
    for title, expr in panel_queries():
        if "histogram_quantile" in expr:
            groupings = [{label.strip() for label in g.split(",")} for g in GROUPING.findall(expr)]
            assert groupings, f"{title}: histogram_quantile over unaggregated buckets"
            assert all("le" in g for g in groupings), f"{title}: aggregation drops le"


def test_every_alert_has_a_duration_severity_summary_and_description() -> None:
    rules = alert_rules()
    assert yaml.safe_load(ALERTS.read_text())["groups"][0]["name"] == "launch-gateway"
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


async def promtool(*args: str, cwd: Path | None = None) -> str:
    """Run promtool; fails (never skips) when it is missing."""
    found = shutil.which("promtool")
    assert found, "promtool comes from the Debian package prometheus (make test installs it)"
    process = await asyncio.create_subprocess_exec(
        found, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    output = (out + err).decode()
    assert process.returncode == 0, output
    return output


async def test_promtool_accepts_the_alert_rules() -> None:
    await promtool("check", "rules", str(ALERTS))


def test_every_paging_alert_has_a_promtool_case() -> None:
    """A page that no case in alerts_test.yml names could be firing on refusals, or never at all."""
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    assert cases["rule_files"] == [ALERTS.name]
    named = set(re.findall(r'alertname="([A-Za-z]+)"', ALERT_TESTS.read_text()))
    pages = {r["alert"] for r in alert_rules() if r["labels"]["severity"] == "page"}
    assert pages - named == set()


async def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    """deploy/prometheus/alerts_test.yml: server errors and an upstream outage page (the outage within a
    minute); a tenant over its quota, callers' mistakes, Launch's 429s and one unready replica do not."""
    output = await promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert "SUCCESS" in output
