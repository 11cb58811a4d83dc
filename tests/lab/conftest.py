"""Lab fixtures: labs run under a per-session state directory with test-only lab names."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fabric_lab import netns
from fabric_lab.node import AGENT_ANSWERS
from fabric_lab.runner import Lab, namespace_prefix
from fabric_lab.topology import load_topology

REPO = Path(__file__).resolve().parents[2]


def lab_from(path: Path, name: str, state_root: Path) -> Lab:
    """The topology file as written, renamed so a developer's own running lab is never touched."""
    topology = dataclasses.replace(load_topology(path), name=name)
    return Lab(topology, state_root)


@contextmanager
def fresh_lab(path: Path, name: str, state_root: Path) -> Iterator[Lab]:
    """The lab up from clean (an aborted earlier run is removed first), and always down again."""
    lab = lab_from(path, name, state_root)
    lab.down()
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def stop_agent(lab: Lab, host: str, timeout: float = 40) -> None:
    """SIGTERM the node's fabricd and wait until it has exited."""
    pid = agent_pid(lab, host)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while netns.alive(pid):
        assert time.monotonic() < deadline, f"fabricd on {host} did not stop within {timeout:g}s"
        time.sleep(0.05)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_nothing_left(
    lab: Lab, recorded_pids: list[int], *, ran_lxd: bool = False, instances: tuple[str, ...] = ()
) -> None:
    assert netns.list_with_prefix(namespace_prefix(lab.topology.name)) == []
    assert [p for p in recorded_pids if netns.alive(p)] == []
    assert processes_mentioning(str(lab.state_dir)) == []
    assert not (lab.state_dir / "state.json").exists()
    if not ran_lxd:
        return
    cgroups = Path("/sys/fs/cgroup")
    own = [f"lxc.{kind}.{name}" for name in instances for kind in ("payload", "monitor")]
    assert [p for pattern in own for p in (*cgroups.glob(f"*/{pattern}"), *cgroups.glob(pattern))] == []
    if netns.list_with_prefix("fl-"):
        return  # another lab's LXD runs on this machine: the shared cgroups below are its own
    assert list(cgroups.glob("*/lxc.payload*")) + list(cgroups.glob("*/lxc.monitor*")) == []
    assert list(cgroups.glob("*/lxc.pivot")) == []


@pytest.fixture(scope="session")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("labs")


@pytest.fixture(scope="module")
def basic_lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "basic.clab.yml", "tbasic", state_root) as lab:
        yield lab


def agent_pid(lab: Lab, host: str) -> int:
    pid = lab.state().nodes[host].agent_pid
    assert pid is not None and netns.alive(pid)
    return pid


def start_agent(lab: Lab, host: str, timeout: float = 20, extra_env: dict[str, str] | None = None) -> None:
    """Start fabricd again in the node (after a test stopped or killed it) and wait until it answers."""
    state = lab.state()
    node = lab.node(host)
    config = next(n.agent_config for n in lab.topology.nodes if n.name == host)
    argv = ["fabricd", "run", "--config", str(config)]
    state.nodes[host].agent_pid = node.spawn(argv, "fabricd", extra_env=extra_env)
    state.save()
    deadline = time.monotonic() + timeout
    while node.run(["fabricctl", "status", "--json"], check=False).returncode not in AGENT_ANSWERS:
        assert time.monotonic() < deadline, f"fabricd on {host} did not come back"
        time.sleep(0.2)
