"""The gateway's own HTTP ports (the ops port, the callback receiver): an aiohttp app listening on one address.

One way to bind them, so a port in use is the same one `ListenError` naming its setting as for the
gRPC port, and `serve --workers N` shares them the same way (SO_REUSEPORT among its workers only).
"""

from __future__ import annotations

import os

from aiohttp import web

from launch_gateway.server.errors import ListenError


async def listen(app: web.Application, host: str, port: int, setting: str, reuse_port: bool = False) -> web.AppRunner:
    """Serve `app` on host:port (0 picks a free one: `runner.addresses[0][1]`); ListenError naming `setting`."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(setting, f"{host}:{port}", why) from exc
    return runner
