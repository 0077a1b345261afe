"""Figures with their references, ratios and targets; the printed table and the JSON file.

Every figure is the median of repeated runs with the spread (min-max) beside it. Its reference
is measured in the same run, interleaved with it, and the ratio is taken run by run (value_i /
reference_i), then summarised the same way. A target, when the issue sets one, is checked
against the median.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import Spread, differences, ratios

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    value: Spread
    reference_name: str = ""
    reference: Spread | None = None
    ratio: Spread | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "value": self.value.as_json(),
            "reference_name": self.reference_name,
            "reference": self.reference.as_json() if self.reference else None,
            "ratio": self.ratio.as_json() if self.ratio else None,
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


Check = Callable[[Figure], bool]


class Report:
    """Collects the figures of one `make bench` and what was noticed on the way."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.started = datetime.now(UTC)

    def add(
        self,
        section: str,
        name: str,
        unit: str,
        values: list[float],
        *,
        reference_name: str = "",
        reference: list[float] | None = None,
        compare: str = "ratio",  # "ratio" (value / reference) or "difference" (value - reference)
        target: str = "",
        check: Check | None = None,
        note: str = "",
    ) -> Figure:
        value = Spread.of(values)
        ref = Spread.of(reference) if reference is not None else None
        figure = Figure(section, name, unit, value, reference_name, ref, target=target, note=note)
        if ref is not None:
            figure.ratio = ratios(value, ref)
            if compare == "difference":
                # The figure is what the gateway adds: value - reference, the reference as measured.
                figure.value = differences(value, ref)
        if check is not None:
            try:
                figure.met = bool(check(figure)) if not math.isnan(figure.value.median) else None
            except (TypeError, ValueError):
                figure.met = None
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)

    # --- output -----------------------------------------------------------------------------

    def table(self) -> str:
        header = ("figure", "value (median [min-max])", "reference", "ratio", "target", "met?")
        rows: list[tuple[str, ...]] = []
        section = None
        for f in self.figures:
            if f.section != section:
                section = f.section
                rows.append((f"-- {section} --", "", "", "", "", ""))
            ref = f"{_num(f.reference.median)} {f.unit} {f.reference_name}".strip() if f.reference else "-"
            ratio = f"{f.ratio.median:.2f} [{f.ratio.low:.2f}-{f.ratio.high:.2f}]" if f.ratio and f.ratio.valid else "-"
            met = {True: "yes", False: "NO", None: "-"}[f.met]
            rows.append((f.name, _spread(f.value, f.unit), ref, ratio, f.target or "-", met))
        widths = [max(len(row[i]) for row in (*rows, header)) for i in range(len(header))]
        widths[0] = min(widths[0], 62)
        widths[2] = min(widths[2], 46)
        lines = [_row(header, widths), _row(tuple("-" * w for w in widths), widths)]
        lines.extend(_row(row, widths) for row in rows)
        return "\n".join(lines)

    def as_json(self, wall_seconds: float, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(timespec="seconds"),
            "wall_seconds": round(wall_seconds, 1),
            "settings": settings,
            "figures": [f.as_json() for f in self.figures],
            "notes": self.notes,
            **self.extra,
        }

    def write(self, wall_seconds: float, settings: dict[str, Any], directory: Path = RESULTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        text = json.dumps(self.as_json(wall_seconds, settings), indent=2) + "\n"
        path = directory / f"{stamp}.json"
        for target in (path, directory / "latest.json"):
            scratch = target.with_suffix(".json.tmp")
            scratch.write_text(text)
            os.replace(scratch, target)
        return path


def _num(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"


def _spread(spread: Spread, unit: str) -> str:
    if not spread.valid:
        return "n/a"
    if len(spread.valid) == 1:
        return f"{_num(spread.median)} {unit}"
    return f"{_num(spread.median)} {unit} [{_num(spread.low)}-{_num(spread.high)}]"


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    out = []
    for cell, width in zip(cells, widths, strict=True):
        out.append(cell[: width - 1] + "…" if len(cell) > width else cell.ljust(width))
    return " | ".join(out).rstrip()


def machine() -> dict[str, Any]:
    """What the numbers ran on."""
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "loadavg": [round(x, 2) for x in load]}
