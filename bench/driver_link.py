"""The benchmark's side of its drivers (bench/agent_driver.py, bench/speaker_driver.py): start one
inside a lab node, talk JSON lines."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab

REPO = Path(__file__).resolve().parents[1]


class DriverError(Exception):
    pass


class DriverLink:
    """One driver process in a node; its pid is recorded in the lab state so `Lab.down` stops it."""

    def __init__(
        self,
        lab: Lab,
        node_name: str,
        args: Sequence[str],
        log_name: str,
        module: str = "bench.speaker_driver",
    ) -> None:
        self.node: NodeRuntime = lab.node(node_name)
        command = [sys.executable, "-m", module, *args]
        self.log_path = self.node.log_file(log_name)
        log: IO[bytes]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.node.argv(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.node.base_env() | {"PYTHONPATH": str(REPO)},
                cwd=REPO,
                start_new_session=True,
            )
        state = lab.state()
        state.nodes[node_name].pids.append(self.proc.pid)
        state.save()
        self._lines: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        self._pending: list[tuple[float, dict[str, Any]]] = []
        threading.Thread(target=self._read, name=f"driver-{node_name}", daemon=True).start()
        self.hello = self.expect("hello", timeout=60)

    def _read(self) -> None:
        if self.proc.stdout is None:
            return
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put((time.monotonic(), json.loads(raw)))
        self._lines.put(None)

    def send(self, op: str, **fields: Any) -> None:
        if self.proc.stdin is None or self.proc.poll() is not None:
            raise DriverError(f"driver exited ({self.proc.returncode}); see {self.log_path}")
        self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, op: str, timeout: float) -> dict[str, Any]:
        """The next line for this op (lines for other ops are kept for later)."""
        for i, (_, line) in enumerate(self._pending):
            if line.get("op") == op:
                return self._checked(self._pending.pop(i)[1])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DriverError(f"driver: no {op!r} answer within {timeout:g}s; see {self.log_path}")
            try:
                item = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                raise DriverError(f"driver exited while waiting for {op!r}; see {self.log_path}")
            if item[1].get("op") == op:
                return self._checked(item[1])
            self._pending.append(item)

    def _checked(self, line: dict[str, Any]) -> dict[str, Any]:
        if "error" in line:
            raise DriverError(f"driver {line.get('op')}: {line['error']}; see {self.log_path}")
        return line

    def call(self, op: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        self.send(op, **fields)
        return self.expect(op, timeout)

    def close(self) -> None:
        """Ask it to quit (the speaker closes its sessions), then make sure it is gone."""
        with contextlib.suppress(DriverError, OSError):
            self.send("quit")
            self.expect("bye", timeout=15)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
