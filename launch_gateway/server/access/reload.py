"""The live tenant configuration: reloaded from the config file on SIGHUP and when a file it reads changes.

Only the edge (tenants, their keys, task-handle secrets) reloads; listening addresses, TLS and
timeouts need a restart. The files watched are the config file and the secret files it names
(`auth.handle_secrets_file`, the tenants' `upstream_key_file`), so removing a compromised secret
from its file takes effect within `auth.reload_interval`. A reload that fails (bad TOML, a bad key,
a missing secret) is refused with the same messages `check-config` gives, and the running
configuration stays. So is a reload that would change the mode: a file that is empty for a moment
has no tenants, and must never switch a gateway with tenants to open mode (nor the other way round);
the mode changes only with a restart. RPCs already running keep the Edge they started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from launch_gateway.server.admission import Edge, load_edge
from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import ConfigError
from launch_gateway.server.settings import Settings, load_settings

log = logging.getLogger("launch_gateway")

Stamp = tuple[int, int, int] | None  # (mtime_ns, size, inode); None for a file that cannot be read


def _stamp(path: Path) -> Stamp:
    try:
        stat = path.stat()  # follows symlinks: a Kubernetes volume's `..data` swap changes the inode
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def secret_files(settings: Settings) -> list[Path]:
    """The files secrets are read from, which change without the config file changing."""
    named = [settings.auth.handle_secrets_file, *(t.upstream_key_file for t in settings.tenants)]
    return [Path(name) for name in named if name]


def _mode(edge: Edge) -> str:
    count = len(edge.tenants.tenants)
    return "open mode" if edge.open else f"{count} tenant{'s' if count != 1 else ''}"


class EdgeSource:
    """Holds the current Edge; call it to get the Edge for a new RPC.

    `overrides` are the flags `serve` was given, applied again on every reload, as at start.
    """

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str],
        path: str | Path | None = None,
        on_reload: Callable[[bool], None] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._env = env
        self._overrides = overrides
        self._on_reload = on_reload
        self._path = Path(path) if path is not None else None
        self._edge = load_edge(settings, env)
        self._watched = self._files(settings)
        self._stamps = self._stamp_all()
        self.reloads = 0  # successful reloads, for tests and metrics
        self.failed_reloads = 0

    def __call__(self) -> Edge:
        return self._edge

    def _files(self, settings: Settings) -> list[Path]:
        return [self._path, *secret_files(settings)] if self._path is not None else []

    def _stamp_all(self) -> list[Stamp]:
        return [_stamp(path) for path in self._watched]

    def _refuse(self, reason: str) -> bool:
        self.failed_reloads += 1
        if self._on_reload:
            self._on_reload(False)
        log.error("config reload refused, keeping the running configuration (%s): %s", _mode(self._edge), reason)
        return False

    def reload(self) -> bool:
        """Load the file again; True when the new configuration took effect."""
        if self._path is None:
            return False
        self._stamps = self._stamp_all()  # this version is tried once; a later change is tried again
        try:
            settings = load_settings(self._path, env=self._env, overrides=self._overrides)
            self._watched = self._files(settings)  # the secret files the new file names, from now on
            self._stamps = self._stamp_all()
            edge = load_edge(settings, self._env)
        except ConfigError as exc:
            return self._refuse(str(exc))
        except Exception as exc:  # a reader's bug refuses this reload, never the watching or the SIGHUP handler
            log.exception("config reload failed")
            return self._refuse(f"{type(exc).__name__} while reading {self._path}")
        if edge.open != self._edge.open:
            change = "drop every tenant and switch to open mode" if edge.open else f"switch open mode to {_mode(edge)}"
            return self._refuse(f"the file would {change}; the mode changes only with a restart")
        self._edge = edge
        self.reloads += 1
        if self._on_reload:
            self._on_reload(True)
        log.info("config reloaded from %s: %s", self._path, _mode(edge))
        return True

    def changed(self) -> bool:
        """True when the config file or a secret file differs from the one last loaded (or tried)."""
        return self._path is not None and self._stamp_all() != self._stamps

    async def watch(self, clock: Clock, interval: float) -> None:
        """Reload whenever a watched file changes; runs until cancelled (`reload` refuses, never raises)."""
        while True:
            await clock.sleep(interval)
            if self.changed():
                self.reload()
