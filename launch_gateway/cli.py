"""The `launch-gateway` command: `serve`, `local-launch`, `demo`, `check-config`, `hash-key` and `health`.

The module imports only the standard library; each command imports what it needs when it runs. The
server's commands need the `server` extra (`pip install 'launch-gateway[server]'`) and `local-launch`
and `demo` the testing package too (the production image leaves it out), `serve` with tracing on the
`tracing` extra; without them the command says so in one line. `health` needs only the SDK, so a
container's health check runs anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launch_gateway.server.settings import Settings

# What the server's commands import beyond the SDK: the `server` extra's modules, by import name.
SERVER_EXTRA = frozenset({"aiohttp", "prometheus_client", "redis", "grpc_health", "grpc_reflection"})
TESTING = "launch_gateway.testing"  # the Launch imitation and the demo, left out of the production image
TRACING_EXTRA = "opentelemetry"  # what the `tracing` extra installs, needed only with tracing.otlp_endpoint set


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop when it is installed (faster), else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def until_signalled(stop: Callable[[], Awaitable[None]], announce: Callable[[], None] = lambda: None) -> None:
    """Wait for SIGINT or SIGTERM, then run `stop`.

    `announce` runs once the handlers are in place: whoever reads the listening line it prints may
    signal at once, and the process must drain rather than die of the default handler.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        announce()
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    await stop()


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The flags' settings (`--<setting> VALUE` or a short alias), by dotted name; None where not given."""
    from launch_gateway.server.settings import setting_names

    overrides = {name: getattr(args, _dest(name)) for name in setting_names()}
    aliases = {"upstream.url": args.upstream, "upstream.auth": args.upstream_auth, "server.host": args.host}
    aliases["server.port"] = args.port
    aliases["server.workers"] = args.workers
    overrides.update({k: v for k, v in aliases.items() if v is not None})
    return overrides


def settings_from(args: argparse.Namespace) -> Settings:
    """The config file, then LAUNCH_GATEWAY_* variables, then flags."""
    from launch_gateway.server.settings import load_settings

    return load_settings(args.config, env=os.environ, overrides=overrides_from(args))


def _dest(name: str) -> str:
    return "set_" + name.replace(".", "_")


async def serve(settings: Settings, config_path: str | None, overrides: dict[str, Any] | None = None) -> int:
    from launch_gateway.server.app import GatewayServer
    from launch_gateway.server.observability.logs import flush_logs

    # The flags are applied again on every reload, as at start.
    gateway = GatewayServer(settings, env=os.environ, config_path=config_path, overrides=overrides)
    await gateway.start()
    tenants = len(settings.tenants)
    who = "open mode" if settings.open_mode else f"{tenants} tenant{'s' if tenants != 1 else ''}"
    metrics = f"; metrics on {gateway.ops.url}/metrics" if gateway.ops else ""
    line = f"launch-gateway listening on {gateway.address} -> {settings.upstream.url} ({who}){metrics}"
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, gateway.reload)
    flusher = asyncio.create_task(flush_logs_periodically())
    try:
        await until_signalled(gateway.stop, announce=lambda: print(line, flush=True))
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        flusher.cancel()
        flush_logs()
    return 0


async def flush_logs_periodically() -> None:
    from launch_gateway.server.observability.logs import FLUSH_INTERVAL, flush_logs

    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        flush_logs()


async def local_launch(args: argparse.Namespace) -> int:
    from launch_gateway.testing.local_launch import Faults, LocalLaunchServer, describe_endpoints, parse_endpoint_spec

    specs = [parse_endpoint_spec(text) for text in args.endpoint] or None
    faults = Faults.from_args(args)
    server = LocalLaunchServer(
        specs,
        host=args.host,
        port=args.port,
        api_keys=args.api_key,
        ping_interval=args.ping_interval,
        faults=faults,
    )
    await server.start()

    def announce() -> None:
        print(f"local Launch server listening on {server.url}", flush=True)
        for line in describe_endpoints(server):
            print(f"  {line}", flush=True)
        if faults.active:
            print(f"faults: {faults.describe()}", flush=True)

    await until_signalled(server.stop, announce)
    return 0


def every_setting() -> list[str]:
    """The settings' dotted names, for `serve --<setting>`; none when the server is not installed."""
    try:
        from launch_gateway.server.settings import setting_names
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in SERVER_EXTRA:
            raise
        return []  # `serve` will say which extra to install
    return setting_names()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch-gateway", description="A gRPC gateway for Scale Launch.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the gateway")
    serve_cmd.add_argument("--config", help="TOML file with settings (flags override it)")
    serve_cmd.add_argument("--upstream", help="the Launch API's base URL (upstream.url)")
    serve_cmd.add_argument(
        "--upstream-auth",
        choices=("service", "forward"),
        help="whose Launch key goes upstream (upstream.auth)",
    )
    serve_cmd.add_argument("--host", help="address to listen on (server.host)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on, 0 for any (server.port)")
    serve_cmd.add_argument("--workers", type=int, help="processes sharing the port, one per core (server.workers)")
    every = serve_cmd.add_argument_group(
        "every setting", "each setting as a flag; the README's table says what it does"
    )
    for name in every_setting():
        every.add_argument(f"--{name}", dest=_dest(name), metavar="VALUE")

    local_cmd = commands.add_parser("local-launch", help="run the Launch-compatible local server")
    local_cmd.add_argument("--host", default="127.0.0.1")
    local_cmd.add_argument("--port", type=int, default=5005)
    local_cmd.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=KIND:module:function",
        help="serve a Python function as an endpoint (repeatable; KIND is sync, async or streaming)",
    )
    local_cmd.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accept only this API key (repeatable; none: accept all)",
    )
    local_cmd.add_argument("--ping-interval", type=float, default=15.0, help="seconds between SSE pings")
    fault_flags = local_cmd.add_argument_group(
        "faults", "inject Launch's failures into the task routes (all off by default)"
    )
    fault_flags.add_argument(
        "--fault-latency", type=float, default=0.0, metavar="S", help="seconds added before answering"
    )
    fault_flags.add_argument(
        "--fault-jitter", type=float, default=0.0, metavar="S", help="uniform extra latency, 0 to S"
    )
    fault_flags.add_argument(
        "--fault-error",
        action="append",
        default=[],
        metavar="STATUS:RATE",
        help="answer STATUS instead with probability RATE, e.g. 503:0.1 (repeatable)",
    )
    fault_flags.add_argument("--fault-throttle", type=float, default=0.0, metavar="RATE", help="probability of a 429")
    fault_flags.add_argument(
        "--fault-retry-after", type=float, default=1.0, metavar="S", help="the 429's Retry-After (whole seconds)"
    )
    fault_flags.add_argument(
        "--fault-drop-stream-after", type=int, metavar="N", help="end each stream after N events (no end marker)"
    )
    fault_flags.add_argument(
        "--fault-cut-stream", action="store_true", help="with --fault-drop-stream-after: send half an event, then cut"
    )
    fault_flags.add_argument(
        "--fault-stall", type=float, default=0.0, metavar="S", help="hold responses S seconds without a byte"
    )
    fault_flags.add_argument(
        "--fault-stall-rate", type=float, default=1.0, metavar="RATE", help="probability of a stall"
    )
    fault_flags.add_argument(
        "--fault-cut-body", type=float, default=0.0, metavar="RATE", help="probability of half a JSON body, then close"
    )
    fault_flags.add_argument(
        "--fault-bad-json", type=float, default=0.0, metavar="RATE", help="probability of a non-JSON 200"
    )
    fault_flags.add_argument(
        "--fault-wrong-content-type", type=float, default=0.0, metavar="RATE", help="probability of a text/html 200"
    )
    fault_flags.add_argument("--fault-lookups", action="store_true", help="inject into GET /v1/model-endpoints too")
    fault_flags.add_argument("--fault-seed", type=int, metavar="N", help="seed the random draws (reproducible faults)")

    demo_cmd = commands.add_parser("demo", help="the gateway and a local Launch server, with three calls")
    demo_cmd.add_argument("--once", action="store_true", help="exit after the calls instead of serving")

    check_cmd = commands.add_parser("check-config", help="validate a config file (and its secrets) offline")
    check_cmd.add_argument("file")
    commands.add_parser("hash-key", help="print the sha256: hash of an API key read from standard input")

    health_cmd = commands.add_parser(
        "health", help="ask a gateway's gRPC health service whether it is ready (or live); exit 0 if SERVING"
    )
    health_cmd.add_argument("--address", default="127.0.0.1:50051", help="host:port of the gateway")
    health_cmd.add_argument(
        "--liveness",
        action="store_true",
        help="ask whether the process serves (container health checks) instead of whether it can reach Launch",
    )
    health_cmd.add_argument("--timeout", type=float, default=3.0)
    health_cmd.add_argument("--tls", action="store_true", help="the gateway serves TLS")
    health_cmd.add_argument("--ca-file", help="PEM roots to trust (implies --tls)")
    health_cmd.add_argument("--client-cert", help="PEM client certificate, when the gateway requires mTLS")
    health_cmd.add_argument("--client-key", help="PEM client key")
    return parser


async def check_health(args: argparse.Namespace) -> int:
    import grpc

    from launch_gateway.client import health
    from launch_gateway.client.channel import ChannelSettings

    address, wait = args.address, args.timeout
    settings = ChannelSettings(
        address, tls=args.tls, root_certificates=args.ca_file, client_certificate=args.client_cert,
        client_key=args.client_key,
    )  # fmt: skip
    credentials = settings.credentials()
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    async with channel:
        try:
            entry = health.LIVENESS if args.liveness else health.READINESS
            status = await health.check_health(channel, entry, deadline=wait)
        except grpc.aio.AioRpcError as exc:
            print(f"{address}: {exc.code().name}", file=sys.stderr)
            return 1
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1


def missing_install(command: str, exc: ModuleNotFoundError) -> str | None:
    """The one line to print when `command` lacks a piece of the install, or None for any other module."""
    if (exc.name or "").partition(".")[0] in SERVER_EXTRA:
        return (
            f"launch-gateway {command}: needs the server extra ({exc.name} is not installed): "
            "pip install 'launch-gateway[server]'"
        )
    if (exc.name or "").partition(".")[0] == TRACING_EXTRA:
        return (
            f"launch-gateway {command}: tracing.otlp_endpoint is set, which needs the tracing extra "
            f"({exc.name} is not installed): pip install 'launch-gateway[server,tracing]'"
        )
    if exc.name == TESTING:
        return (
            f"launch-gateway {command}: the testing package ({TESTING}: the local Launch server and the demo) "
            "is not installed here; the production image leaves it out"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_command(args, argv)
    except ModuleNotFoundError as exc:
        line = missing_install(args.command, exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    except ValueError as exc:  # ConfigError included: every problem of the configuration, one per line
        print(f"launch-gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from launch_gateway.server.errors import ListenError

        if not isinstance(exc, ListenError):
            raise
        print(f"launch-gateway: {exc}", file=sys.stderr)  # one line naming the setting and the address
        return 1
    except KeyboardInterrupt:
        return 130


def run_command(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    if args.command == "health":
        return run(check_health(args))
    from launch_gateway.server.observability.logs import configure_logging
    from launch_gateway.server.settings import load_settings

    if args.command == "serve":
        settings = settings_from(args)
        configure_logging(settings.log.level, settings.log.format)
        if settings.server.workers > 1:
            from launch_gateway.server.workers import run_workers

            serve_argv = list(sys.argv[1:] if argv is None else argv)
            return run(run_workers(settings, serve_argv, os.environ))
        return run(serve(settings, args.config, overrides_from(args)))
    if args.command == "local-launch":
        return run(local_launch(args))
    if args.command == "demo":
        from launch_gateway.testing.demo import demo

        configure_logging("WARNING", "human")  # the calls' own output is the show; warnings still appear
        return run(demo(once=args.once))
    if args.command == "check-config":
        from launch_gateway.server.admission import load_edge

        load_edge(load_settings(args.file, env=os.environ), os.environ)
        print(f"{args.file}: ok")
        return 0
    if args.command == "hash-key":
        from launch_gateway.server.access.tenants import hash_key

        key = sys.stdin.readline().strip()
        if not key:
            raise ValueError("hash-key reads the API key from standard input")
        print(hash_key(key))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
