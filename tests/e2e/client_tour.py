"""The tour examples/go and examples/java make, the gateway they make it against, and what they print.

Both clients check health, look up `echo`, call it, stream from `count`, run an `echo-async` task to
the end, and then make a call the gateway refuses, printing its status and each rich error detail:

    health: SERVING
    endpoint: echo ENDPOINT_KIND_SYNC READY <id>
    sync: TASK_STATUS_SUCCESS {"text": "hello from <language>", "n": 3}
    stream event: {"i":0}            (four of them)
    stream end
    async: <task_id> TASK_STATUS_SUCCESS {"delay": 0.1, "x": 1}
    refused: <code> <message>
    detail: ErrorInfo reason=<reason> domain=<domain> metadata=<k=v,...>
    detail: RetryInfo retry_delay=<seconds>s

A failed step prints `<step>: <code> <message>` and its details, and exits 1. Go spells codes as
grpc-go does (`ResourceExhausted`), Java as grpc-java (`RESOURCE_EXHAUSTED`).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launch_gateway.server.access.tenants import hash_key
from launch_gateway.server.statuses import ERROR_DOMAIN
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.docs import ROOT, fenced, read

TOUR_KEY = "tour-key-0123456789abcdef"  # the tour tenant's: its Launch key stays at the gateway
STALE_KEY = "stale-key-0123456789abcdef"  # a tenant that forwards its key to Launch, which does not know it
LAUNCH_KEY = "launch-key-of-the-tour"
LIMITED = "describe"  # the tour tenant may call it once a hundred seconds: the refused call
OTHER_LANGUAGES = "docs/other-languages.md"


async def run(*argv: str, env: Mapping[str, str] | None = None, within: float = 60) -> tuple[int, str, str]:
    """Run a client without blocking the event loop the servers share with the test."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def build(argv: list[str], cwd: Path, env: Mapping[str, str] | None = None, within: float = 200) -> None:
    """One build step (no servers run yet, so it may block); fails with the step's output."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=within, check=False)
    assert done.returncode == 0, f"{argv}\n{done.stdout}{done.stderr}"


def tour_tenants() -> dict[str, dict[str, object]]:
    return {
        "tour": {
            "api_key_hashes": [hash_key(TOUR_KEY)],
            "endpoints": ["*"],
            "upstream": "service",
            "upstream_key_env": "TOUR_LAUNCH_KEY",
            "endpoint_rates": {LIMITED: {"per_second": 0.01, "burst": 1}},
        },
        "stale": {"api_key_hashes": [hash_key(STALE_KEY)], "endpoints": ["*"], "upstream": "forward"},
    }


async def tour_stack(make_stack: StackFactory) -> Stack:
    """A gateway with the two tenants in front of a Launch that knows only LAUNCH_KEY."""
    env = {"TOUR_LAUNCH_KEY": LAUNCH_KEY, "LAUNCH_GATEWAY_HANDLE_SECRETS": "handle-secret-of-the-client-tour"}
    return await make_stack(api_keys=[LAUNCH_KEY], settings={"tenants": tour_tenants()}, gateway_env=env)


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def spend_the_limited_call(stack: Stack) -> float:
    """Take the tour tenant's one LIMITED call, so that the client's is refused; when it was taken."""
    request = pb.PredictRequest(endpoint_name=LIMITED, request=pb.EndpointRequest(args_json="{}"))
    spent = time.monotonic()
    await stack.stub.Predict(request, timeout=10, metadata=bearer(TOUR_KEY))
    return spent


def check_retry_delay(refusal: Refusal, spent: float) -> None:
    """One RetryInfo: the rest of the 100 s the spent call's token takes to come back."""
    (delay,) = refusal.retry_delays
    assert 100 - (time.monotonic() - spent) <= delay <= 100, delay


@dataclass
class Refusal:
    """A failed step's line and the details printed after it."""

    step: str
    code: str  # normalised: RESOURCE_EXHAUSTED and ResourceExhausted are both "resourceexhausted"
    message: str
    error_info: list[dict[str, str]] = field(default_factory=list)
    retry_delays: list[float] = field(default_factory=list)


def normalise(code: str) -> str:
    return code.replace("_", "").lower()


def parse_refusal(lines: list[str]) -> Refusal:
    """The first line `<step>: <code> <message>` and the `detail:` lines after it."""
    first = re.fullmatch(r"(\w+): (\w+) (.*)", lines[0])
    assert first, lines
    step, code, message = first.groups()
    refusal = Refusal(step, normalise(code), message)
    for line in lines[1:]:
        if match := re.fullmatch(r"detail: ErrorInfo reason=(\S*) domain=(\S*) metadata=(\S*)", line):
            reason, domain, metadata = match.groups()
            pairs = dict(pair.split("=", 1) for pair in metadata.split(",") if pair)
            refusal.error_info.append({"reason": reason, "domain": domain, **pairs})
        elif match := re.fullmatch(r"detail: RetryInfo retry_delay=([0-9.]+)s", line):
            refusal.retry_delays.append(float(match.group(1)))
        else:
            assert line.startswith("detail: "), line
    return refusal


async def check_tour(stack: Stack, out: str, language: str) -> Refusal:
    """Assert the tour's lines up to the refused call, which it returns parsed."""
    lines = out.splitlines()
    assert lines[0] == "health: SERVING", out

    lookup = pb.GetEndpointRequest(endpoint_name="echo")
    expected = await stack.stub.GetEndpoint(lookup, timeout=10, metadata=bearer(TOUR_KEY))
    assert lines[1] == f"endpoint: echo ENDPOINT_KIND_SYNC READY {expected.endpoint.id}", out

    label, status, result = lines[2].split(" ", 2)
    assert (label, status) == ("sync:", "TASK_STATUS_SUCCESS"), out
    echoed = json.loads(result)
    assert echoed == {"text": f"hello from {language}", "n": 3}
    assert type(echoed["n"]) is int  # a Struct number went upstream as the int 3

    prefix = "stream event: "
    assert all(line.startswith(prefix) for line in lines[3:7]), out
    assert [json.loads(line.removeprefix(prefix)) for line in lines[3:7]] == [{"i": i} for i in range(4)]
    assert lines[7] == "stream end", out

    label, task_id, status, result = lines[8].split(" ", 3)
    assert (label, status) == ("async:", "TASK_STATUS_SUCCESS"), out
    assert json.loads(result) == {"delay": 0.1, "x": 1}
    task = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10, metadata=bearer(TOUR_KEY))
    assert task.response.status == pb.TASK_STATUS_SUCCESS  # the printed id is the real task's

    return parse_refusal(lines[9:])


async def check_refused_tour(stack: Stack, result: tuple[int, str, str], language: str, spent: float) -> None:
    """A client's whole tour (`result`: its exit code, stdout and stderr) ending in the refused LIMITED call."""
    code, out, err = result
    assert code == 0, out + err
    refusal = await check_tour(stack, out, language)
    assert (refusal.step, refusal.code) == ("refused", "resourceexhausted"), out
    assert f"on endpoint '{LIMITED}'" in refusal.message
    check_retry_delay(refusal, spent)


def check_stale_key_refusal(result: tuple[int, str, str]) -> None:
    """A client run with STALE_KEY: healthy, then the lookup refused with Launch's 401 in ErrorInfo."""
    code, out, err = result
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[0] == "health: SERVING", out
    refusal = parse_refusal(lines[1:])
    assert (refusal.step, refusal.code) == ("endpoint", "unauthenticated"), out
    assert {"reason": "UPSTREAM_HTTP_ERROR", "domain": ERROR_DOMAIN, "http_status": "401"} in refusal.error_info


def doc_block(marker: str, doc: str = OTHER_LANGUAGES) -> str:
    """The one ```sh block of the doc that contains `marker`."""
    (block,) = [b.text for b in fenced(read(doc), "sh") if marker in b.text]
    return block
