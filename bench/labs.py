"""Labs for the benchmark: the project's topology files under bench-only names and state roots."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from fabric_lab import netns
from fabric_lab.node import AGENT_ANSWERS, NodeRuntime
from fabric_lab.runner import Lab, namespace_prefix
from fabric_lab.topology import load_topology
from fabricd import __version__
from fabricd.log import configure_logging

REPO = Path(__file__).resolve().parents[1]
BASIC = REPO / "labs" / "basic.clab.yml"


def named_lab(path: Path, name: str, state_root: Path, *, strip_fabric: bool = False) -> Lab:
    """The topology renamed (never a developer's own lab); stripped: no LXD and no fabricd agent."""
    topology = load_topology(path)
    nodes = topology.nodes
    if strip_fabric:
        nodes = tuple(
            dataclasses.replace(n, labels={k: v for k, v in n.labels.items() if not k.startswith("fabric.")})
            for n in topology.nodes
        )
    return Lab(dataclasses.replace(topology, name=name, nodes=nodes), state_root)


def leftover_namespaces(lab: Lab) -> list[str]:
    return netns.list_with_prefix(namespace_prefix(lab.topology.name))


def wait_sessions(node: NodeRuntime, timeout: float = 60) -> float:
    """Seconds until fabricd on the node reports every BGP peer established."""
    started = time.monotonic()
    peers: list[dict[str, object]] = []
    while time.monotonic() - started < timeout:
        result = node.run(["fabricctl", "status", "--json"], check=False, timeout=10)
        if result.returncode in AGENT_ANSWERS:
            peers = json.loads(result.stdout)["bgp_peers"]
            if peers and all(p["state"] == "established" for p in peers):
                return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"{node.name}: fabricd peers not established within {timeout:g}s: {peers}")


def reap(pid: int) -> None:
    """Collect a child of ours that was killed (lab processes are children of the benchmark)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_agent(lab: Lab, host: str, timeout: float = 15) -> None:
    """SIGTERM the node's fabricd (a clean stop: ExaBGP closes its sessions) and forget its pid."""
    state = lab.state()
    pid = state.nodes[host].agent_pid
    if pid is not None and netns.alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while netns.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if netns.alive(pid):
            os.kill(pid, signal.SIGKILL)
        reap(pid)
    state.nodes[host].agent_pid = None
    state.save()


def restart_agent(lab: Lab, host: str, timeout: float = 30) -> int:
    """Start fabricd again in the node, as `Lab.up` does, record its pid, wait until it answers."""
    node = lab.node(host)
    config = next(n.agent_config for n in lab.topology.nodes if n.name == host)
    if config is None:
        raise ValueError(f"{host} runs no agent in {lab.topology.source}")
    pid = node.spawn(["fabricd", "run", "--config", str(config), "--log-format", "json"], "fabricd")
    state = lab.state()
    state.nodes[host].agent_pid = pid
    state.save()
    deadline = time.monotonic() + timeout
    while (
        node.run(["fabricctl", "status", "--json"], check=False, timeout=10).returncode not in AGENT_ANSWERS
    ):
        if time.monotonic() > deadline or not netns.alive(pid):
            raise TimeoutError(f"{host}: fabricd did not come back; see {node.log_file('fabricd')}")
        time.sleep(0.1)
    return pid


class Terminated(Exception):
    """SIGTERM reached a benchmark: raised so its finally blocks tear the lab down."""


_MAIN_PID = os.getpid()


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:  # a forked helper (pyroute2 forks for namespaces) just ends
        os._exit(128 + signum)
    raise Terminated(f"signal {signum}")


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_reporting(
    prefix: str, keep_logs: bool, produce: Callable[[Path], dict[str, object]]
) -> dict[str, object]:
    """Run a benchmark under a fresh state directory with stdout sent to stderr, so only the JSON
    report (which the caller prints) reaches stdout; the directory goes unless kept or it failed."""
    signal.signal(signal.SIGTERM, on_sigterm)
    state_root = Path(tempfile.mkdtemp(prefix=prefix))
    progress(f"state and logs under {state_root}")
    out, sys.stdout = sys.stdout, sys.stderr
    ok = False
    try:
        result = produce(state_root)
        ok = True
    finally:
        sys.stdout = out
        if ok and not keep_logs:
            shutil.rmtree(state_root, ignore_errors=True)
        else:
            progress(f"logs kept in {state_root}")
    return result


def lab_bench_main(
    prefix: str,
    args: argparse.Namespace,
    why_not: str | None,
    run: Callable[[argparse.Namespace, Path], dict[str, object]],
) -> int:
    """A lab benchmark's main after its arguments: refuse (exit 2) when it cannot run here; else
    run it from the repository root and print its one JSON report on stdout."""
    if why_not is not None:
        print(why_not, file=sys.stderr)
        return 2
    os.chdir(REPO)  # the lab's image cache (.lab/.cache) and agent configs are found from here
    configure_logging("warning", "console")  # fabricd's loggers write to stderr; stdout is the JSON
    result = run_reporting(prefix, args.keep_logs, lambda state_root: run(args, state_root))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cannot_run(prog: str, tools: tuple[str, ...]) -> str | None:
    """Why a lab benchmark cannot run here (not root, a lab tool missing), or None."""
    if os.geteuid() != 0:
        return f"{prog} needs root (network namespaces, LXD): run it with sudo"
    missing = [t for t in tools if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin") is None]
    if missing:
        return f"{prog} needs {', '.join(missing)} (scripts/setup.sh installs them)"
    return None


def report_head(benchmark: str, started_utc: str, began: float) -> dict[str, object]:
    """The first keys of a benchmark's JSON report: what, which fabricd, when, how long, where."""
    return {
        "benchmark": benchmark,
        "fabricd_version": __version__,
        "started_utc": started_utc,
        "seconds": round(time.monotonic() - began, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_1min_at_end": round(os.getloadavg()[0], 2),
        },
    }


def run_lab_benchmark(
    prog: str, tools: tuple[str, ...], keep_logs: bool, produce: Callable[[Path], dict[str, object]]
) -> int:
    """A lab benchmark's main after its arguments: refuse early (not root, a tool missing), else run
    it under a fresh state directory and print its one JSON document."""
    why = cannot_run(prog, tools)
    if why:
        print(why, file=sys.stderr)
        return 2
    configure_logging("warning", "console")
    report = run_reporting(f"{prog.replace('.', '-')}-", keep_logs, produce)
    print(json.dumps(report, indent=2))
    return 0
