"""Helpers for the operations tests: scraping a gateway's HTTP port."""

from __future__ import annotations

import aiohttp

from tests.conftest import Stack


async def http_get(stack: Stack, path: str) -> tuple[int, str]:
    assert stack.gateway.ops is not None
    async with aiohttp.ClientSession() as session, session.get(stack.gateway.ops.url + path) as response:
        return response.status, await response.text()


def samples(scrape: str, name: str) -> dict[str, float]:
    """The series of one metric in a scrape: {'{labels}': value}."""
    found = {}
    for line in scrape.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            found[series[len(name) :]] = float(value)
    return found
