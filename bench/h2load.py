"""h2load (nghttp2) as the load generator: gRPC over HTTP/2 with a pre-framed body, or HTTP/1.1 JSON.

A gRPC request body is the message behind a 5-byte prefix (compressed flag, big-endian length).
h2load sees only HTTP statuses, so a gRPC error (HTTP 200 with grpc-status != 0 in the trailers)
counts as a success: callers of `run` read the gateway's own counters to find errors. Latency
percentiles come from `--log-file`, one line per request (start in µs, status, duration in µs).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from bench.stats import percentile

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
JSON_HEADERS = ("content-type: application/json",)


def grpc_frame(message: Message) -> bytes:
    """The message as one uncompressed gRPC length-prefixed frame."""
    data = message.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def available() -> bool:
    return shutil.which("h2load") is not None


@dataclass
class H2LoadResult:
    """What one h2load run measured."""

    seconds: float
    requests_per_second: float
    done: int
    succeeded: int
    failed: int
    errored: int
    status_2xx: int
    status_other: int  # 3xx, 4xx and 5xx answers (requests reset before an answer have no status)
    data_bytes: int
    latencies_ms: list[float] = field(repr=False)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def _number(pattern: str, text: str, default: float = 0.0) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else default


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]


def parse(output: str, log_text: str) -> H2LoadResult:
    finished = re.search(r"finished in ([\d.]+)(s|ms|us), ([\d.]+) req/s", output)
    if finished is None:
        raise RuntimeError(f"h2load printed no result:\n{output}")
    latencies = []
    for line in log_text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].startswith("2"):
            latencies.append(int(parts[2]) / 1000.0)
    traffic = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data", output)
    return H2LoadResult(
        seconds=_seconds(finished.group(1), finished.group(2)),
        requests_per_second=float(finished.group(3)),
        done=int(_number(r"(\d+) done", output)),
        succeeded=int(_number(r"(\d+) succeeded", output)),
        failed=int(_number(r"(\d+) failed", output)),
        errored=int(_number(r"(\d+) errored", output)),
        status_2xx=int(_number(r"(\d+) 2xx", output)),
        status_other=sum(int(_number(rf"(\d+) {c}xx", output)) for c in "345"),
        data_bytes=int(traffic.group(3)) if traffic else 0,
        latencies_ms=latencies,
    )


async def run(
    url: str,
    body: bytes,
    *,
    headers: Sequence[str],
    clients: int,
    streams: int,
    duration: float | None = None,
    warmup: float = 0.0,
    requests: int | None = None,
    http1: bool = False,
    time_limit: float = 120.0,
) -> H2LoadResult:
    """One h2load run: `clients` connections with `streams` requests in flight on each.

    Either for `duration` seconds after `warmup`, or for exactly `requests` requests.
    """
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as scratch:
        body_path = Path(scratch) / "body"
        body_path.write_bytes(body)
        log_path = Path(scratch) / "requests.log"
        argv = ["h2load", "-c", str(clients), "-m", str(streams), "-d", str(body_path), "--log-file", str(log_path)]
        if duration is not None:
            argv += ["-D", f"{int(duration * 1000)}ms"]
            if warmup > 0:
                argv += ["--warm-up-time", f"{int(warmup * 1000)}ms"]
        else:
            argv += ["-n", str(requests or clients * streams)]
        if http1:
            argv.append("--h1")
        for header in headers:
            argv += ["-H", header]
        argv.append(url)
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), time_limit)
        except TimeoutError:
            raise RuntimeError(f"h2load did not finish within {time_limit:.0f} s: {' '.join(argv)}") from None
        finally:
            if process.returncode is None:  # timed out, or the caller cancelled the run
                process.kill()
                await process.wait()
        output = out.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"h2load failed ({process.returncode}): {' '.join(argv)}\n{output}")
        return parse(output, log_path.read_text() if log_path.exists() else "")
