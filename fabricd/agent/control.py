"""The control socket fabricctl talks to: a unix socket, one JSON request and reply per connection.

Replies come from the last status snapshot; encoding a large one (50,000 routes) runs in a worker
thread, so a request never holds the event loop that feeds ExaBGP's heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import inspect
import os
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from fabricd.control_protocol import MAX_MESSAGE_BYTES, ProtocolError, decode, encode
from fabricd.log import get_logger

log = get_logger("fabricd.control")

# A handler answers at once from the status snapshot, or (commands that change state, such as a
# drain) returns an awaitable that the server awaits, so their I/O runs off the event loop.
Handler = Callable[[str, dict[str, Any]], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
# The agent's health verdict, sent beside every result so each fabricctl view can exit by it.
HealthView = Callable[[], Mapping[str, Any]]


class ControlSocketInUse(Exception):
    """Another live process already answers on the socket path."""


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def prepare_socket_path(path: Path) -> None:
    """Make the parent directory and clear a stale socket left by a crashed run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if _socket_answers(path):
            raise ControlSocketInUse(f"{path}: another fabricd is already answering on this socket")
        if not path.is_socket():
            raise ControlSocketInUse(f"{path}: exists and is not a socket; refusing to replace it")
        path.unlink()


def open_directory_to_group(directory: Path, gid: int) -> int:
    """Let the group reach sockets in fabricd's own directory: its group becomes `gid`, with search
    (x) but not read or write, so members can connect to the socket (whose own mode and group
    decide) without listing or opening anything else. Others' bits are left as they are. Returns
    the new mode."""
    current = directory.stat()
    mode = (current.st_mode & 0o7707) | 0o010
    if current.st_gid != gid:
        os.chown(directory, -1, gid)
    if (current.st_mode & 0o7777) != mode:
        os.chmod(directory, mode)
    return mode


class ControlServer:
    def __init__(
        self,
        path: Path,
        mode: int,
        group: str | None,
        handler: Handler,
        commands: Collection[str],
        health: HealthView | None = None,
        own_directory: Path | None = None,
    ) -> None:
        """`own_directory`: fabricd's state directory. A socket directly in it, with a group, opens
        that directory to the group (under the unit it is /run/fabricd, 0750 root:root)."""
        self.path = path
        self._own_directory = own_directory
        self._health = health
        self._commands = tuple(commands)
        self._mode = mode
        self._group = group
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        prepare_socket_path(self.path)
        # Bind under a temporary name, set mode and group, then rename: clients never see a socket
        # with the wrong permissions.
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(staging))
            if self._group is not None:
                gid = grp.getgrnam(self._group).gr_gid
                os.chown(staging, -1, gid)
                if self._opens_directory():
                    opened = open_directory_to_group(self.path.parent, gid)
                    log.info(
                        "control directory opened to the group",
                        path=str(self.path.parent),
                        group=self._group,
                        mode=oct(opened),
                    )
            os.chmod(staging, self._mode)
            listener.listen(64)
            os.rename(staging, self.path)
        except BaseException:
            listener.close()
            staging.unlink(missing_ok=True)
            raise
        self._server = await asyncio.start_unix_server(self._serve, sock=listener, limit=MAX_MESSAGE_BYTES)
        log.info("control socket listening", path=str(self.path), mode=oct(self._mode))

    def _opens_directory(self) -> bool:
        own = self._own_directory
        return own is not None and self.path.parent.resolve() == own.resolve()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            writer.write(await asyncio.to_thread(encode, await self._reply(line)))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("control request dropped", reason=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _reply(self, line: bytes) -> dict[str, Any]:
        try:
            request = decode(line)
        except ProtocolError as exc:
            return {"ok": False, "error": str(exc)}
        command = request.get("command")
        if command not in self._commands:
            return {
                "ok": False,
                "error": f"unknown command {command!r}; expected one of {', '.join(self._commands)}",
            }
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be a JSON object"}
        try:
            answer = self._handler(str(command), args)
            result = await answer if inspect.isawaitable(answer) else answer
        except ValueError as exc:  # bad args: the client is told, the agent goes on
            return {"ok": False, "error": str(exc)}
        reply: dict[str, Any] = {"ok": True, "result": result}
        if self._health is not None:
            reply["health"] = self._health()
        return reply
