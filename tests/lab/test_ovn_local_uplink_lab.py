"""OVN uplinks that are bridges local to each host, and a BIRD 2 router only on the underlay
(labs/ovn-local.clab.yml): LXD + OVN + fabricd + ExaBGP + BIRD.

The OVN router's uplink address (volatile.network.ipvX.address) is on a bridge r1 is not on, so r1
cannot use it as a next hop: BIRD treats such a route as withdrawn ("Invalid NEXT_HOP attribute -
address ... not directly reachable") and never installs it. fabricd announces the subnet with the
host's own session address instead (next-hop self); the host forwards into its uplink bridge. With
`unusable_next_hop: withhold` on the uplink the routes are withheld, naming bgp.ipvX.nexthop, and
an uplink's bgp.ipvX.nexthop wins either way.

h1 peers with r1 over IPv4 and IPv6, h2 over IPv6 only (its network is IPv6 only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from fabric_lab import ovn_node
from fabric_lab.fib import routes_to, wait_for
from fabric_lab.node import AGENT_ANSWERS, NodeRuntime
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, fresh_lab, stop_agent

pytestmark = pytest.mark.lab

LAB_FILE = REPO / "labs" / "ovn-local.clab.yml"
SELF = {"h1": {4: "10.99.1.11", 6: "fd00:99:1::11"}, "h2": {6: "fd00:99:2::12"}}  # session addresses
# Addresses on the hosts' eth1 that the uplinks' bgp.ipvX.nexthop name in the last test.
EXPLICIT = {"h1": {4: "10.99.1.111", 6: "fd00:99:1::111"}, "h2": {6: "fd00:99:2::112"}}
SUBNETS = {"h1": {4: "10.211.1.0/24", 6: "fd00:211:1::/64"}, "h2": {6: "fd00:211:2::/64"}}
PEERS = {4: "r1", 6: "r1-v6"}  # the peers' names in the hosts' fabricd.yaml


@dataclass(frozen=True)
class OvnHost:
    """One host's OVN network and the instance on it, by address family."""

    name: str
    uplink: dict[int, str]  # the OVN router's uplink address
    instance: dict[int, str]


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(LAB_FILE, "tovnl", state_root) as lab:
        yield lab


@pytest.fixture(scope="module")
def ovn(lab: Lab) -> Iterator[dict[str, OvnHost]]:
    """ovnnet with one running instance on each host: dual-stack on h1, IPv6 only on h2."""
    h1, h2 = lab.node("h1"), lab.node("h2")
    try:
        create_ovn_network(
            h1, "ipv4.address=10.211.1.1/24", "ipv4.nat=false",
            "ipv6.address=fd00:211:1::1/64", "ipv6.nat=false",
        )  # fmt: skip
        # ipv4.address=none is explicit: an OVN network without it gets a random subnet ("auto").
        create_ovn_network(h2, "ipv4.address=none", "ipv6.address=fd00:211:2::1/64", "ipv6.nat=false")
        hosts = {}
        for node, families in ((h1, (4, 6)), (h2, (6,))):
            node.run(["lxc", "launch", "busybox", "c1", "--network", "ovnnet"])
            hosts[node.name] = OvnHost(
                node.name,
                uplink={v: network_key(node, f"volatile.network.ipv{v}.address") for v in families},
                instance={v: wait_address(node, "c1", SUBNETS[node.name][v]) for v in families},
            )
        yield hosts
    finally:
        for node in (h1, h2):
            node.run(["lxc", "delete", "--force", "c1"], check=False)
            node.run(["lxc", "network", "delete", "ovnnet"], check=False)


def test_ovn_subnets_reach_birds_fib_with_next_hop_self(lab: Lab, ovn: dict[str, OvnHost]) -> None:
    r1 = lab.node("r1")
    for host, subnets in SUBNETS.items():
        for version, subnet in subnets.items():
            # The OVN router's uplink address is on the host's own bridge: r1 has no route to it.
            uplink = ovn[host].uplink[version]
            assert r1.run(["ip", "route", "get", uplink], check=False).returncode != 0, uplink
            wait_for(r1.netns_name, subnet, {SELF[host][version]}, timeout=20)
            # BIRD's own table agrees: the route is there, resolved on the session's interface.
            shown = bird(r1, "show", "route", "for", subnet, "all")
            assert f"BGP.next_hop: {SELF[host][version]}" in shown, shown
    # h2's session is IPv6 only: BIRD holds nothing else from it.
    from_h2 = bird(r1, "show", "route", "protocol", "h2_v6")
    assert SUBNETS["h2"][6] in from_h2 and "10.211." not in from_h2
    # No unusable next hop was ever sent: BIRD logs each one it drops.
    assert "Invalid NEXT_HOP" not in r1.run(["cat", "/run/bird/bird.log"]).stdout


def test_r1_pings_ovn_instances_through_the_hosts(lab: Lab, ovn: dict[str, OvnHost]) -> None:
    r1 = lab.node("r1")
    for host, subnets in SUBNETS.items():
        for version, subnet in subnets.items():
            assert routes_to(r1.netns_name, subnet) == {SELF[host][version]}
            ping(r1, ovn[host].instance[version], f"on {host}")


def test_fabricctl_shows_next_hop_self_and_why(lab: Lab, ovn: dict[str, OvnHost]) -> None:
    for host, subnets in SUBNETS.items():
        node = lab.node(host)
        for version, subnet in subnets.items():
            row = wait_row(node, subnet, lambda r: r.get("state") == "announced")
            assert row["next_hop"] == SELF[host][version], row
            assert row["peers"] == {PEERS[version]: "announced"}, row
            note = str(row["note"])
            assert "next-hop self" in note and ovn[host].uplink[version] in note, row
            assert "not on a subnet" in note and "eth1" in note, row


def test_withhold_names_the_nexthop_key(lab: Lab, ovn: dict[str, OvnHost]) -> None:
    r1 = lab.node("r1")
    try:
        for host in SUBNETS:
            restart_agent(lab, host, unusable_next_hop="withhold")
        for host, subnets in SUBNETS.items():
            for version, subnet in subnets.items():
                row = wait_row(lab.node(host), subnet, lambda r: r.get("state") == "withheld")
                reason = str(row["reason"])
                assert f"bgp.ipv{version}.nexthop" in reason and ovn[host].uplink[version] in reason, row
                wait_for(r1.netns_name, subnet, None)
                assert subnet not in bird(r1, "show", "route", "for", subnet)
        # Withheld from the start: even the restarted agent never sent the unusable address.
        assert "Invalid NEXT_HOP" not in r1.run(["cat", "/run/bird/bird.log"]).stdout
    finally:
        for host in SUBNETS:
            restart_agent(lab, host)
    for host, subnets in SUBNETS.items():
        for version, subnet in subnets.items():
            wait_for(r1.netns_name, subnet, {SELF[host][version]}, timeout=20)


@pytest.mark.parametrize("unusable_next_hop", ["self", "withhold"])
def test_uplink_bgp_nexthop_wins(lab: Lab, ovn: dict[str, OvnHost], unusable_next_hop: str) -> None:
    """The operator's bgp.ipvX.nexthop on the uplink is taken as it is, in either mode."""
    r1 = lab.node("r1")
    try:
        for host, hops in EXPLICIT.items():
            for version, address in hops.items():
                set_uplink_key_in_db(lab.node(host), f"bgp.ipv{version}.nexthop", address)
            restart_agent(lab, host, unusable_next_hop=unusable_next_hop)
        for host, subnets in SUBNETS.items():
            for version, subnet in subnets.items():
                hop = EXPLICIT[host][version]
                wait_for(r1.netns_name, subnet, {hop}, timeout=20)
                row = wait_row(lab.node(host), subnet, next_hop_is(hop))
                assert row["state"] == "announced" and not row.get("note"), row
                ping(r1, ovn[host].instance[version], f"via {hop}")
    finally:
        for host, hops in EXPLICIT.items():
            for version in hops:
                unset_uplink_key_in_db(lab.node(host), f"bgp.ipv{version}.nexthop")
            restart_agent(lab, host)
    for host, subnets in SUBNETS.items():
        for version, subnet in subnets.items():
            wait_for(r1.netns_name, subnet, {SELF[host][version]}, timeout=20)


# ---- helpers ------------------------------------------------------------------------------------


def bird(node: NodeRuntime, *command: str) -> str:
    """birdc output; it exits 1 for "Network not found", which is output too."""
    return node.run(["birdc", "-s", "/run/bird/bird.ctl", *command], check=False).stdout


def ping(node: NodeRuntime, address: str, where: str, timeout: float = 10) -> None:
    """One echo answered within timeout; a new instance's SLAAC address is usable only after its
    duplicate address detection, so earlier echoes may go unanswered."""
    started = time.monotonic()
    while True:
        result = node.run(["ping", "-c1", "-W1", address], check=False)
        took = time.monotonic() - started
        if result.returncode == 0:
            if took > 0.5:
                print(f"\n{node.name} -> {address} {where}: first answer after {took:.1f}s")
            return
        failed = f"{node.name} -> {address} {where}: {result.stdout}{result.stderr}"
        assert took < timeout, failed


def network_key(node: NodeRuntime, key: str, network: str = "ovnnet") -> str:
    return node.run(["lxc", "network", "get", network, key]).stdout.strip()


def create_ovn_network(node: NodeRuntime, *settings: str) -> None:
    node.run(["lxc", "network", "create", "ovnnet", "--type=ovn", "network=UPLINK", *settings])
    ovn_node.set_netdev_datapath(node)


def wait_address(node: NodeRuntime, instance: str, subnet: str, timeout: float = 30) -> str:
    """The instance's address in subnet (IPv6: its SLAAC address from OVN's router advertisements)."""
    network = ip_network(subnet)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(node.run(["lxc", "query", f"/1.0/instances/{instance}/state"]).stdout)
        for iface in (state.get("network") or {}).values():
            for address in iface.get("addresses", []):
                if ip_address(address["address"]) in network:
                    return str(address["address"])
        time.sleep(0.3)
    raise AssertionError(f"{instance} on {node.name} got no address in {subnet}")


def route_row(node: NodeRuntime, prefix: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(node.fabricctl("routes", "--json").stdout)["routes"]
    return next((r for r in rows if r["prefix"] == prefix), {})


def wait_row(
    node: NodeRuntime, prefix: str, wanted: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row = route_row(node, prefix)
    while not wanted(row):
        assert time.monotonic() < deadline, f"{prefix} on {node.name}: {row or 'no row'}"
        time.sleep(0.2)
        row = route_row(node, prefix)
    return row


def next_hop_is(hop: str) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row.get("next_hop") == hop


def restart_agent(lab: Lab, host: str, unusable_next_hop: str | None = None, timeout: float = 20) -> None:
    """fabricd on the host again, with the lab's config, or with the uplink's unusable_next_hop set."""
    config = next(n.agent_config for n in lab.topology.nodes if n.name == host)
    assert config is not None
    if unusable_next_hop is not None:
        settings = yaml.safe_load(config.read_text())
        settings["routes"] = {"ovn_uplinks": [{"uplink": "UPLINK", "unusable_next_hop": unusable_next_hop}]}
        config = lab.state_dir / f"{host}-fabricd-{unusable_next_hop}.yaml"
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
    stop_agent(lab, host, timeout)
    node, state = lab.node(host), lab.state()
    node.run(["fabricd", "check-config", str(config)])
    state.nodes[host].agent_pid = node.spawn(["fabricd", "run", "--config", str(config)], "fabricd")
    state.save()
    deadline = time.monotonic() + timeout
    while node.run(["fabricctl", "status", "--json"], check=False).returncode not in AGENT_ANSWERS:
        assert time.monotonic() < deadline, f"fabricd on {host} did not come back"
        time.sleep(0.2)


# LXD 5.0.2 refuses bgp.ipv4.nexthop / bgp.ipv6.nexthop on a bridge through its API ("Invalid network
# configuration key": its validator reads every bgp.* key as bgp.peers.NAME.KEY), so they are
# written into its database as a newer LXD would keep them. No event follows: the agent restarts.
# Keys and values are this module's own constants, checked before they go into the statement.
UPLINK_ID = "(SELECT id FROM networks WHERE name = 'UPLINK')"


def set_uplink_key_in_db(node: NodeRuntime, key: str, value: str) -> None:
    ip_address(value)
    unset_uplink_key_in_db(node, key)
    insert = "INSERT INTO networks_config (network_id, node_id, key, value) VALUES ({}, NULL, '{}', '{}')"
    node.run(["lxd", "sql", "global", insert.format(UPLINK_ID, key, value)])
    assert network_key(node, key, "UPLINK") == value


def unset_uplink_key_in_db(node: NodeRuntime, key: str) -> None:
    assert key in ("bgp.ipv4.nexthop", "bgp.ipv6.nexthop")
    delete = "DELETE FROM networks_config WHERE network_id = {} AND key = '{}'"
    node.run(["lxd", "sql", "global", delete.format(UPLINK_ID, key)])
