"""The README's configuration: every setting in its table, and its complete example accepted by check-config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import trustme

from launch_gateway.server.settings import setting_names
from tests.conftest import LAUNCH_GATEWAY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    table = README[README.index("## Configuration") :]
    assert [name for name in setting_names() if f"| `{name}`" not in table and f", `{name}`" not in table] == []


def test_the_complete_example_config_is_accepted(tmp_path: Path) -> None:
    example = next(b for b in re.findall(r"```toml\n(.*?)```", README, flags=re.S) if "[tenants." in b)
    ca = trustme.CA()
    cert = ca.issue_cert("gateway.example.com")
    files = {
        "/etc/launch-gateway/tls/server.crt": cert.cert_chain_pems[0].bytes(),
        "/etc/launch-gateway/tls/server.key": cert.private_key_pem.bytes(),
        "/etc/launch-gateway/tls/clients-ca.crt": ca.cert_pem.bytes(),
        "/run/secrets/ranking-launch-key": b"ranking-launch-key\n",
    }
    for path, content in files.items():
        local = tmp_path / Path(path).name
        local.write_bytes(content)
        example = example.replace(path, str(local))
    config = tmp_path / "gateway.toml"
    config.write_text(example)
    env = {
        "PATH": "/usr/bin:/bin",
        "LAUNCH_GATEWAY_HANDLE_SECRETS": "a-long-enough-handle-secret",
        "SEARCH_LAUNCH_KEY": "search-launch-key",
        "LAUNCH_GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    result = subprocess.run([LAUNCH_GATEWAY, "check-config", str(config)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: ok"
    del env["SEARCH_LAUNCH_KEY"], env["LAUNCH_GATEWAY_REDIS_URL"]
    result = subprocess.run([LAUNCH_GATEWAY, "check-config", str(config)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "tenants.search.upstream_key_env: $SEARCH_LAUNCH_KEY is not set" in result.stderr
    assert "limits.redis_url_env: $LAUNCH_GATEWAY_REDIS_URL is not set" in result.stderr
