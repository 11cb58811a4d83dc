"""One lab node: its private files, its holder process and running commands inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fabric_lab import netns

# Processes inside a node never reach an image server or a proxy: LXD's start-up image lookup and any
# HTTP client hit a closed local port instead of leaving the lab.
CLOSED_PROXY = "http://127.0.0.1:9"
# fabricctl's exit codes of an agent that answers: 0 healthy, 3 degraded (a session still coming up,
# LXD away, a refused route...). 1 is an agent that did not answer.
AGENT_ANSWERS = (0, 3)


class LabError(Exception):
    """A lab step failed; the message says which node and what."""


@dataclass
class NodeRuntime:
    """Paths and the holder of one running node."""

    name: str
    netns_name: str
    directory: Path  # <state>/nodes/<node>
    logs: Path  # <state>/logs
    holder_pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    def log_file(self, what: str) -> Path:
        return self.logs / f"{self.name}-{what}.log"

    def base_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": os.environ.get("TERM", "dumb"),
            "http_proxy": CLOSED_PROXY,
            "https_proxy": CLOSED_PROXY,
            "HTTP_PROXY": CLOSED_PROXY,
            "HTTPS_PROXY": CLOSED_PROXY,
            "no_proxy": "127.0.0.1,localhost,::1",
            "NO_PROXY": "127.0.0.1,localhost,::1",
        }
        env.update(self.env)
        return env

    def argv(self, command: Sequence[str]) -> list[str]:
        if self.holder_pid is None:
            raise LabError(f"node {self.name}: not running")
        return [
            "nsenter",
            f"--target={self.holder_pid}",
            "--net",
            "--mount",
            "--uts",
            f"--wd={os.getcwd()}",
            "--",
            *command,
        ]

    def run(
        self,
        command: Sequence[str],
        *,
        input_text: str | None = None,
        timeout: float = 120,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = self.base_env() | dict(extra_env or {})
        try:
            # Without input, stdin is /dev/null: a child never waits on the caller's terminal or pipe.
            stdin = subprocess.DEVNULL if input_text is None else None
            result = subprocess.run(
                self.argv(command), input=input_text, stdin=stdin, capture_output=True, text=True,
                timeout=timeout, env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"node {self.name}: {' '.join(command)} timed out after {timeout:g}s") from exc
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise LabError(
                f"node {self.name}: {' '.join(command)} exited {result.returncode}: {' | '.join(detail)}"
            )
        return result

    def fabricctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Ask the node's fabricd; raises unless it answered, healthy or degraded."""
        result = self.run(["fabricctl", *args], timeout=timeout, check=False)
        if result.returncode not in AGENT_ANSWERS:
            detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise LabError(
                f"node {self.name}: fabricctl {' '.join(args)} exited {result.returncode}: {detail}"
            )
        return result

    def spawn(self, command: Sequence[str], log_name: str, extra_env: Mapping[str, str] | None = None) -> int:
        """Start a long-running process in the node, logging to logs/<node>-<log_name>.log."""
        log: IO[bytes]
        with open(self.log_file(log_name), "ab") as log:
            proc = subprocess.Popen(
                self.argv(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.base_env() | dict(extra_env or {}),
                start_new_session=True,
            )
        return proc.pid


def write_node_files(node: NodeRuntime) -> None:
    """Hostname, hosts and resolv.conf of the node, so no name lookup leaves the lab."""
    etc = node.directory / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    node.run_dir.mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text(f"{node.name}\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{node.name}\n"
    )
    # Loopback of the node's own namespace: nothing listens, so lookups fail fast and stay inside.
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")


def start_holder(node: NodeRuntime, binds: Sequence[tuple[str, str, bool]], timeout: float = 10.0) -> int:
    etc = node.directory / "etc"
    base_binds: list[tuple[str, str, bool]] = [
        (str(node.run_dir), "/run", False),
        (str(etc / "hosts"), "/etc/hosts", False),
        (str(etc / "resolv.conf"), "/etc/resolv.conf", False),
        (str(etc / "hostname"), "/etc/hostname", False),
    ]
    ready = node.directory / "holder.ready"
    ready.unlink(missing_ok=True)
    spec = {
        "netns_path": str(netns.netns_path(node.netns_name)),
        "hostname": node.name,
        "scratch_dir": str(node.directory / "scratch"),
        "binds": base_binds + list(binds),
        "ready_file": str(ready),
    }
    spec_file = node.directory / "holder.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    with open(node.log_file("holder"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric_lab.holder", str(spec_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            node.holder_pid = proc.pid
            return proc.pid
        if proc.poll() is not None:
            raise LabError(
                f"node {node.name}: holder failed, see {node.log_file('holder')}: "
                f"{node.log_file('holder').read_text().strip()[-300:]}"
            )
        time.sleep(0.02)
    proc.kill()
    raise LabError(f"node {node.name}: holder not ready within {timeout:g}s")
