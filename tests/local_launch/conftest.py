"""Fixtures for the local Launch server tests: a started server with the built-in endpoints, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from launch_gateway.testing.local_launch import LocalLaunchServer


@pytest.fixture
async def server() -> AsyncIterator[LocalLaunchServer]:
    async with LocalLaunchServer() as launch:
        yield launch


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
