"""Scale-out with real parts: two gateway replicas behind nginx, sharing one redis-server.

    python -m bench.rollout [--seconds 20] [--clients 6]

Starts a redis-server, the local Launch server, two `launch-gateway serve` processes (tenants,
`limits.backend = "redis"`, one task-handle secret) on fixed free ports, and nginx (`grpc_pass` to an
upstream of both, HTTP/2 to clients, keepalive connections, so each call is balanced on its own). Then:

  (a) limit: a tenant with burst N and a negligible refill sends 2N Predicts through nginx; exactly N
      may pass, although both replicas served them (nginx's access log says where each went);
  (b) handles: SubmitAsync on one replica directly, GetAsyncTask and WaitAsyncTask on the other directly
      and through nginx, both ways round;
  (c) rollout: clients with the SDK's channel options (its retry policy) send Predict, SubmitAsync +
      WaitAsyncTask and StreamPredict through nginx while each replica in turn is SIGTERMed and started
      again on its port. Every call must end OK; the SDK retries only GetAsyncTask/WaitAsyncTask/GetEndpoint
      (on UNAVAILABLE), so a non-OK Predict, SubmitAsync or stream is a lost call.

Prints the counts per outcome and exits 1 if any of the three fails. The loops are bounded by the
phase length and by deadlines; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.processes import Gateway, LocalLaunch, gateway_config, start_gateway, start_local_launch
from launch_gateway.client.channel import ChannelSettings
from launch_gateway.server.access.tenants import hash_key
from launch_gateway.server.workers import free_port
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.redis_server import RedisServer

LOAD_KEY = "gw-key-rollout-load-0123456789"
LIMITED_KEY = "gw-key-rollout-limited-0123456789"
HANDLE_SECRET = "rollout-handle-secret-0123456789abcdef"
BURST = 20  # the limited tenant's bucket; its refill (one call per 1000 s) adds nothing during the phase
DEADLINE = 10.0
GRACE = 4.0  # each replica's server.grace_period


def replica_config(upstream: str, port: int) -> str:
    everything = ["echo", "echo-async", "count"]
    tenants = {
        "load": {"api_key_hashes": [hash_key(LOAD_KEY)], "endpoints": everything, "upstream": "service"},
        "limited": {
            "api_key_hashes": [hash_key(LIMITED_KEY)],
            "endpoints": everything,
            "upstream": "service",
            "rate": {"per_second": 0.001, "burst": BURST},
        },
    }
    for table in tenants.values():
        table["upstream_key_env"] = "ROLLOUT_LAUNCH_KEY"
    return gateway_config(
        upstream,
        server={"host": "127.0.0.1", "port": port, "grace_period": GRACE},
        limits={"backend": "redis"},
        log={"access": False},
        tenants=tenants,
    )


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format calls '$upstream_addr|$upstream_status|$upstream_trailer_grpc_status';
    access_log {dir}/nginx-access.log calls;
    upstream gateways {{
        # max_fails=0: a refused connect moves the call on but never takes the replica out, so a replica
        # that is back is used at once (the default, 1 failure = out for 10 s, left none during a rollout).
        server 127.0.0.1:{a} max_fails=0;
        server 127.0.0.1:{b} max_fails=0;
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://gateways;
            grpc_read_timeout 60s;
            # A refused connection or a broken one before any response is tried on the other replica;
            # without non_idempotent, a call once sent is never repeated (a SubmitAsync could run twice).
            grpc_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with a prefix and config of its own."""

    def __init__(self, directory: Path, ports: tuple[int, int]) -> None:
        self.directory = directory
        self.port = free_port("127.0.0.1")
        self.address = f"127.0.0.1:{self.port}"
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, a=ports[0], b=ports[1], port=self.port))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise SystemExit("nginx is not installed: apt-get install -y nginx")
        self.proc = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "nginx-error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_listening(self, within: float = 10.0) -> None:
        for _ in range(int(within / 0.05)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}; see {self.directory}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"nginx did not listen within {within} s; see {self.directory}")

    def access_lines(self) -> list[list[str]]:
        """Per call: the replicas tried (`A, B` when nginx passed it on), their HTTP statuses, grpc-status."""
        path = self.directory / "nginx-access.log"
        return [line.split("|") for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def channel(target: str, key: str) -> tuple[grpc.aio.Channel, pb_grpc.EndpointServiceAsyncStub, Any]:
    """A channel as the SDK opens one (its service config and retry policy), a stub and the call metadata."""
    settings = ChannelSettings(target=target, api_key=key)
    chan = grpc.aio.insecure_channel(target, settings.channel_options())
    return chan, pb_grpc.EndpointServiceStub(chan), settings.call_metadata()


def _args(args: dict[str, Any]) -> pb.EndpointRequest:
    return pb.EndpointRequest(args_json=json.dumps(args))


async def code_of(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "OK"


# (a) -------------------------------------------------------------------------------------------------------


async def limit_exactness(nginx: Nginx) -> tuple[Counter[str], Counter[str], bool]:
    before = len(nginx.access_lines())
    chan, stub, md = channel(nginx.address, LIMITED_KEY)
    request = pb.PredictRequest(endpoint_name="echo", request=_args({"x": 1}))
    async with chan:
        codes = Counter(
            await asyncio.gather(
                *(code_of(stub.Predict(request, timeout=DEADLINE, metadata=md)) for _ in range(2 * BURST))
            )
        )
    served_by = Counter(line[0].rsplit(":", 1)[-1] for line in nginx.access_lines()[before:])
    ok = codes == Counter({"OK": BURST, "RESOURCE_EXHAUSTED": BURST}) and len(served_by) == 2
    return codes, served_by, ok


# (b) -------------------------------------------------------------------------------------------------------


async def handle_portability(one: str, other: str, via: str) -> tuple[Counter[str], bool]:
    outcomes: Counter[str] = Counter()
    channels = {name: channel(address, LOAD_KEY) for name, address in (("one", one), ("other", other), ("lb", via))}
    try:
        for issuer, servers in (("one", ("other", "lb")), ("other", ("one", "lb"))):
            _, stub, md = channels[issuer]
            for _ in range(3):
                submitted = await stub.SubmitAsync(
                    pb.SubmitAsyncRequest(endpoint_name="echo-async", request=_args({"delay": 0.05})),
                    timeout=DEADLINE,
                    metadata=md,
                )
                for server in servers:
                    _, stub2, md2 = channels[server]
                    get = stub2.GetAsyncTask(
                        pb.GetAsyncTaskRequest(task_id=submitted.task_id), timeout=DEADLINE, metadata=md2
                    )
                    outcomes[f"GetAsyncTask issued by {issuer}, served by {server}: {await code_of(get)}"] += 1
                    wait = stub2.WaitAsyncTask(
                        pb.WaitAsyncTaskRequest(task_id=submitted.task_id), timeout=DEADLINE, metadata=md2
                    )
                    try:
                        task = await wait
                        outcome = pb.TaskStatus.Name(task.response.status)
                    except grpc.aio.AioRpcError as exc:
                        outcome = exc.code().name
                    outcomes[f"WaitAsyncTask issued by {issuer}, served by {server}: {outcome}"] += 1
    finally:
        for chan, _, _ in channels.values():
            await chan.close()
    ok = all(key.endswith((": OK", ": TASK_STATUS_SUCCESS")) for key in outcomes)
    return outcomes, ok


# (c) -------------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)  # calls grpc-core retried (grpc-previous-rpc-attempts)
    lost: list[str] = field(default_factory=list)

    def record(self, rpc: str, code: str, detail: str = "") -> None:
        self.outcomes[f"{rpc} {code}"] += 1
        if code != "OK":
            self.lost.append(f"{rpc} {code} {detail}".strip())


async def unary(tally: Tally, rpc: str, call: Any) -> Any:
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        tally.record(rpc, exc.code().name, exc.details() or "")
        return None
    initial = await call.initial_metadata()
    if initial is not None and dict(initial).get("grpc-previous-rpc-attempts"):
        tally.retried[rpc] += 1
    tally.record(rpc, "OK")
    return reply


TERMINAL = (pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILURE)
MAX_ASKS = 5  # a wait that a draining replica answered early is asked again, as the SDK's future.get does


async def wait_as_the_sdk_does(tally: Tally, stub: Any, md: Any, task_id: str) -> None:
    """WaitAsyncTask until the task is terminal: a drain answers a wait with the last status it saw."""
    for _ in range(MAX_ASKS):
        wait = pb.WaitAsyncTaskRequest(task_id=task_id)
        task = await unary(tally, "WaitAsyncTask", stub.WaitAsyncTask(wait, timeout=DEADLINE, metadata=md))
        if task is None:
            return
        if task.response.status in TERMINAL:
            if task.response.status != pb.TASK_STATUS_SUCCESS:
                tally.record("WaitAsyncTask", pb.TaskStatus.Name(task.response.status))
            return
        tally.outcomes[f"WaitAsyncTask answered {pb.TaskStatus.Name(task.response.status)}, asked again"] += 1
    tally.record("WaitAsyncTask", "NOT_TERMINAL", f"after {MAX_ASKS} asks")


async def client_loop(number: int, target: str, stop: asyncio.Event, tally: Tally) -> None:
    chance = random.Random(number)
    chan, stub, md = channel(target, LOAD_KEY)
    async with chan:
        while not stop.is_set():
            kind = chance.choice(("predict", "async", "stream"))
            if kind == "predict":
                request = pb.PredictRequest(endpoint_name="echo", request=_args({"n": number}))
                await unary(tally, "Predict", stub.Predict(request, timeout=DEADLINE, metadata=md))
            elif kind == "async":
                request = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=_args({"delay": 0.2}))
                submitted = await unary(tally, "SubmitAsync", stub.SubmitAsync(request, timeout=DEADLINE, metadata=md))
                if submitted is not None:
                    await wait_as_the_sdk_does(tally, stub, md, submitted.task_id)
            else:
                request = pb.StreamPredictRequest(endpoint_name="count", request=_args({"n": 10, "interval": 0.05}))
                events = 0
                try:
                    async for _ in stub.StreamPredict(request, timeout=DEADLINE, metadata=md):
                        events += 1
                except grpc.aio.AioRpcError as exc:
                    tally.record("StreamPredict", exc.code().name, f"after {events} events: {exc.details()}")
                else:
                    tally.record("StreamPredict", "OK" if events == 10 else f"SHORT({events})")


async def restart(replica: Gateway, logs: Path, config: str, name: str, env: dict[str, str]) -> tuple[Gateway, int]:
    """SIGTERM `replica`, wait for it to exit, start it again with the same config (same port)."""
    replica.server.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(replica.server.process.wait(), GRACE + 20)
    await replica.server.stop()
    return await start_gateway(logs, config, name=name, env=env), code


async def rolling_restart(
    replicas: list[Gateway],
    configs: list[str],
    nginx: Nginx,
    logs: Path,
    env: dict[str, str],
    seconds: float,
    clients: int,
) -> tuple[Tally, list[str]]:
    tally = Tally()
    stop = asyncio.Event()
    loops = [asyncio.create_task(client_loop(i, nginx.address, stop, tally)) for i in range(clients)]
    events: list[str] = []
    try:
        await asyncio.sleep(seconds / 3)
        for i in (0, 1):
            replicas[i], code = await restart(replicas[i], logs, configs[i], f"replica-{i + 1}", env)
            events.append(f"replica-{i + 1} SIGTERM: exit {code}, started again on {replicas[i].address}")
            await asyncio.sleep(seconds / 3)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), DEADLINE * 3)
    return tally, events


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="rollout-"))  # short: a unix socket path must stay under ~100
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run(seconds: float, clients: int, keep: bool) -> bool:
    with scratch() as directory:
        redis = RedisServer(directory)
        redis.start()
        launch: LocalLaunch | None = None
        replicas: list[Gateway] = []
        nginx: Nginx | None = None
        try:
            launch = await start_local_launch(directory)
            env = {
                "LAUNCH_GATEWAY_REDIS_URL": redis.url,
                "LAUNCH_GATEWAY_HANDLE_SECRETS": HANDLE_SECRET,
                "ROLLOUT_LAUNCH_KEY": "launch-key-of-the-platform",
            }
            ports = (free_port("127.0.0.1"), free_port("127.0.0.1"))
            configs = [replica_config(launch.url, port) for port in ports]
            for i, config in enumerate(configs):
                replicas.append(await start_gateway(directory, config, name=f"replica-{i + 1}", env=env))
            nginx = Nginx(directory, ports)
            await nginx.wait_listening()

            codes, served_by, limit_ok = await limit_exactness(nginx)
            print(
                f"(a) limit, burst {BURST}, {2 * BURST} Predicts through nginx: {dict(codes)}; "
                f"replicas (by port) served {dict(served_by)}: {'holds' if limit_ok else 'FAILS'}"
            )

            handles, handles_ok = await handle_portability(replicas[0].address, replicas[1].address, nginx.address)
            print(f"(b) task handles across replicas: {'hold' if handles_ok else 'FAIL'}")
            for outcome, n in sorted(handles.items()):
                print(f"      {n} x {outcome}")

            tally, events = await rolling_restart(replicas, configs, nginx, directory, env, seconds, clients)
            rollout_ok = not tally.lost
            print(
                f"(c) rolling restart, {clients} clients through nginx for ~{seconds:.0f} s: "
                f"{'no call lost' if rollout_ok else f'{len(tally.lost)} calls lost'}"
            )
            for event in events:
                print(f"      {event}")
            for outcome, n in sorted(tally.outcomes.items()):
                print(f"      {n:5d} x {outcome}")
            for rpc, n in sorted(tally.retried.items()):
                print(f"      {n:5d} x {rpc} succeeded after grpc-core retried it (the SDK's retry policy)")
            for example in Counter(tally.lost).most_common(8):
                print(f"      lost: {example[1]} x {example[0]}")
            lines = nginx.access_lines()
            passed_on = sum("," in line[0] for line in lines)
            statuses = Counter(f"{line[1]}/{line[2]}" for line in lines)
            print(
                f"      nginx: {len(lines)} calls, {passed_on} passed on to the other replica; "
                f"by upstream HTTP status/grpc-status: {dict(statuses)}"
            )
            if keep:
                kept = Path(tempfile.mkdtemp(prefix="rollout-kept-"))
                shutil.copytree(directory, kept, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
                print(f"      logs kept in {kept}")
            return limit_ok and handles_ok and rollout_ok
        finally:
            if nginx is not None:
                nginx.stop()
            for replica in replicas:
                await replica.server.stop()
            if launch is not None:
                await launch.server.stop()
            redis.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=24.0, help="length of the rolling-restart phase")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients during the restart")
    parser.add_argument("--keep-logs", action="store_true", help="copy the scratch directory before removing it")
    options = parser.parse_args()
    ok = asyncio.run(run(options.seconds, options.clients, options.keep_logs))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
