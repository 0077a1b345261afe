"""Settings: file, environment and flag precedence, and problems named by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch_gateway.server.app import rate_limiter
from launch_gateway.server.errors import ConfigError
from launch_gateway.server.limits.redis_buckets import RedisRateLimiter
from launch_gateway.server.settings import Settings, build_settings, env_var, load_settings, setting_names
from launch_gateway.server.upstream.launch_api import LaunchAPI
from tests.fake_clock import FakeClock


def test_defaults_need_no_file() -> None:
    settings = build_settings()
    assert settings.server.port == 50051
    assert settings.upstream.auth == "service"
    assert settings.poll.initial < 1  # never the Launch client's flat 2 s


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nport = 1000\nhost = "0.0.0.0"\n[upstream]\nurl = "http://a"\n[auth]\nopen = true\n')
    env = {env_var("server.port"): "2000", env_var("upstream.url"): "http://b"}
    settings = load_settings(path, env=env, overrides={"server.port": 3000, "upstream.url": None})
    assert settings.server.port == 3000
    assert settings.server.host == "0.0.0.0"
    assert settings.upstream.url == "http://b"


def test_env_strings_are_parsed_by_type() -> None:
    env = {env_var("server.reflection"): "false", env_var("timeouts.sync"): "2.5"}
    settings = build_settings(env=env)
    assert settings.server.reflection is False
    assert settings.timeouts.sync == 2.5


def test_every_problem_is_reported_with_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(
            {
                "server": {"port": "x", "colour": "blue"},
                "upstream": {"auth": "magic"},
                "nonsense": {},
            }
        )
    assert caught.value.problems == [
        "server.colour: unknown setting",
        "server.port: must be an integer, not 'x'",
        "upstream.auth: must be one of service, forward, not 'magic'",
        "nonsense: unknown section",
    ]


def test_range_rules_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"poll\.max: must not be less than poll\.initial"):
        build_settings({"poll": {"initial": 2.0, "max": 1.0}})
    with pytest.raises(ConfigError, match=r"upstream\.url: must start with http"):
        build_settings({"upstream": {"url": "ftp://x"}})


def test_broken_toml_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_setting_names_cover_every_section() -> None:
    names = setting_names()
    assert "upstream.url" in names
    assert "timeouts.stream_idle" in names
    assert env_var("timeouts.stream_idle") == "LAUNCH_GATEWAY_TIMEOUTS_STREAM_IDLE"


ONE_OF_EACH = """\
[server]
port = "x"        # a type error
colour = "blue"   # an unknown key
[timeouts]
sync = -1         # a range problem
[poll]
initial = 2.0     # a cross-field problem: max < initial
max = 1.0
[tenants.team-a]
endpoints = ["echo"]
mtls_subjects = ["team-a"]  # a cross-field problem: needs server.tls_client_ca_file
max_unary = -1              # a range problem in a tenant
upstream = "forward"
"""


def test_one_file_reports_every_kind_of_problem_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(ONE_OF_EACH)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert sorted(caught.value.problems) == sorted(
        [
            "server.colour: unknown setting",
            "server.port: must be an integer, not 'x'",
            "timeouts.sync: must be greater than 0, not -1.0",
            "poll.max: must not be less than poll.initial",
            "tenants.team-a.max_unary: must not be negative, not -1",
            "tenants: mtls_subjects need server.tls_client_ca_file (client certificates)",
        ]
    )


def test_check_config_prints_every_problem_of_the_file_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from launch_gateway.cli import main

    path = tmp_path / "gateway.toml"
    path.write_text(ONE_OF_EACH)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    for key in ("server.colour", "server.port", "timeouts.sync", "poll.max", "tenants.team-a.max_unary", "tenants:"):
        assert f"\n  {key}" in err, err


async def test_the_upstream_client_takes_its_defaults_from_the_settings() -> None:
    settings = Settings()
    api = LaunchAPI(settings.upstream, FakeClock())
    await api.start()
    try:
        upstream = settings.upstream
        shares = (upstream.max_connections, upstream.max_stream_connections, upstream.max_lookup_connections)
        assert shares == (1024, 256, 32)
        assert [share.size for share in api.shares] == [*shares, 1]  # and one for the readiness probe
    finally:
        await api.close()


async def test_the_redis_limiter_takes_its_prefix_and_policy_from_the_settings() -> None:
    settings = build_settings({"limits": {"backend": "redis", "fail_open": False}})
    limiter = rate_limiter(settings, {settings.limits.redis_url_env: "redis://127.0.0.1:1/0"}, FakeClock())
    try:
        assert isinstance(limiter, RedisRateLimiter)
        assert (
            (limiter.prefix, limiter.fail_open)
            == (settings.limits.redis_prefix, False)
            == ("launch-gateway:rl:", False)
        )
    finally:
        await limiter.close()
