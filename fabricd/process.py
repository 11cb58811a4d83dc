"""Child processes fabricd runs itself (ExaBGP now; dnsmasq and a BFD daemon next).

Every child:
- dies with fabricd: PR_SET_PDEATHSIG, set between fork and exec, kills it even when fabricd is
  SIGKILLed, so nothing it announces or serves outlives the agent;
- is restarted with exponential backoff when it exits, reset once a run lasted long enough;
- is always reaped: SIGTERM, then SIGKILL after a grace period, then wait;
- writes its stdout and stderr to a file in the state directory, rotated at each start.

A `watch` hook lets the owner end a run for its own reasons (ExaBGP's relay disconnected): the run
ends when the process exits or the hook returns, whichever comes first.
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
from pathlib import Path
from typing import Any

from fabricd.log import get_logger

log = get_logger("fabricd.process")

PR_SET_PDEATHSIG = 1
# Resolved before any fork: the child only calls it, it never loads anything.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
ROTATE_BYTES = 8 << 20  # the state directory is usually on tmpfs: logs must not grow without end
STABLE_RUN_SECONDS = 30.0  # a run that lasted this long resets the backoff

Watch = Callable[[asyncio.subprocess.Process], Awaitable[str]]


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


async def spawn(
    argv: Sequence[str], env: Mapping[str, str], output: Path, *, stdin: int = subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """Start one child that dies with this process, its output appended to `output`."""
    with open(output, "ab") as sink:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(env),
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            start_new_session=True,  # a Ctrl-C at fabricd's terminal is fabricd's to handle
        )


async def terminate(proc: asyncio.subprocess.Process, grace: float, name: str, why: str) -> None:
    """SIGTERM, SIGKILL after `grace` seconds, and reap it in every case."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            break
        log.info("stopping child", child=name, pid=proc.pid, signal=signum.name, reason=why)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    await proc.wait()


class SupervisedChild:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        output: Path,
        *,
        logs: Sequence[Path] = (),
        watch: Watch | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        stop_grace: float = 5.0,
    ) -> None:
        self.name = name
        self.argv, self.env, self.output = list(argv), dict(env), output
        self.logs = (output, *logs)
        self._watch = watch
        self.backoff_initial, self.backoff_max, self.stop_grace = backoff_initial, backoff_max, stop_grace
        self.starts = 0
        self.last_exit: str | None = None  # why the last run ended
        self._proc: asyncio.subprocess.Process | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ending = False

    @property
    def pid(self) -> int | None:
        """The running child's pid, if any."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}-supervisor")

    def dead(self) -> str | None:
        """Why this child will never be restarted although nobody stopped it, or None."""
        runner = self._runner
        if runner is None or not runner.done() or self._stopping.is_set():
            return None
        failure = None if runner.cancelled() else runner.exception()
        return f"the {self.name} supervisor ended" + (f": {failure!r}" if failure is not None else "")

    async def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and reap it; no restart afterwards."""
        self._stopping.set()
        proc = self._proc
        if proc is not None:
            await terminate(proc, self.stop_grace, self.name, "fabricd is stopping")
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.backoff_initial
        while not self._stopping.is_set():
            started = loop.time()
            try:
                reason = await self._one_run()
            except OSError as exc:  # cannot even start it: missing binary, bad log path
                reason = f"cannot start {self.name}: {exc}"
            self.last_exit = reason
            if self._stopping.is_set():
                break
            if loop.time() - started > STABLE_RUN_SECONDS:  # it ran fine for a while: a fresh failure
                backoff = self.backoff_initial
            log.warning("child stopped", child=self.name, reason=reason, restart_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _one_run(self) -> str:
        for path in self.logs:
            rotate(path)
        proc = await spawn(self.argv, self.env, self.output)
        self.starts += 1
        self._proc = proc
        log.info("child started", child=self.name, pid=proc.pid, start=self.starts)
        exited = asyncio.create_task(proc.wait())
        watching = asyncio.ensure_future(self._watch(proc)) if self._watch is not None else None
        try:
            waiting: set[asyncio.Future[Any]] = {exited}
            if watching is not None:
                waiting.add(watching)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if watching is not None and watching.done() and not exited.done():
                failed = watching.exception()
                return watching.result() if failed is None else f"watching {self.name} failed: {failed!r}"
            return f"{self.name} exited with status {proc.returncode} (see {self.output})"
        finally:
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watching
            await terminate(proc, self.stop_grace, self.name, "restarting")
            exited.cancel()
            if self._proc is proc:
                self._proc = None
