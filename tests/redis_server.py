"""A real redis-server child process on a unix socket, for tests that share or break rate-limit buckets."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_for_sync


class RedisServer:
    """redis-server listening only on `socket` (no TCP port, no persistence), which a test may kill."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 10.0) -> None:
        """Start it and return once it answers PING; fails the test if it does not within `within` s."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail("redis-server is not installed: run make test (installs redis-server)")
        with (self.directory / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", "0", "--unixsocket", str(self.socket), "--save", "", "--appendonly", "no"],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def answers() -> bool:  # redis-server signals readiness only on its socket
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}; see {self.directory / 'redis.log'}")
            return self.answers_ping()

        wait_for_sync(answers, within=within, what=f"redis-server to answer PING (see {self.directory})")

    def kill(self) -> None:
        """SIGKILL, as a crash: clients see their connections drop and new ones refused."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def answers_ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server for one test, killed after it."""
    # tmp_path_factory, not tmp_path: a unix socket path must stay under ~100 characters
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()
