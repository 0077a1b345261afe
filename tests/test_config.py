"""Settings: file, environment and flag precedence, and problems named by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch_gateway.server.settings import ConfigError, build_settings, env_var, load_settings, setting_names


def test_defaults_need_no_file() -> None:
    settings = build_settings()
    assert settings.server.port == 50051
    assert settings.upstream.auth == "service"
    assert settings.poll.initial < 1  # never the Launch client's flat 2 s


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nport = 1000\nhost = "0.0.0.0"\n[upstream]\nurl = "http://a"\n')
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
