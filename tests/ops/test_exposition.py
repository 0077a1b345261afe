"""Bucket bounds as Go writes them: `go_float` against Go's own strconv.FormatFloat(f, 'g', -1, 64),
which client_golang's text format uses for `le`, run by the Go toolchain on thousands of values."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import struct
from pathlib import Path

from launch_gateway.server.observability.exposition import go_float
from launch_gateway.server.observability.metrics import LATENCY_BUCKETS

ROOT = Path(__file__).resolve().parents[2]
FORMAT_FLOAT = """\
package main

import (
\t"bufio"
\t"fmt"
\t"os"
\t"strconv"
)

func main() {
\tin := bufio.NewScanner(os.Stdin)
\tout := bufio.NewWriter(os.Stdout)
\tdefer out.Flush()
\tfor in.Scan() {
\t\tf, err := strconv.ParseFloat(in.Text(), 64)
\t\tif err != nil {
\t\t\tpanic(err)
\t\t}
\t\tfmt.Fprintln(out, strconv.FormatFloat(f, 'g', -1, 64))
\t}
}
"""


def values() -> list[float]:
    """Our buckets, the edges of Go's %e/%f switch, round and random numbers, and any double."""
    rng = random.Random(20240601)
    found = [*map(float, LATENCY_BUCKETS), 0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]
    found += [m * 10.0**k for k in range(-12, 25) for m in (1, 2.5, 5, 9.99, 123456.789)]
    found += [999999.0, 999999.5, 1e6, 1234567.0, 1e-4, 1e-5, 0.00012345, 100000.0]
    found += [round(rng.uniform(0, 1000), rng.randint(0, 8)) for _ in range(1000)]
    while len(found) < 4000:
        (double,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if double == double and abs(double) != float("inf"):
            found.append(double)
    return found


async def test_go_float_writes_bucket_bounds_as_go_strconv_does(tmp_path: Path) -> None:
    go = shutil.which("go")
    assert go, "the Go toolchain comes from the Debian package golang-go (make system-deps installs it)"
    (tmp_path / "main.go").write_text(FORMAT_FLOAT)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOCACHE": str(ROOT / ".cache" / "go-build"),
        "GOPATH": str(tmp_path / "gopath"),
        "GOPROXY": "off",
        "GOFLAGS": "",
    }
    numbers = values()
    process = await asyncio.create_subprocess_exec(
        go, "run", "main.go", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate("".join(f"{v!r}\n" for v in numbers).encode()), 300)
    assert process.returncode == 0, err.decode()
    by_go = out.decode().splitlines()
    assert len(by_go) == len(numbers)
    differ = [(v, ours, theirs) for v, theirs in zip(numbers, by_go, strict=True) if (ours := go_float(v)) != theirs]
    assert not differ, differ[:10]
