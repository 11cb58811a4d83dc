"""What LXD 5.0.2 offers an anycast service on OVN, on labs/ovn-bgp.clab.yml (lab tovna).

docs/services.md ("OVN") rests on these facts, pinned here so an LXD that changes them fails this test:
- no network load balancers (API extension `network_load_balancer` missing): GET and POST on
  /1.0/networks/<net>/load-balancers answer "not found";
- a network forward has one target per listen port (a second target for the same port is refused)
  and a default target that carries every protocol, ICMP included;
- a listen address may not repeat on another OVN network of the same uplink;
- fabricd announces a forward's listen address with the OVN router's uplink address as next hop,
  traffic to it reaches the target, moving the target is one PUT, and deleting the forward
  withdraws the route;
- the host reaches OVN instance addresses through the uplink (where health checks would run).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric_lab import ovn_node
from fabric_lab.fib import wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabric_lab.topology import load_topology
from tests.lab.conftest import REPO

pytestmark = pytest.mark.lab

ANYCAST = "10.211.64.53"  # the hand-made forward of the first test
SERVICE = "10.211.64.80"  # the service of the second: instances tovna-s*, an exec check
SERVICES = f"""
services:
  - name: ovndns
    addresses: [{SERVICE}]
    backends: {{pattern: "tovna-s*"}}
    check: {{type: exec, command: [test, -f, /tmp/ok], interval: 0.5, timeout: 0.5, rise: 1, fall: 2}}
"""


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    """labs/ovn-bgp.clab.yml with an anycast service added to h1's fabricd.yaml."""
    topology = load_topology(REPO / "labs" / "ovn-bgp.clab.yml")
    nodes = []
    for node in topology.nodes:
        if node.name == "h1" and node.agent_config is not None:
            config = state_root / "tovna-h1-fabricd.yaml"
            config.write_text(node.agent_config.read_text() + SERVICES)
            node = dataclasses.replace(node, labels={**node.labels, "fabric.agent": str(config)})
        nodes.append(node)
    lab = Lab(dataclasses.replace(topology, name="tovna", nodes=tuple(nodes)), state_root)
    lab.down()
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def query(node: NodeRuntime, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return node.run(["lxc", "query", *args, path], check=False)


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


def test_lxd_offers_forwards_but_no_load_balancers_on_ovn(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    server = json.loads(h1.run(["lxc", "query", "/1.0"]).stdout)
    extensions = set(server["api_extensions"])
    print(f"\nLXD {server['environment']['server_version']}; forward extensions:",
          sorted(e for e in extensions if "forward" in e or "load_balancer" in e))  # fmt: skip
    h1.run(["lxc", "network", "create", "tovnany", "--type=ovn", "network=UPLINK",
            "ipv4.address=10.211.1.1/24", "ipv4.nat=false", "ipv6.address=none"])  # fmt: skip
    ovn_node.set_netdev_datapath(h1)
    try:
        listing = query(h1, "/1.0/networks/tovnany/load-balancers")
        print("GET load-balancers:", listing.returncode, listing.stdout.strip(), listing.stderr.strip())
        created = query(h1, "/1.0/networks/tovnany/load-balancers", "-X", "POST", "-d",
                        json.dumps({"listen_address": ANYCAST}))  # fmt: skip
        print("POST load-balancers:", created.returncode, created.stderr.strip())
        assert "network_load_balancer" not in extensions
        assert listing.returncode != 0 and created.returncode != 0

        for name in ("tovna-b1", "tovna-b2"):
            h1.run(["lxc", "launch", "busybox", name, "--network", "tovnany"])
        b1, b2 = wait_address(h1, "tovna-b1", "10.211.1."), wait_address(h1, "tovna-b2", "10.211.1.")
        assert h1.run(["ping", "-c1", "-W2", b2], check=False).returncode == 0  # host -> OVN instance
        forward = {"listen_address": ANYCAST, "config": {"target_address": b1}}
        made = query(h1, "/1.0/networks/tovnany/forwards", "-X", "POST", "-d", json.dumps(forward))
        print("POST forward:", made.returncode, made.stderr.strip())
        assert made.returncode == 0
        uplink4 = h1.run(["lxc", "network", "get", "tovnany", "volatile.network.ipv4.address"]).stdout.strip()
        wait_for(r1.netns_name, f"{ANYCAST}/32", {uplink4}, timeout=20)
        ping = r1.run(["ping", "-c1", "-W2", ANYCAST], check=False)
        print("ping via forward to b1:", ping.returncode)
        assert ping.returncode == 0  # a default target carries every protocol, ICMP included
        # Two targets for one port: LXD refuses it (one target per listen port).
        two = {"config": {}, "ports": [
            {"protocol": "tcp", "listen_port": "53", "target_address": b1},
            {"protocol": "tcp", "listen_port": "53", "target_address": b2}]}  # fmt: skip
        put = query(h1, f"/1.0/networks/tovnany/forwards/{ANYCAST}", "-X", "PUT", "-d", json.dumps(two))
        print("PUT forward with two targets for one port:", put.returncode, put.stderr.strip())
        assert put.returncode != 0
        # The same listen address on a second OVN network of the same uplink.
        h1.run(["lxc", "network", "create", "tovnany2", "--type=ovn", "network=UPLINK",
                "ipv4.address=10.211.65.1/24", "ipv4.nat=false", "ipv6.address=none"])  # fmt: skip
        ovn_node.set_netdev_datapath(h1)
        again = query(h1, "/1.0/networks/tovnany2/forwards", "-X", "POST", "-d",
                      json.dumps({"listen_address": ANYCAST}))  # fmt: skip
        print("POST same listen address on a second OVN network:", again.returncode, again.stderr.strip())
        assert again.returncode != 0
        # Moving the default target is one PUT.
        moved = query(h1, f"/1.0/networks/tovnany/forwards/{ANYCAST}", "-X", "PUT", "-d",
                      json.dumps({"config": {"target_address": b2}, "ports": []}))  # fmt: skip
        print("PUT forward target -> b2:", moved.returncode, moved.stderr.strip())
        assert moved.returncode == 0
        # With b1 stopped, the address still answers: the forward now reaches b2.
        h1.run(["lxc", "stop", "--force", "tovna-b1"])
        started = time.monotonic()
        answered = r1.run(["ping", "-c1", "-W2", ANYCAST], check=False).returncode
        print(f"ping via forward to b2 (b1 stopped): {answered} in {time.monotonic() - started:.2f}s")
        assert answered == 0
        # With b2 stopped too, nothing answers: the replies came from the target, not the OVN router.
        h1.run(["lxc", "stop", "--force", "tovna-b2"])
        assert r1.run(["ping", "-c1", "-W1", ANYCAST], check=False).returncode != 0
        # And with the forward gone, the router loses the route.
        query(h1, f"/1.0/networks/tovnany/forwards/{ANYCAST}", "-X", "DELETE")
        wait_for(r1.netns_name, f"{ANYCAST}/32", None, timeout=20)
    finally:
        for name in ("tovna-b1", "tovna-b2"):
            h1.run(["lxc", "delete", "--force", name], check=False)
        query(h1, f"/1.0/networks/tovnany/forwards/{ANYCAST}", "-X", "DELETE")
        h1.run(["lxc", "network", "delete", "tovnany"], check=False)
        h1.run(["lxc", "network", "delete", "tovnany2"], check=False)


def forward_target(node: NodeRuntime, network: str, listen: str) -> str | None:
    done = query(node, f"/1.0/networks/{network}/forwards/{listen}")
    return json.loads(done.stdout)["config"].get("target_address") if done.returncode == 0 else None


def wait_until(what: str, condition: object, timeout: float = 20) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what} not within {timeout:g}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_service_on_ovn_is_a_forward_to_a_healthy_backend(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    h1.run(["lxc", "network", "create", "tovnsvc", "--type=ovn", "network=UPLINK",
            "ipv4.address=10.211.1.1/24", "ipv4.nat=false", "ipv6.address=none"])  # fmt: skip
    ovn_node.set_netdev_datapath(h1)
    try:
        uplink4 = h1.run(["lxc", "network", "get", "tovnsvc", "volatile.network.ipv4.address"]).stdout.strip()
        for name in ("tovna-s1", "tovna-s2"):
            h1.run(["lxc", "launch", "busybox", name, "--network", "tovnsvc"])
        s1, s2 = wait_address(h1, "tovna-s1", "10.211.1."), wait_address(h1, "tovna-s2", "10.211.1.")
        assert query(h1, f"/1.0/networks/tovnsvc/forwards/{SERVICE}").returncode != 0  # none healthy yet
        for name in ("tovna-s1", "tovna-s2"):
            h1.run(["lxc", "exec", name, "--", "touch", "/tmp/ok"])
        healthy = time.monotonic()
        wait_for(r1.netns_name, f"{SERVICE}/32", {uplink4}, timeout=20)
        print(f"\nchecks pass -> {SERVICE}/32 via {uplink4} at r1 in {time.monotonic() - healthy:.2f}s")
        # The lowest-named serving backend. Each backend rises on its own check's schedule, so the
        # forward may first name s2 when its check passed first, and moves to s1 once s1's does.
        wait_until("target s1", lambda: forward_target(h1, "tovnsvc", SERVICE) == s1, timeout=10)
        assert r1.run(["ping", "-c1", "-W2", SERVICE], check=False).returncode == 0
        rows = json.loads(h1.fabricctl("services", "--json").stdout)
        print(json.dumps(rows)[:600])
        assert '"announced"' in json.dumps(rows)

        # s1's check fails: the forward moves to s2, the route stays, traffic reaches s2.
        h1.run(["lxc", "exec", "tovna-s1", "--", "rm", "/tmp/ok"])
        took = wait_until("retarget to s2", lambda: forward_target(h1, "tovnsvc", SERVICE) == s2)
        print(f"s1 check fails -> forward retargeted to s2 in {took:.2f}s (interval 0.5 s x fall 2)")
        h1.run(["lxc", "stop", "--force", "tovna-s1"])
        assert r1.run(["ping", "-c1", "-W2", SERVICE], check=False).returncode == 0
        wait_for(r1.netns_name, f"{SERVICE}/32", {uplink4}, timeout=5)

        # No backend serving: the forward goes, and with it the route at r1.
        h1.run(["lxc", "exec", "tovna-s2", "--", "rm", "/tmp/ok"])
        took = wait_until("forward deleted", lambda: forward_target(h1, "tovnsvc", SERVICE) is None)
        wait_for(r1.netns_name, f"{SERVICE}/32", None, timeout=20)
        print(f"s2 check fails -> forward deleted in {took:.2f}s, route gone at r1")
    finally:
        for name in ("tovna-s1", "tovna-s2"):
            h1.run(["lxc", "delete", "--force", name], check=False)
        query(h1, f"/1.0/networks/tovnsvc/forwards/{SERVICE}", "-X", "DELETE")
        h1.run(["lxc", "network", "delete", "tovnsvc"], check=False)
