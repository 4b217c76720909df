"""An HTTP app (uvicorn) served inside a gRPC service's process, started and stopped by it.

The gRPC shell owns the signals; these hooks go into its `on_start` and `on_stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

from facegrid.settings import split_host_port

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves signal handling to the process's gRPC shell."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening address other processes can bind too (SO_REUSEPORT): each accepted
    connection goes to one of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def embedded(app: Any, listen: str, what: str, *, reuse_port: bool = False) -> tuple[Hook, Hook]:
    """Start and stop hooks that serve app on listen (host:port); what names it in logs.
    reuse_port: other processes may serve the same port (see shared_socket)."""
    host, port = split_host_port(listen)
    server = _EmbeddedServer(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    )
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        sockets = [shared_socket(host, port)] if reuse_port else None
        tasks.append(asyncio.create_task(server.serve(sockets=sockets)))
        while not server.started and not tasks[0].done():
            await asyncio.sleep(0.02)
        if tasks[0].done():
            tasks[0].result()  # re-raise why it could not start
            raise OSError(f"{what} could not listen on {listen}")
        log.info("%s serving HTTP on http://%s", what, listen)

    async def stop() -> None:
        server.should_exit = True
        for task in tasks:
            await task

    return start, stop
