"""Supervised children: restarted with backoff, reaped, and dead with the parent even on SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fabricd.process import SupervisedChild


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def test_a_child_that_exits_is_restarted_with_growing_backoff_and_reaped(tmp_path: Path) -> None:
    async def main() -> tuple[int, list[float], str | None]:
        child = SupervisedChild(
            "quitter",
            ["/bin/sh", "-c", "echo ran; exit 3"],
            {},
            tmp_path / "quitter.out",
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        starts: list[float] = []
        child.start()
        while child.starts < 4:
            if not starts or child.starts > len(starts):
                starts.append(time.monotonic())
            await asyncio.sleep(0.005)
        before_stop = child.last_exit
        await child.stop()
        return child.starts, starts, before_stop

    starts, times, last_exit = asyncio.run(main())
    assert starts >= 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] > gaps[0]  # 0.05, 0.1, 0.2 ...
    assert last_exit is not None and "exited with status 3" in last_exit
    assert (tmp_path / "quitter.out").read_text().count("ran") >= starts - 1  # the last may not have run yet


def test_a_watch_ends_a_run_and_stop_terminates_and_reaps(tmp_path: Path) -> None:
    async def main() -> tuple[int | None, str | None, int]:
        async def watch(proc: asyncio.subprocess.Process) -> str:
            await asyncio.sleep(0.1)
            return "its helper went away"

        child = SupervisedChild(
            "sleeper",
            ["sleep", "60"],
            dict(os.environ),
            tmp_path / "sleeper.out",
            watch=watch,
            backoff_initial=5,
        )
        child.start()
        while child.pid is None:
            await asyncio.sleep(0.01)
        first = child.pid
        while child.last_exit is None:
            await asyncio.sleep(0.01)
        await child.stop()
        return first, child.last_exit, child.starts

    first, last_exit, starts = asyncio.run(main())
    assert last_exit == "its helper went away" and starts == 1
    assert first is not None and not alive(first)


def test_the_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import asyncio, os, pathlib
        from fabricd.process import SupervisedChild

        async def main():
            out = pathlib.Path({str(tmp_path / "o")!r})
            child = SupervisedChild("sleeper", ["sleep", "60"], dict(os.environ), out)
            child.start()
            while child.pid is None:
                await asyncio.sleep(0.01)
            pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.02)
        child = int(pid_file.read_text())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while alive(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            parent.kill()
