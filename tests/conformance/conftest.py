"""The conformance suite: our gateway in front of model-engine's real app (see docs/conformance.md).

These tests are collected only when named on the command line (`pytest tests/conformance`, as
`make conformance` runs them), so the plain `pytest` of `make test` never starts model-engine. The
app runs in its own process and venv (tests/conformance/venv.py, model_engine_app.py), started once
per session after collection, before any per-test timeout runs; each test gets a gateway of its own
in front of it, and `control` to script the pods and the task queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from launch_gateway.server.app import GatewayServer
from launch_gateway.server.settings import build_settings
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conformance import venv

HERE = Path(__file__).resolve().parent
APP_SCRIPT = HERE / "model_engine_app.py"
LOG = venv.LOCAL / "model-engine.log"
STARTUP_SECONDS = 600.0  # importing model-engine takes a minute or more on a busy 2-core machine

# model-engine's fake auth takes any Basic user name as user and team; its endpoint records
# (tests/unit/conftest.py) belong to this one.
OWNER = "test_user_id"
ASYNC = "test_model_endpoint_name_1"
SYNC = "test_model_endpoint_name_2"
STREAMING = "test_model_endpoint_name_streaming"


@dataclass(frozen=True)
class ModelEngine:
    """Where model-engine's app and our pod server (with its /control routes) listen."""

    app_url: str
    pod_url: str


_APP_KEY = pytest.StashKey[ModelEngine]()
_PROCESS_KEY = pytest.StashKey[subprocess.Popen[str]]()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect this folder's tests only when an argument points into it."""
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return None
    return True


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start model-engine once, before the first test (and outside its timeout)."""
    if session.config.option.collectonly or not any(HERE in Path(item.path).parents for item in session.items):
        return
    given = os.environ.get("CONFORMANCE_APP")  # {"app": URL, "pod": URL} of one already running
    if given:
        urls = json.loads(given)
        session.config.stash[_APP_KEY] = ModelEngine(urls["app"], urls["pod"])
        return
    process, urls = start_model_engine()
    session.config.stash[_PROCESS_KEY] = process
    session.config.stash[_APP_KEY] = ModelEngine(urls["app"], urls["pod"])


def pytest_sessionfinish(session: pytest.Session) -> None:
    process = session.config.stash.get(_PROCESS_KEY, None)
    if process is not None:
        stop(process)


def model_engine_env() -> dict[str, str]:
    """What model-engine's modules read at import: GIT_TAG, WORKSPACE and dummy AWS files."""
    aws = venv.LOCAL / "aws"
    aws.mkdir(parents=True, exist_ok=True)
    (aws / "config").write_text("[default]\nregion = us-west-2\n")
    (aws / "credentials").write_text("[default]\naws_access_key_id = x\naws_secret_access_key = x\n")
    env = {k: v for k, v in os.environ.items() if k not in {"CIRCLECI", "LOCAL", "PYTHONPATH", "VIRTUAL_ENV"}}
    return {
        **env,
        "GIT_TAG": "conformance",
        "WORKSPACE": str(venv.model_engine_source()),
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        "PYTHONPYCACHEPREFIX": str(venv.cache_dir() / "pycache"),  # compiled once, and the checkout stays clean
    }


def start_model_engine() -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run model_engine_app.py in the conformance venv; returns the process and its URLs."""
    python = venv.ensure(quiet=True)
    source = venv.model_engine_source()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    log = LOG.open("w")
    process = subprocess.Popen(
        [str(python), str(APP_SCRIPT), "--source", str(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=model_engine_env(),
    )
    log.close()
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if selector.select(timeout=1.0):
                line = process.stdout.readline()
                if line:
                    return process, json.loads(line)
            if process.poll() is not None:
                break
    stop(process)
    tail = "".join(LOG.read_text().splitlines(keepends=True)[-30:])
    raise pytest.UsageError(f"model-engine did not start (log: {LOG}):\n{tail}")


def stop(process: subprocess.Popen[str]) -> None:
    """Close its stdin (it exits then); terminate it if it does not."""
    with contextlib.suppress(OSError):
        if process.stdin:
            process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def model_engine(pytestconfig: pytest.Config) -> ModelEngine:
    return pytestconfig.stash[_APP_KEY]


class Control:
    """Scripts our pod server's user container and model-engine's task queue (model_engine_app.py)."""

    def __init__(self, session: aiohttp.ClientSession, pod_url: str) -> None:
        self._session = session
        self._url = pod_url + "/control"

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(method, self._url + path, json=body) as response:
            assert response.status == 200, f"{method} {path}: {response.status} {await response.text()}"
            return await response.json()

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def script(self, route: str, **answer: Any) -> None:
        """The user container's next answer on `route` ("predict" or "stream"): status and body or
        text, or (stream) events; `times=None` keeps it for every call."""
        await self._call("POST", f"/script/{route}", answer)

    async def seen(self) -> list[dict[str, Any]]:
        """What the user container received: `{"route", "body"}` in order."""
        return list(await self._call("GET", "/seen"))

    async def tasks(self) -> list[dict[str, Any]]:
        """Every task submitted to the queue: `{"task_id", "queue_name", "request"}` in order."""
        return list(await self._call("GET", "/tasks"))

    async def last_task_id(self) -> str:
        tasks = await self.tasks()
        assert tasks, "no task was submitted"
        return str(tasks[-1]["task_id"])

    async def task(self, task_id: str, action: str, **body: Any) -> dict[str, Any]:
        """start | run (through the pod, as the Celery worker does) | succeed (result=) | fail (message=)."""
        return dict(await self._call("POST", f"/tasks/{task_id}/{action}", body))


@pytest.fixture
async def control(model_engine: ModelEngine) -> AsyncIterator[Control]:
    async with aiohttp.ClientSession() as session:
        control = Control(session, model_engine.pod_url)
        await control.reset()
        yield control


@dataclass
class Gateway:
    """Our gateway in front of model-engine, and a channel to it."""

    server: GatewayServer
    channel: grpc.aio.Channel
    stub: pb_grpc.EndpointServiceStub


@pytest.fixture
async def gateway(model_engine: ModelEngine) -> AsyncIterator[Gateway]:
    values = {"server": {"port": 0}, "metrics": {"port": 0}, "upstream": {"url": model_engine.app_url}}
    server = GatewayServer(build_settings(values), env={"LAUNCH_API_KEY": OWNER})
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Gateway(server, channel, pb_grpc.EndpointServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(0)
        await server.limiter.close()
