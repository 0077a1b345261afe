"""Tenants, keys and secrets shared by the edge tests."""

from __future__ import annotations

from typing import Any

import pytest

from launch_gateway.server.access.tenants import hash_key
from tests.conftest import Stack, StackFactory

KEY_A = "gw-key-team-a-0123456789"
KEY_B = "gw-key-team-b-9876543210"
LAUNCH_KEY_A = "launch-key-of-team-a"
HANDLE_SECRET = "handle-secret-0123456789abcdef"


def tenants(**overrides: dict[str, Any]) -> dict[str, Any]:
    """team-a: service key, some endpoints; team-b: forwards its own key, echo* only."""
    base: dict[str, Any] = {
        "team-a": {
            "api_key_hashes": [hash_key(KEY_A)],
            "endpoints": ["echo", "echo-async", "count", "describe", "sleep"],
            "upstream": "service",
            "upstream_key_env": "TEAM_A_LAUNCH_KEY",
            "callbacks": {"hosts": ["127.0.0.1"], "allow_http": True, "allow_private": True},
        },
        "team-b": {"api_key_hashes": [hash_key(KEY_B)], "endpoints": ["echo*"], "upstream": "forward"},
    }
    for name, table in overrides.items():
        base[name] = {**base.get(name, {}), **table}
    return base


ENV = {"TEAM_A_LAUNCH_KEY": LAUNCH_KEY_A, "LAUNCH_GATEWAY_HANDLE_SECRETS": HANDLE_SECRET}


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
async def edge_stack(make_stack: StackFactory) -> Stack:
    return await make_stack(api_keys=[LAUNCH_KEY_A, KEY_B], settings={"tenants": tenants()}, gateway_env=ENV)
