"""`python -m bench`: measure the gateway against its references and print every figure with its ratio.

    python -m bench                 # everything (what `make bench` runs), about six and a half minutes
    python -m bench --quick         # every section, tiny sizes (a smoke test, not a measurement)
    python -m bench unary streaming # some sections only

The table goes to stdout; `bench/results/<timestamp>.json` and `bench/results/latest.json` get
every figure with its runs. Servers run in their own processes; the load generators (h2load and
the Python drivers in this process) share the machine's cores with them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import subprocess
import sys
import time
from pathlib import Path

from bench import h2load
from bench.harness import Harness, Sizes
from bench.report import Report, machine

# Section name -> module with `async def measure(harness)`, in the order they run.
SECTIONS = {
    "unary": "bench.unary",
    "streaming": "bench.streaming",
    "waits": "bench.waits",
    "launch-client": "bench.launch_client",
    "open-streams": "bench.open_streams",
    "cancellation": "bench.cancellation",
    "features": "bench.features",
    "profile": "bench.profiling",
}

CAVEAT = (
    "All processes share this machine's {cores} cores: the load generator (h2load or the Python driver) "
    "competes with the server under test, and through the gateway with the local Launch server too. "
    "Nothing is pinned. Figures are medians of {rounds} interleaved runs [min-max]."
)


async def run(names: list[str], sizes: Sizes, report: Report) -> None:
    harness = Harness(sizes, report)
    loads: dict[str, list[float]] = {}
    try:
        for name in names:
            started, load = time.perf_counter(), harness.load()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                await importlib.import_module(SECTIONS[name]).measure(harness)
            except Exception as exc:  # one broken section must not hide the others' figures
                report.note(f"{name}: failed: {type(exc).__name__}: {exc}")
                report.extra.setdefault("failed_sections", []).append(name)
                print(f"[bench] {name} failed: {exc!r}", file=sys.stderr, flush=True)
            took = time.perf_counter() - started
            loads[name] = [round(load, 2), round(harness.load(), 2), round(took, 1)]
            print(f"[bench] {name} done in {took:.0f} s", file=sys.stderr, flush=True)
    finally:
        await harness.close()
        report.extra["sections"] = {
            k: {"loadavg_before": v[0], "loadavg_after": v[1], "seconds": v[2]} for k, v in loads.items()
        }


def source() -> dict[str, object]:
    """Which code was measured: the commit, and the files that differed from it (others may be editing)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "HEAD"), "changed_outside_bench": changed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"default: all of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that sections run (writes no file)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    if not h2load.available():
        print("bench: h2load not found (Debian package nghttp2-client; `make bench` installs it)", file=sys.stderr)
        return 2
    names = args.sections or list(SECTIONS)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    report = Report()
    report.extra["machine"] = machine()
    report.extra["source"] = source()
    started = time.perf_counter()
    asyncio.run(run(names, sizes, report))
    wall = time.perf_counter() - started
    report.extra["machine"]["loadavg_after"] = machine()["loadavg"]
    print(report.table())
    print()
    print(CAVEAT.format(cores=report.extra["machine"]["cores"], rounds=sizes.rounds))
    for figure in report.figures:
        if figure.note and figure.met is False:
            print(f"note: {figure.name}: {figure.note}")
    for note in report.notes:
        print(f"note: {note}")
    profile = report.extra.get("profile")
    if profile:
        print()
        print(importlib.import_module("bench.profiling").describe(profile))
    if not (args.no_write or args.quick):  # quick figures are not measurements: keep latest.json real
        settings = {"sections": names, "sizes": sizes.as_json()}
        path = report.write(wall, settings)
        print(f"\nwrote {path} and {path.parent / 'latest.json'}")
    print(f"wall time {wall:.0f} s")
    failed = report.extra.get("failed_sections", [])
    if failed:
        print(f"bench: sections failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
