"""Task handles bound to their tenant: another tenant sees NOT_FOUND, a forged one INVALID_ARGUMENT."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from launch_gateway.server.settings import ConfigError
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, HANDLE_SECRET, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants

B_CAN_POLL = tenants(**{"team-b": {"endpoints": ["echo*"]}})


async def submit(stack: Stack, key: str = KEY_A) -> str:
    request = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json='{"delay": 0}'))
    return (await stack.stub.SubmitAsync(request, timeout=10, metadata=bearer(key))).task_id


async def wait(stack: Stack, task_id: str, key: str = KEY_A) -> pb.WaitAsyncTaskResponse:
    request = pb.WaitAsyncTaskRequest(task_id=task_id, timeout=duration_pb2.Duration(seconds=10))
    return await stack.stub.WaitAsyncTask(request, timeout=15, metadata=bearer(key))


async def test_the_task_id_is_an_opaque_handle_that_its_tenant_can_use(edge_stack: Stack) -> None:
    task_id = await submit(edge_stack)
    record = await edge_stack.launch.wait_for_record(lambda r: r.path == "/v1/async-tasks")
    assert task_id.startswith("t1.")
    upstream_ids = [
        r.path.rsplit("/", 1)[1] for r in edge_stack.launch.records if r.path.startswith("/v1/async-tasks/")
    ]
    assert task_id not in upstream_ids
    reply = await wait(edge_stack, task_id)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert reply.response.task_id == task_id
    assert record.api_key == LAUNCH_KEY_A


@pytest.mark.parametrize("rpc", ["GetAsyncTask", "WaitAsyncTask"])
async def test_another_tenant_gets_not_found(edge_stack: Stack, rpc: str) -> None:
    task_id = await submit(edge_stack)
    get = pb.GetAsyncTaskRequest(task_id=task_id)
    call = edge_stack.stub.GetAsyncTask(get, timeout=10, metadata=bearer(KEY_B)) if rpc == "GetAsyncTask" else None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (call if call is not None else wait(edge_stack, task_id, KEY_B))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "task not found"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: h[:-2] + ("AA" if not h.endswith("AA") else "BB"),
        lambda h: "t1." + h.split(".")[1][::-1] + "." + h.split(".")[2],
        lambda h: "not-a-handle",
        lambda h: h + ".extra",
    ],
    ids=["mac", "payload", "garbage", "extra-part"],
)
async def test_a_tampered_handle_is_invalid_argument(edge_stack: Stack, tamper: object) -> None:
    task_id = await submit(edge_stack)
    forged = tamper(task_id)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=forged), timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("task_id:")


def _respelled(handle: str, respell: str) -> str:
    """The handle with its MAC written another way that a loose base64 decoder reads as the same bytes."""
    version, payload, mac = handle.split(".")
    if respell == "noise":
        mac = mac[:10] + "!!" + mac[10:]
    elif respell == "padding":
        mac += "=="
    elif respell == "extra-padding":
        mac += "===="
    elif respell == "standard-alphabet":
        mac = mac.translate(str.maketrans("-_", "+/"))
    elif respell == "trailing-bits":  # 43 characters carry 258 bits: the last one's low 2 bits are spare
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(mac[-1])
        mac = mac[:-1] + alphabet[last ^ 1]
    elif respell == "space":
        mac = mac[:5] + " " + mac[5:]
    return f"{version}.{payload}.{mac}"


@pytest.mark.parametrize(
    "respell", ["noise", "padding", "extra-padding", "standard-alphabet", "trailing-bits", "space"]
)
async def test_a_handle_has_one_spelling(edge_stack: Stack, respell: str) -> None:
    for _ in range(20):  # the standard alphabet differs only where the MAC has '-' or '_'
        task_id = await submit(edge_stack)
        if respell != "standard-alphabet" or set(task_id.split(".")[2]) & set("-_"):
            break
    respelled = _respelled(task_id, respell)
    assert respelled != task_id
    get = edge_stack.stub.GetAsyncTask
    assert (await get(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10, metadata=bearer(KEY_A))).response.task_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(pb.GetAsyncTaskRequest(task_id=respelled), timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "task_id: not a task handle issued by this gateway"


async def test_a_handle_is_served_after_a_secret_rotation(make_stack: StackFactory) -> None:
    old = await make_stack(api_keys=[LAUNCH_KEY_A], settings={"tenants": tenants()}, gateway_env=ENV)
    task_id = await submit(old)
    rotated_env = {**ENV, "LAUNCH_GATEWAY_HANDLE_SECRETS": f"a-brand-new-secret-0123456789,{HANDLE_SECRET}"}
    new = await make_stack(
        settings={"tenants": tenants(), "upstream": {"url": old.launch.url}}, gateway_env=rotated_env
    )
    assert (await wait(new, task_id)).response.status == pb.TASK_STATUS_SUCCESS
    fresh = await submit(new)
    assert fresh.split(".")[2] != task_id.split(".")[2]  # signed with the new secret
    # A replica that has dropped the old secret refuses old handles.
    dropped = await make_stack(
        settings={"tenants": tenants(), "upstream": {"url": old.launch.url}},
        gateway_env={**ENV, "LAUNCH_GATEWAY_HANDLE_SECRETS": "a-brand-new-secret-0123456789"},
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await wait(dropped, task_id)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await wait(dropped, fresh)).response.status == pb.TASK_STATUS_SUCCESS


async def test_handle_secrets_can_come_from_a_file_one_per_line(make_stack: StackFactory, tmp_path: Path) -> None:
    old = await make_stack(api_keys=[LAUNCH_KEY_A], settings={"tenants": tenants()}, gateway_env=ENV)
    task_id = await submit(old)
    secrets = tmp_path / "handle-secrets"
    secrets.write_text(f"a-brand-new-secret-0123456789\n{HANDLE_SECRET}\n")
    new = await make_stack(
        settings={
            "tenants": tenants(),
            "upstream": {"url": old.launch.url},
            "auth": {"handle_secrets_file": str(secrets)},
        },
        gateway_env={"TEAM_A_LAUNCH_KEY": LAUNCH_KEY_A},  # no secrets in the environment
    )
    assert (await wait(new, task_id)).response.status == pb.TASK_STATUS_SUCCESS  # the second line verifies
    fresh = await submit(new)
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the first line signs: the old replica cannot verify it
        await wait(old, fresh)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("secrets", ["too-short", f"{HANDLE_SECRET},short"], ids=["one", "one-of-two"])
async def test_handle_secrets_shorter_than_16_bytes_are_refused(make_stack: StackFactory, secrets: str) -> None:
    with pytest.raises(ConfigError, match=r"auth\.handle_secrets_env: task handle secrets must be at least 16 bytes"):
        await make_stack(settings={"tenants": tenants()}, gateway_env={**ENV, "LAUNCH_GATEWAY_HANDLE_SECRETS": secrets})
