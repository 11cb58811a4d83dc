"""ExaBGP as fabricd's own child: started, watched, restarted with backoff, always reaped.

Three things stop an ExaBGP that fabricd no longer controls, so its routes never outlive the agent:
- the kernel: PR_SET_PDEATHSIG makes fabricd's death (even SIGKILL) kill ExaBGP;
- the relay: a fabricd that stops sending heartbeats (hung, stopped) gets its ExaBGP killed;
- the supervisor: a relay that disconnects (it died; ExaBGP would not notice) gets ExaBGP killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabricd.bgp.relay import HELLO
from fabricd.log import get_logger

log = get_logger("fabricd.bgp.supervisor")

SessionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

PR_SET_PDEATHSIG = 1
# Resolved before any fork: the child only calls it, it never loads anything.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
ROTATE_BYTES = 8 << 20  # the state directory is usually on tmpfs: logs must not grow without end


def rotate(path: Path, limit: int = ROTATE_BYTES) -> None:
    """Keep one previous file once a log has grown past the limit (checked at each start)."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))


def _die_with_parent(parent: int) -> None:
    """Runs in the child between fork and exec."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # fabricd died before the prctl took effect
        os._exit(1)


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
        self.argv, self.env, self.output, self.socket_path = list(argv), dict(env), output, socket_path
        self.handler = handler
        self.logs = (output, *logs)
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.relay_wait, self.stop_grace = relay_wait, stop_grace
        self.starts = 0
        self._gen: _Generation | None = None
        self._server: asyncio.AbstractServer | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The running ExaBGP's pid, if any."""
        gen = self._gen
        return gen.proc.pid if gen is not None and gen.proc.returncode is None else None

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
        self._runner = asyncio.create_task(self._run(), name="exabgp-supervisor")

    async def stop(self) -> None:
        """SIGTERM ExaBGP (it sends a Cease to every peer) and reap it; SIGKILL if it lingers."""
        self._stopping.set()
        gen = self._gen
        if gen is not None:
            await self._end(gen, "fabricd is stopping")
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.socket_path.unlink(missing_ok=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.backoff_initial
        while not self._stopping.is_set():
            started = loop.time()
            try:
                reason = await self._generation()
            except OSError as exc:  # cannot even start it: missing binary, bad log path
                reason = f"cannot start exabgp: {exc}"
            if self._stopping.is_set():
                break
            if loop.time() - started > 30:  # it ran fine for a while: this is a fresh failure
                backoff = self.backoff_initial
            log.warning("exabgp stopped", reason=reason, restart_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _generation(self) -> str:
        loop = asyncio.get_running_loop()
        for path in self.logs:
            rotate(path)
        with open(self.output, "ab") as output:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                start_new_session=True,  # a Ctrl-C at fabricd's terminal is fabricd's to handle
            )
        self.starts += 1
        gen = _Generation(proc, loop.create_future(), loop.create_future())
        self._gen = gen
        log.info("exabgp started", pid=proc.pid, start=self.starts)
        exited = asyncio.create_task(proc.wait())
        try:
            first: set[asyncio.Future[Any]] = {exited, gen.connected}
            await asyncio.wait(first, timeout=self.relay_wait, return_when="FIRST_COMPLETED")
            if exited.done():
                return f"exabgp exited with status {proc.returncode} (see {self.output})"
            if not gen.connected.done():
                return f"its relay did not connect within {self.relay_wait:g}s"
            second: set[asyncio.Future[Any]] = {exited, gen.session_over}
            await asyncio.wait(second, return_when="FIRST_COMPLETED")
            if exited.done():
                return f"exabgp exited with status {proc.returncode}"
            return gen.session_over.result()
        finally:
            await self._end(gen, "restarting")
            exited.cancel()
            if self._gen is gen:
                self._gen = None

    async def _end(self, gen: _Generation, why: str) -> None:
        if gen.writer is not None:
            gen.writer.close()
        proc = gen.proc
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if proc.returncode is not None:
                break
            log.info("stopping exabgp", pid=proc.pid, signal=signum.name, reason=why)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), self.stop_grace)
        await proc.wait()  # reaped in every case
        for task in list(gen.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
