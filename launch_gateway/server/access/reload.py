"""The live tenant configuration: reloaded from the config file on SIGHUP and when the file changes.

Only the edge (tenants, their keys, task-handle secrets) reloads; listening addresses, TLS and
timeouts need a restart. A reload that fails (bad TOML, a bad key, a missing secret) is refused with
the same messages `check-config` gives, and the running configuration stays. RPCs already running
keep the Edge they started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from launch_gateway.server.admission import Edge, load_edge
from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import ConfigError
from launch_gateway.server.settings import Settings, load_settings

log = logging.getLogger("launch_gateway")


class EdgeSource:
    """Holds the current Edge; call it to get the Edge for a new RPC."""

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str],
        path: str | Path | None = None,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self._env = env
        self._on_reload = on_reload
        self._path = Path(path) if path is not None else None
        self._stamp = self._file_stamp()
        self._edge = load_edge(settings, env)
        self.reloads = 0  # successful reloads, for tests and metrics
        self.failed_reloads = 0

    def __call__(self) -> Edge:
        return self._edge

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def reload(self) -> bool:
        """Load the file again; True when the new configuration took effect."""
        if self._path is None:
            return False
        self._stamp = self._file_stamp()
        try:
            edge = load_edge(load_settings(self._path, env=self._env), self._env)
        except ConfigError as exc:
            self.failed_reloads += 1
            if self._on_reload:
                self._on_reload(False)
            log.error("config reload refused, keeping the running configuration: %s", exc)
            return False
        self._edge = edge
        self.reloads += 1
        if self._on_reload:
            self._on_reload(True)
        log.info("config reloaded from %s: %d tenants", self._path, len(edge.tenants.tenants))
        return True

    def changed(self) -> bool:
        """True when the file differs from the one last loaded (or tried)."""
        return self._path is not None and self._file_stamp() != self._stamp

    async def watch(self, clock: Clock, interval: float) -> None:
        """Reload whenever the file changes; runs until cancelled."""
        while True:
            await clock.sleep(interval)
            if self.changed():
                self.reload()
