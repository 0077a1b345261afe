"""What /metrics shows: the registry's families as a Go gRPC server's client_golang writes them.

Two differences from prometheus-client's own text would keep Python and Go servers apart on one
dashboard. prometheus-client adds a `_created` series to every counter and histogram child (Go adds
none; here they were 28 % of the series), so they are left out. It writes a bucket bound as Python's
`repr` does, `le="1.0"`, where Go writes `le="1"` (`strconv.FormatFloat(f, 'g', -1, 64)`); Prometheus 2
reads those as different label values, so the buckets of a Python and a Go server would not sum.
`go_float` writes bounds as Go does. Both hold for one process's registry and for the sum over
`serve --workers N`'s files alike, since both are shown through `GoExposition`.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

_GO_EXPONENT_FROM = 6  # Go's shortest 'g' switches to %e at this decimal exponent (strconv/ftoa.go: eprec = 6)


def go_float(value: float) -> str:
    """`value` as Go's `strconv.FormatFloat(value, 'g', -1, 64)` writes it, which client_golang uses
    for label values such as `le`: the shortest digits that read back as `value` (those of Python's
    repr), in %e form when the decimal exponent is below -4 or at least 6, and no trailing zeros."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign, digits, exponent = decimal.Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)  # finite
    minus = "-" if sign else ""
    if not any(digits):
        return minus + "0"
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    text = "".join(map(str, digits))
    point = len(text) + exponent  # digits before the decimal point
    if point - 1 < -4 or point - 1 >= _GO_EXPONENT_FROM:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        power = point - 1
        return f"{minus}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= len(text):
        return minus + text + "0" * (point - len(text))
    return f"{minus}{text[:point]}.{text[point:]}"


class GoExposition(Collector):
    """A collector showing `source`'s families without `_created` series and with Go's `le` labels."""

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            created = family.name + "_created"
            samples = [s for s in family.samples if s.name != created]
            if family.type == "histogram":
                samples = [
                    s._replace(labels={**s.labels, "le": go_float(float(s.labels["le"]))}) if "le" in s.labels else s
                    for s in samples
                ]
            family.samples = samples
            yield family
