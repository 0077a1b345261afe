"""The Kubernetes manifests agree with the gateway: config, ports, probes, command line, secrets and shutdown.

The ConfigMap's TOML goes through the real `build_settings`, the container's command through the real
CLI parser, and the probes are asked of a real gateway, so a change on either side breaks a test here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launch_gateway.cli import build_parser
from launch_gateway.server.admission import load_edge
from launch_gateway.server.settings import ConfigError, Settings, build_settings
from tests.conftest import Stack, StackFactory

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
PLACEHOLDER = "REPLACE_ME"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")

Manifest = dict[str, Any]


def manifests() -> list[Manifest]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def find(kind: str, name: str) -> Manifest:
    found = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def gateway_container() -> Manifest:
    (container,) = find("Deployment", "launch-gateway")["spec"]["template"]["spec"]["containers"]
    return container


def config_map() -> Manifest:
    return find("ConfigMap", "launch-gateway-config")


def settings() -> Settings:
    return build_settings(tomllib.loads(config_map()["data"]["gateway.toml"]))


def container_ports() -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in gateway_container()["ports"]}


def secret_variables() -> dict[str, str]:
    return dict(find("Secret", "launch-gateway-secrets")["stringData"])


def variables_the_config_names(s: Settings) -> set[str]:
    """Every environment variable the settings read a secret from."""
    names = {s.auth.handle_secrets_env} if not s.auth.handle_secrets_file else set()
    if s.limits.backend == "redis":
        names.add(s.limits.redis_url_env)
    names.update(t.upstream_key_env for t in s.tenants if t.upstream == "service" and not t.upstream_key_file)
    return names


def pre_stop_seconds(container: Manifest) -> float:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:  # Kubernetes' own sleep action
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_config_map_passes_check_config_without_secrets() -> None:
    s = settings()
    assert s.tenants, "the example should show a tenant"
    assert s.limits.backend == "redis"  # several replicas share one limit
    assert s.metrics.enabled


def test_gateway_listens_where_the_pod_exposes_it() -> None:
    s = settings()
    assert container_ports() == {"grpc": s.server.port, "http-metrics": s.metrics.port}
    # The kubelet's probes and Prometheus come from outside the pod: loopback would refuse them.
    assert s.server.host == "0.0.0.0"
    assert s.metrics.host == "0.0.0.0"


def probe_entry(kind: str) -> str:
    """The gRPC health entry a probe of the gateway container asks ("" when it names none)."""
    probe = gateway_container()[kind]
    assert "grpc" in probe, f"{kind} should ask the standard gRPC health service, as the HEALTHCHECK does"
    assert probe["grpc"]["port"] == container_ports()["grpc"]  # the kubelet's gRPC probe takes a number, not a name
    return str(probe["grpc"].get("service", ""))


async def health_status(stack: Stack, entry: str) -> str:
    reply = await health_pb2_grpc.HealthStub(stack.channel).Check(
        health_pb2.HealthCheckRequest(service=entry), timeout=5
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def test_probes_ask_what_a_real_gateway_serves(stack: Stack) -> None:
    for kind in PROBES:
        assert await health_status(stack, probe_entry(kind)) == "SERVING", kind


async def test_a_launch_outage_fails_readiness_but_never_startup_or_liveness(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"upstream": {"url": "http://127.0.0.1:9"}})  # nothing listens there
    assert await health_status(stack, probe_entry("readinessProbe")) == "NOT_SERVING"
    for kind in ("startupProbe", "livenessProbe"):
        status = await health_status(stack, probe_entry(kind))
        assert status == "SERVING", f"{kind} says {status}: the kubelet would restart a pod whose Launch is down"


def test_command_is_accepted_by_the_cli_and_reads_the_mounted_config() -> None:
    container = gateway_container()
    argv = [*container["command"], *container.get("args", [])]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]} is not a console script the image installs"
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"launch-gateway refuses {argv[1:]}")
    assert args.command == "serve"
    config = PurePosixPath(args.config)
    pod = find("Deployment", "launch-gateway")["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == "launch-gateway-config")
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume)
    assert "subPath" not in mount, "subPath mounts never see ConfigMap updates, so tenants would not reload"
    assert config.parent == PurePosixPath(mount["mountPath"])
    assert config.name in config_map()["data"]


def test_termination_grace_outlasts_the_pre_stop_sleep_and_the_drain() -> None:
    pod = find("Deployment", "launch-gateway")["spec"]["template"]["spec"]
    sleep = pre_stop_seconds(gateway_container())
    assert sleep > 0, "the pod should leave the endpoints before the gateway stops accepting calls"
    assert pod["terminationGracePeriodSeconds"] > sleep + settings().server.grace_period


def test_secret_template_provides_every_variable_the_config_names() -> None:
    assert {"secretRef": {"name": "launch-gateway-secrets"}} in gateway_container()["envFrom"]
    missing = variables_the_config_names(settings()) - set(secret_variables())
    assert not missing, f"the Secret template lacks {sorted(missing)}"


def test_secret_template_holds_only_placeholders() -> None:
    real = {name for name, value in secret_variables().items() if PLACEHOLDER not in value}
    assert not real, f"{sorted(real)} look like real values; the template must hold placeholders only"


def test_filled_in_secrets_pass_check_config_and_the_placeholders_do_not() -> None:
    s = settings()
    filled = {name: "x" * 32 for name in secret_variables()}
    filled[s.limits.redis_url_env] = "redis://launch-gateway-redis:6379/0"
    load_edge(s, filled)  # what check-config does, with the secrets
    with pytest.raises(ConfigError, match="handle_secrets"):
        load_edge(s, secret_variables())  # an unfilled template cannot start a gateway


def test_service_selects_the_gateway_pods_and_targets_named_container_ports() -> None:
    deployment = find("Deployment", "launch-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = find("Service", "launch-gateway")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"].items() <= pod_labels.items()
    redis_pod = find("Deployment", "launch-gateway-redis")["spec"]["template"]["metadata"]["labels"]
    assert not service["selector"].items() <= redis_pod.items()
    ports = {port["name"]: port for port in service["ports"]}
    assert set(ports) == {"grpc", "http-metrics"}
    for name, port in ports.items():
        assert port["targetPort"] in container_ports(), name
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["grpc"]["port"] == settings().server.port


def test_service_monitor_scrapes_the_gateway_metrics_port() -> None:
    monitor = find("ServiceMonitor", "launch-gateway")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    service = find("Service", "launch-gateway")
    assert selector.items() <= service["metadata"]["labels"].items()
    assert not selector.items() <= find("Service", "launch-gateway-redis")["metadata"]["labels"].items()
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert container_ports()[ports[endpoint["port"]]["targetPort"]] == settings().metrics.port


def test_hpa_scales_the_deployment_on_cpu_the_container_requests() -> None:
    hpa = find("HorizontalPodAutoscaler", "launch-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "launch-gateway"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert gateway_container()["resources"]["requests"]["cpu"], "CPU utilization is relative to the request"
    replicas = find("Deployment", "launch-gateway")["spec"]["replicas"]
    assert hpa["spec"]["minReplicas"] <= replicas <= hpa["spec"]["maxReplicas"]


def test_redis_service_serves_the_redis_pod() -> None:
    pod = find("Deployment", "launch-gateway-redis")["spec"]["template"]
    service = find("Service", "launch-gateway-redis")["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    names = {port["name"] for port in container["ports"]}
    assert all(port["targetPort"] in names for port in service["ports"])


@pytest.mark.parametrize("name", ["launch-gateway", "launch-gateway-redis"])
def test_pods_run_as_non_root_with_resources(name: str) -> None:
    pod = find("Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
