"""ExaBGP as fabricd's own child, and the relay connection that proves it is still fabricd's.

Three things stop an ExaBGP that fabricd no longer controls, so its routes never outlive the agent:
- the kernel: PR_SET_PDEATHSIG makes fabricd's death (even SIGKILL) kill ExaBGP (`fabricd.process`);
- the relay: a fabricd that stops sending heartbeats (hung, stopped) gets its ExaBGP killed;
- the supervisor: a relay that disconnects (it died; ExaBGP would not notice) gets ExaBGP killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabricd.bgp.relay import HELLO
from fabricd.log import get_logger
from fabricd.process import SupervisedChild

log = get_logger("fabricd.bgp.supervisor")

SessionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


@dataclass
class _Generation:
    """One run of ExaBGP and its relay connection."""

    proc: asyncio.subprocess.Process
    connected: asyncio.Future[None]
    session_over: asyncio.Future[str]
    writer: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class Supervisor:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        output: Path,
        socket_path: Path,
        handler: SessionHandler,
        *,
        logs: Sequence[Path] = (),
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        relay_wait: float = 15.0,
        stop_grace: float = 5.0,
    ) -> None:
        if len(str(socket_path).encode()) > MAX_UNIX_PATH:
            raise ValueError(f"relay socket path {socket_path} is longer than {MAX_UNIX_PATH} bytes")
        self.socket_path = socket_path
        self.handler = handler
        self.relay_wait = relay_wait
        self.child = SupervisedChild(
            "exabgp",
            argv,
            env,
            output,
            logs=logs,
            watch=self._watch,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            stop_grace=stop_grace,
        )
        self._gen: _Generation | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def pid(self) -> int | None:
        """The running ExaBGP's pid, if any."""
        return self.child.pid

    @property
    def starts(self) -> int:
        return self.child.starts

    async def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        # Listen before ExaBGP exists, so its relay never finds nothing; 0600 from the first moment.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_relay, path=str(self.socket_path), limit=2**20
            )
        finally:
            os.umask(old_umask)
        self.child.start()

    async def stop(self) -> None:
        """SIGTERM ExaBGP (it sends a Cease to every peer) and reap it; SIGKILL if it lingers."""
        gen = self._gen
        if gen is not None and gen.writer is not None:
            gen.writer.close()
        await self.child.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.socket_path.unlink(missing_ok=True)

    async def _watch(self, proc: asyncio.subprocess.Process) -> str:
        """One ExaBGP run: its relay must connect in time, and the run ends when the relay goes."""
        loop = asyncio.get_running_loop()
        gen = _Generation(proc, loop.create_future(), loop.create_future())
        self._gen = gen
        try:
            await asyncio.wait({gen.connected}, timeout=self.relay_wait)
            if not gen.connected.done():
                return f"its relay did not connect within {self.relay_wait:g}s"
            return await gen.session_over
        finally:
            if gen.writer is not None:
                gen.writer.close()
            for task in list(gen.tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._gen is gen:
                self._gen = None

    async def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gen = self._gen
        try:
            hello = (await asyncio.wait_for(reader.readline(), 5.0)).decode(errors="replace").split()
        except (TimeoutError, OSError, ValueError):  # ValueError: a line past the stream limit
            hello = []
        ok = hello[:1] == [HELLO] and len(hello) == 2 and hello[1].isdigit()
        if not ok or gen is None or int(hello[1]) != gen.proc.pid or gen.connected.done():
            # A relay of an ExaBGP being replaced, or something else entirely.
            log.warning("relay refused", hello=" ".join(hello)[:60], reason="not the current exabgp")
            writer.close()
            return
        gen.writer = writer
        gen.connected.set_result(None)
        task = asyncio.current_task()
        if task is not None:
            gen.tasks.add(task)
        log.info("relay connected", pid=gen.proc.pid)
        try:
            await self.handler(reader, writer)
        except Exception as exc:
            log.exception("bgp session handler failed", reason=str(exc))
        finally:
            writer.close()
            if not gen.session_over.done():
                gen.session_over.set_result("its relay disconnected")
