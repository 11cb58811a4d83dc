"""Config reload on labs/basic.clab.yml, seen from outside: h1's fabricd on a config file of the
caller's, r1's BGP neighbor counters and h1's VXLAN flood list.

Shared by the config reload lab test and `python -m bench.reload`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab

H1_V4, H1_V6 = "10.99.1.11", "fd00:99:1::11"
H2_VTEP, H3_VTEP = "10.99.2.12", "10.99.3.13"


def config_text(
    *,
    v6_peer: bool,
    ranges: tuple[str, ...],
    vni: int = 100,
    hold_time: int = 3,
    h3: bool = False,
    v6_hold_time: int | None = None,
) -> str:
    """h1's fabricd.yaml: the IPv4 session to r1, the IPv6 one when asked, static overlay peers h1
    and h2 (and h3, which does not exist: only the flood list shows it), and a route policy."""
    h3_line = f"    - {{name: h3, address: {H3_VTEP}}}\n" if h3 else ""
    v6_hold = f", hold_time: {v6_hold_time}" if v6_hold_time is not None else ""
    v6 = f"    - {{name: r1-v6, address: 'fd00:99:1::1', asn: 65000{v6_hold}}}\n" if v6_peer else ""
    return (
        f"host: {{name: h1, underlay_interface: eth1, underlay_address: {H1_V4}, "
        f"underlay_address6: '{H1_V6}'}}\n"
        "lxd: {socket: /var/lib/lxd/unix.socket}\n"
        "bgp:\n"
        "  local_asn: 65011\n"
        f"  router_id: {H1_V4}\n"
        f"  hold_time: {hold_time}\n"
        "  peers:\n"
        "    - {name: r1, address: 10.99.1.1, asn: 65000}\n"
        f"{v6}"
        "overlay:\n"
        "  enabled: true\n"
        f"  vni: {vni}\n"
        "  peers:\n"
        f"    - {{name: h1, address: {H1_V4}}}\n"
        f"    - {{name: h2, address: {H2_VTEP}}}\n"
        f"{h3_line}"
        "reconcile: {interval: 5}\n"
        f"routes: {{allowed_ranges: [{', '.join(ranges)}]}}\n"
    )


def status(node: NodeRuntime) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(node.fabricctl("status", "--json").stdout)
    return result


def eventually(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def run_agent_on(lab: Lab, host: str, file: Path, timeout: float = 30) -> int:
    """fabricd started in the node on `file` (its pid recorded for the lab's teardown), once it
    answers and its IPv4 session is established. The node's own agent must be stopped first."""
    node = lab.node(host)
    state = lab.state()
    pid = node.spawn(["fabricd", "run", "--config", str(file)], "fabricd")
    state.nodes[host].agent_pid = pid
    state.save()
    answers = lambda: node.run(["fabricctl", "status", "--json"], check=False).returncode in (0, 3)  # noqa: E731
    eventually(answers, timeout, "fabricd's control socket")
    eventually(
        lambda: any(p["state"] == "established" for p in status(node)["bgp_peers"]), timeout, "a BGP session"
    )
    return pid


def flood(node: NodeRuntime) -> set[str]:
    """The VXLAN device's flood list, from the kernel (bridge -j)."""
    entries = json.loads(node.run(["bridge", "-j", "fdb", "show", "dev", "vx-fabric0"]).stdout or "[]")
    return {e["dst"] for e in entries if e.get("mac") == "00:00:00:00:00:00" and "dst" in e}


def session(r1: NodeRuntime, peer: str) -> dict[str, Any]:
    """r1's view of its session with h1: established/dropped counters and uptime."""
    data = json.loads(r1.run(["vtysh", "-c", f"show bgp neighbors {peer} json"]).stdout).get(peer)
    if data is None:  # a listen-range neighbor exists only while it is connected
        return {"state": "absent", "established": 0, "dropped": 0, "up_ms": 0}
    return {
        "state": data["bgpState"],
        "established": int(data["connectionsEstablished"]),
        "dropped": int(data["connectionsDropped"]),
        "up_ms": int(data.get("bgpTimerUpMsec", 0)),
    }


def same_session(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """r1's session was neither dropped nor re-established in between (FRR counts uptime in whole
    seconds, so an uptime that went on is checked as not shorter)."""
    return (
        after["state"] == "Established"
        and (after["established"], after["dropped"]) == (before["established"], before["dropped"])
        and after["up_ms"] >= before["up_ms"]
    )


def send_reload(node: NodeRuntime, pid: int, file: Path, text: str) -> tuple[float, float]:
    """Write the file and SIGHUP fabricd; returns the wall-clock time just before the signal (the
    clock of the agent's `last_reload.at`) and the last reload's `at` before it."""
    before = (status(node)["config"]["last_reload"] or {}).get("at", 0.0)
    file.write_text(text)
    sent = time.time()
    os.kill(pid, signal.SIGHUP)
    return sent, before


def reload_result(node: NodeRuntime, before: float, timeout: float = 15) -> dict[str, Any]:
    """The agent's status once it shows a reload newer than `before`."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        nonlocal seen
        seen = status(node)
        last = seen["config"]["last_reload"]
        return last is not None and last["at"] > before

    eventually(done, timeout, "the reload's result in fabricctl status", every=0.05)
    return seen


def reload(node: NodeRuntime, pid: int, file: Path, text: str) -> dict[str, Any]:
    """Write the file, SIGHUP fabricd, and return its status once the reload's result is in it."""
    _, before = send_reload(node, pid, file, text)
    return reload_result(node, before)
