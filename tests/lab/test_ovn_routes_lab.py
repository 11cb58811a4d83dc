"""OVN announcements end to end on labs/ovn-bgp.clab.yml: LXD + OVN + fabricd + ExaBGP + FRR.

The next hop of an OVN network's routes is its router's address on the uplink segment r1 shares
with the hosts (volatile.network.ipv4/ipv6.address), and r1's kernel must forward through it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_lab import ovn_node
from fabric_lab.fib import routes_to, wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, fresh_lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "ovn-bgp.clab.yml", "tovnr", state_root) as lab:
        yield lab


def network_key(node: NodeRuntime, network: str, key: str) -> str:
    return node.run(["lxc", "network", "get", network, key]).stdout.strip()


def create_ovn_network(node: NodeRuntime, name: str, *settings: str) -> None:
    node.run(["lxc", "network", "create", name, "--type=ovn", "network=UPLINK", *settings])
    ovn_node.set_netdev_datapath(node)


def wait_address(node: NodeRuntime, instance: str, prefix: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(node.run(["lxc", "query", f"/1.0/instances/{instance}/state"]).stdout)
        for iface in (state.get("network") or {}).values():
            for address in iface.get("addresses", []):
                if address["address"].startswith(prefix):
                    return str(address["address"])
        time.sleep(0.3)
    raise AssertionError(f"{instance} got no address in {prefix}")


def test_ovn_subnets_are_announced_via_the_uplink_address(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    started = time.monotonic()
    create_ovn_network(
        h1, "ovn1", "ipv4.address=10.211.1.1/24", "ipv4.nat=false",
        "ipv6.address=fd00:211:1::1/64", "ipv6.nat=false",
    )  # fmt: skip
    try:
        uplink4 = network_key(h1, "ovn1", "volatile.network.ipv4.address")
        uplink6 = network_key(h1, "ovn1", "volatile.network.ipv6.address")
        assert uplink4.startswith("10.98.0.10") and uplink6.startswith("fd00:98::")
        wait_for(r1.netns_name, "10.211.1.0/24", {uplink4}, timeout=20)
        wait_for(r1.netns_name, "fd00:211:1::/64", {uplink6}, timeout=20)
        print(f"\novn network create -> subnet at r1 in {time.monotonic() - started:.2f}s (incl. create)")

        # The next hop forwards: r1 reaches an instance on the OVN network through it.
        h1.run(["lxc", "launch", "busybox", "ovnc1", "--network", "ovn1"])
        address = wait_address(h1, "ovnc1", "10.211.1.")
        assert r1.run(["ping", "-c1", "-W2", address], check=False).returncode == 0

        # NIC external routes of an OVN instance take the same next hop, and follow its state.
        h1.run(["lxc", "stop", "--force", "ovnc1"])
        h1.run(["lxc", "config", "device", "set", "ovnc1", "eth0", "ipv4.routes.external=10.211.64.0/26"])
        h1.run(["lxc", "start", "ovnc1"])
        wait_for(r1.netns_name, "10.211.64.0/26", {uplink4})
        h1.run(["lxc", "stop", "--force", "ovnc1"])
        wait_for(r1.netns_name, "10.211.64.0/26", None)
        assert routes_to(r1.netns_name, "10.211.1.0/24") == {uplink4}  # the subnet is network-level
    finally:
        h1.run(["lxc", "delete", "--force", "ovnc1"], check=False)
        h1.run(["lxc", "network", "delete", "ovn1"], check=False)
    wait_for(r1.netns_name, "10.211.1.0/24", None)
    wait_for(r1.netns_name, "fd00:211:1::/64", None)


def test_nat_network_is_withheld(lab: Lab) -> None:
    h2, r1 = lab.node("h2"), lab.node("r1")
    create_ovn_network(h2, "natnet", "ipv4.address=10.211.96.1/24", "ipv4.nat=true", "ipv6.address=none")
    try:
        deadline = time.monotonic() + 10
        row: dict[str, object] = {}
        while time.monotonic() < deadline and not row:
            routes = json.loads(h2.fabricctl("routes", "--json").stdout)["routes"]
            row = next((r for r in routes if r["prefix"] == "10.211.96.0/24"), {})
            time.sleep(0.2)
        assert row.get("state") == "withheld" and "nat" in str(row.get("reason")), row
        assert routes_to(r1.netns_name, "10.211.96.0/24") == set()
    finally:
        h2.run(["lxc", "network", "delete", "natnet"], check=False)
