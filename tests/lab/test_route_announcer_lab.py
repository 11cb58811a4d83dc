"""The route announcer end to end on labs/basic.clab.yml: real LXD, fabricd, ExaBGP and FRR.

Instances on h1's bridge ask for routes with NIC ipv4/ipv6.routes.external; r1's kernel table is
the judge.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_lab.fib import routes_to, wait_for
from fabric_lab.lxd_node import respawn_lxd
from fabric_lab.node import AGENT_ANSWERS, NodeRuntime
from fabric_lab.runner import Lab
from fabricd.overlay.firewall import NFT_TIMEOUT
from tests.lab.conftest import (
    REPO,
    agent_pid,
    fresh_lab,
    processes_mentioning,
    start_agent,
    stop_agent,
)

pytestmark = pytest.mark.lab

H1_V4, H1_V6 = "10.99.1.11", "fd00:99:1::11"


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "basic.clab.yml", "troutes", state_root) as lab:
        yield lab


def routes_json(node: NodeRuntime) -> list[dict[str, object]]:
    out = node.fabricctl("routes", "--json").stdout
    rows: list[dict[str, object]] = json.loads(out)["routes"]
    return rows


def launch(node: NodeRuntime, name: str, **nic: str) -> None:
    node.run(["lxc", "init", "busybox", name])
    settings = [f"{key}={value}" for key, value in nic.items()]
    if settings:
        node.run(["lxc", "config", "device", "override", name, "eth0", *settings])
    node.run(["lxc", "start", name])


def test_sessions_come_up(lab: Lab) -> None:
    node = lab.node("h1")
    deadline = time.monotonic() + 20
    peers: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        peers = json.loads(node.fabricctl("status", "--json").stdout)["bgp_peers"]
        if len(peers) == 2 and all(p["state"] == "established" for p in peers):
            break
        time.sleep(0.2)
    assert {p["address"]: p["state"] for p in peers} == {
        "10.99.1.1": "established",
        "fd00:99:1::1": "established",
    }


def test_external_route_follows_the_instance(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    launch(h1, "web1", **{"ipv4.routes.external": "10.201.1.0/24", "ipv6.routes.external": "fd00:201:1::/64"})
    try:
        appear = wait_for(r1.netns_name, "10.201.1.0/24", {H1_V4})
        wait_for(r1.netns_name, "fd00:201:1::/64", {H1_V6})
        row = next(r for r in routes_json(h1) if r["prefix"] == "10.201.1.0/24")
        assert row["state"] == "announced" and row["next_hop"] == H1_V4
        assert "default/lxdbr0/web1" in str(row["origin"])
        h1.run(["lxc", "stop", "--force", "web1"])
        gone = wait_for(r1.netns_name, "10.201.1.0/24", None)
        wait_for(r1.netns_name, "fd00:201:1::/64", None)
        withheld = next(r for r in routes_json(h1) if r["prefix"] == "10.201.1.0/24")
        assert withheld["state"] == "withheld" and "Stopped" in str(withheld["reason"])
        h1.run(["lxc", "start", "web1"])
        wait_for(r1.netns_name, "10.201.1.0/24", {H1_V4})
        print(f"\nroute appeared {appear:.3f}s after start returned; withdrawn {gone:.3f}s after stop")
    finally:
        h1.run(["lxc", "delete", "--force", "web1"], check=False)
    wait_for(r1.netns_name, "10.201.1.0/24", None)
    assert not [r for r in routes_json(h1) if r["prefix"] == "10.201.1.0/24"]


def test_route_outside_allowed_ranges_is_refused_and_shown(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    launch(h1, "rogue1", **{"ipv4.routes.external": "10.250.0.0/24"})
    try:
        deadline = time.monotonic() + 10
        row: dict[str, object] = {}
        while time.monotonic() < deadline:
            row = next((r for r in routes_json(h1) if r["prefix"] == "10.250.0.0/24"), {})
            if row:
                break
            time.sleep(0.2)
        assert row.get("state") == "refused", row
        assert "allowed" in str(row.get("reason")), row
        time.sleep(1.0)  # long enough for a wrongly sent announcement to reach r1
        assert routes_to(r1.netns_name, "10.250.0.0/24") == set()
        assert "10.250.0.0/24" in h1.fabricctl("routes").stdout
        events = json.loads(h1.fabricctl("events", "--json").stdout)["events"]
        refusals = [e for e in events if e["event"] == "route.refuse" and e["subject"] == "10.250.0.0/24"]
        assert refusals and "allowed" in refusals[-1]["reason"], events[-5:]
    finally:
        h1.run(["lxc", "delete", "--force", "rogue1"], check=False)


def test_sigkill_of_fabricd_withdraws_everything(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    launch(h1, "kill1", **{"ipv4.routes.external": "10.201.2.0/24"})
    try:
        wait_for(r1.netns_name, "10.201.2.0/24", {H1_V4})
        started = time.monotonic()
        os.kill(agent_pid(lab, "h1"), signal.SIGKILL)
        wait_for(r1.netns_name, "10.201.2.0/24", None, timeout=5)
        print(f"\nfabricd SIGKILL -> withdrawn in {time.monotonic() - started:.3f}s")
        start_agent(lab, "h1")
        wait_for(r1.netns_name, "10.201.2.0/24", {H1_V4})
    finally:
        h1.run(["lxc", "delete", "--force", "kill1"], check=False)


def test_exabgp_death_is_repaired(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    launch(h1, "bgp1", **{"ipv4.routes.external": "10.201.3.0/24"})
    try:
        wait_for(r1.netns_name, "10.201.3.0/24", {H1_V4})
        children = (
            Path(f"/proc/{agent_pid(lab, 'h1')}/task/{agent_pid(lab, 'h1')}/children").read_text().split()
        )
        exabgp = [int(p) for p in children if b"exabgp" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(exabgp) == 1, children
        os.kill(exabgp[0], signal.SIGKILL)
        wait_for(r1.netns_name, "10.201.3.0/24", None, timeout=5)
        back = wait_for(r1.netns_name, "10.201.3.0/24", {H1_V4}, timeout=20)
        print(f"\nExaBGP SIGKILL -> routes back in {back:.3f}s")
    finally:
        h1.run(["lxc", "delete", "--force", "bgp1"], check=False)


def test_lxd_outage_holds_routes_and_reconciles(lab: Lab) -> None:
    """LXD dies; meanwhile one instance dies too. Routes hold during the outage, then converge."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    launch(h1, "keep1", **{"ipv4.routes.external": "10.201.4.0/24"})
    launch(h1, "lose1", **{"ipv4.routes.external": "10.201.5.0/24"})
    try:
        wait_for(r1.netns_name, "10.201.4.0/24", {H1_V4})
        wait_for(r1.netns_name, "10.201.5.0/24", {H1_V4})
        lxd_pid = lab.state().nodes["h1"].lxd_pid
        assert lxd_pid is not None
        os.kill(lxd_pid, signal.SIGKILL)  # containers keep running without the daemon
        time.sleep(2.0)
        status = json.loads(h1.fabricctl("status", "--json").stdout)
        assert any("lxd unreachable" in p for p in status["problems"]), status["problems"]
        # No flapping: both routes stay while LXD is away.
        assert routes_to(r1.netns_name, "10.201.4.0/24") == {H1_V4}
        assert routes_to(r1.netns_name, "10.201.5.0/24") == {H1_V4}
        # The change fabricd cannot hear about: lose1's init dies while LXD is down.
        init_pid = int(
            h1.run(["cat", "/sys/fs/cgroup/pids/lxc.payload.lose1/cgroup.procs"]).stdout.split()[0]
        )
        os.kill(init_pid, signal.SIGKILL)
        time.sleep(1.0)
        assert routes_to(r1.netns_name, "10.201.5.0/24") == {H1_V4}
        state = lab.state()
        state.nodes["h1"].lxd_pid = respawn_lxd(h1)
        state.save()
        reconciled = wait_for(r1.netns_name, "10.201.5.0/24", None, timeout=30)
        assert routes_to(r1.netns_name, "10.201.4.0/24") == {H1_V4}
        print(f"\nLXD back -> stale route withdrawn in {reconciled:.3f}s")
    finally:
        for name in ("keep1", "lose1"):
            h1.run(["lxc", "delete", "--force", name], check=False)


SLOW_NFT = """#!{python}
# nft that hangs while {flag} exists (a wedged nftables), the real one otherwise.
import os, sys, time
if os.path.exists({flag!r}):
    time.sleep(600)
os.execv("/usr/sbin/nft", ["nft", *sys.argv[1:]])
"""


def bgp_drops(r1: NodeRuntime, peer: str) -> tuple[int, int]:
    neighbor = json.loads(r1.run(["vtysh", "-c", f"show bgp neighbors {peer} json"]).stdout)[peer]
    return int(neighbor["connectionsEstablished"]), int(neighbor["connectionsDropped"])


def test_a_hung_nft_never_stalls_the_bgp_session(lab: Lab, tmp_path: Path) -> None:
    """Status requests while nft hangs: answered from the snapshot, sessions stay, routes stay."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    slow_bin, flag = tmp_path / "slowbin", tmp_path / "nft-hangs"
    slow_bin.mkdir()
    nft = slow_bin / "nft"
    nft.write_text(SLOW_NFT.format(python=sys.executable, flag=str(flag)))
    nft.chmod(0o755)
    stop_agent(lab, "h1")
    start_agent(lab, "h1", extra_env={"PATH": f"{slow_bin}:{h1.base_env()['PATH']}"})
    launch(h1, "nft1", **{"ipv4.routes.external": "10.201.6.0/24"})
    try:
        wait_for(r1.netns_name, "10.201.6.0/24", {H1_V4})
        drops = {peer: bgp_drops(r1, peer) for peer in (H1_V4, H1_V6)}
        flag.touch()
        # fabricd reads its table with nft only when nftables' ruleset generation moved: commit a
        # transaction of our own (with the real nft), as any other tool on the host might.
        h1.run(["/usr/sbin/nft", "add", "table", "inet", "tra_generation"])
        h1.run(["/usr/sbin/nft", "delete", "table", "inet", "tra_generation"])
        started, answers, worst, called = time.monotonic(), 0, 0.0, False
        overlay_error = ""
        # At least 8 s, and until the status tells of the hung nft: the counters' read (at most every
        # 30 s) gives up after FIREWALL_READ_WAIT, the filter's check after NFT_TIMEOUT.
        while time.monotonic() - started < 8.0 or "nft did not" not in overlay_error:
            assert time.monotonic() - started < NFT_TIMEOUT + 20, overlay_error
            asked = time.monotonic()
            out = h1.run(["fabricctl", "--timeout", "3", "status", "--json"], check=False)
            worst = max(worst, time.monotonic() - asked)
            assert out.returncode in AGENT_ANSWERS, out.stderr
            answers += 1
            overlay_error = str((json.loads(out.stdout)["overlay"]["firewall"] or {}).get("error"))
            assert routes_to(r1.netns_name, "10.201.6.0/24") == {H1_V4}
            called = called or bool(processes_mentioning(str(nft)))
        hung_for = time.monotonic() - started
        assert called, "nft was never called while hung"
        assert {peer: bgp_drops(r1, peer) for peer in (H1_V4, H1_V6)} == drops
        print(
            f"\nnft hung {hung_for:.1f} s (reported: {overlay_error}): {answers} status answers, "
            f"slowest {worst:.3f}s; no session dropped"
        )
    finally:
        flag.unlink(missing_ok=True)
        for pid in processes_mentioning(str(nft)):
            os.kill(pid, signal.SIGKILL)
        h1.run(["lxc", "delete", "--force", "nft1"], check=False)
        stop_agent(lab, "h1")
        start_agent(lab, "h1")


def test_a_bridges_own_routes_are_allowed_space_for_routes_on_it(lab: Lab) -> None:
    """10.230.0.0/24 is outside routes.allowed_ranges; LXD routing it to lxdbr0 makes it allowed."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    h1.run(["lxc", "network", "set", "lxdbr0", "ipv4.routes=10.230.0.0/24"])
    launch(h1, "brr1", **{"ipv4.routes.external": "10.230.0.0/25"})
    try:
        wait_for(r1.netns_name, "10.230.0.0/25", {H1_V4})
        h1.run(["lxc", "network", "unset", "lxdbr0", "ipv4.routes"])
        wait_for(r1.netns_name, "10.230.0.0/25", None)
        row = next(r for r in routes_json(h1) if r["prefix"] == "10.230.0.0/25")
        assert row["state"] == "refused" and "allowed" in str(row["reason"]), row
    finally:
        h1.run(["lxc", "delete", "--force", "brr1"], check=False)
        h1.run(["lxc", "network", "unset", "lxdbr0", "ipv4.routes"], check=False)
