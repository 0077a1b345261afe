"""`make bench` keeps working: a few sections at their quick sizes, with real processes and h2load.

Only that the sections run and print their figures is checked, never the numbers: the machine
running the tests is not a benchmark machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (Debian nghttp2-client) is missing")


def test_bench_quick_run_prints_each_figure_with_its_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write", "unary", "streaming", "cancellation"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ": failed:" not in done.stdout, done.stdout[-3000:]
    for figure, reference in (
        ("Predict calls/s, 64 callers (h2load)", "bare echo"),
        ("Predict p50 added at 1 caller (h2load)", "Launch HTTP p50 (h2load --h1)"),
        ("StreamPredict events/s, 1 stream (h2load)", "SSE read directly"),
        ("Predict cancel -> local Launch sees disconnect, p99", "sync task direct"),
    ):
        line = next((row for row in done.stdout.splitlines() if row.startswith(figure)), "")
        assert reference in line, f"{figure!r} not printed with {reference!r}:\n{done.stdout[-3000:]}"
