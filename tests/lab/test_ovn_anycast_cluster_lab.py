"""An anycast service on OVN in a 2-member LXD cluster (labs/ovn-cluster.clab.yml, lab tovnc).

Both members run fabricd with the service; the manager rule (docs/services.md, "OVN") makes m1, the
lowest-named online member, the only one that checks the backends and writes the forward, even for
a backend that runs on m2.
"""

from __future__ import annotations

import dataclasses
import json
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

NET = "tovncnet"
SERVICE = "10.211.64.81"
SERVICES = f"""
services:
  - name: ovnweb
    addresses: [{SERVICE}]
    backends: {{pattern: "tovnc-s*"}}
    check: {{type: exec, command: [test, -f, /tmp/ok], interval: 0.5, timeout: 0.5, rise: 1, fall: 2}}
"""


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    topology = load_topology(REPO / "labs" / "ovn-cluster.clab.yml")
    nodes = []
    for node in topology.nodes:
        if node.agent_config is not None:
            config = state_root / f"tovnc-{node.name}-fabricd.yaml"
            config.write_text(node.agent_config.read_text() + SERVICES)
            node = dataclasses.replace(node, labels={**node.labels, "fabric.agent": str(config)})
        nodes.append(node)
    lab = Lab(dataclasses.replace(topology, name="tovnc", nodes=tuple(nodes)), state_root)
    lab.down()
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def forward_target(node: NodeRuntime) -> str | None:
    done = node.run(["lxc", "query", f"/1.0/networks/{NET}/forwards/{SERVICE}"], check=False)
    return json.loads(done.stdout)["config"].get("target_address") if done.returncode == 0 else None


def address_of(node: NodeRuntime, instance: str, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(node.run(["lxc", "query", f"/1.0/instances/{instance}/state"]).stdout)
        for iface in (state.get("network") or {}).values():
            for address in iface.get("addresses", []):
                if address["address"].startswith("10.211.1."):
                    return str(address["address"])
        time.sleep(0.3)
    raise AssertionError(f"{instance} got no address")


def init_on(node: NodeRuntime, name: str, member: str, timeout: float = 30) -> None:
    """lxc init on another member; right after the cluster forms LXD may still lack its event
    connection to that member ("Missing event connection with target cluster member")."""
    deadline = time.monotonic() + timeout
    while True:
        done = node.run(["lxc", "init", "busybox", name, "--target", member, "--network", NET],
                        input_text="", timeout=120, check=False)  # fmt: skip
        if done.returncode == 0:
            return
        assert "Missing event connection" in done.stderr and time.monotonic() < deadline, done.stderr
        time.sleep(0.5)


def services_of(node: NodeRuntime) -> dict[str, object]:
    rows = json.loads(node.fabricctl("services", "--json").stdout)["services"]["services"]
    return next(r for r in rows if r["name"] == "ovnweb")  # type: ignore[no-any-return]


def wait_until(what: str, condition: object, timeout: float = 20) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what} not within {timeout:g}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_only_the_lowest_named_member_manages_the_forward(lab: Lab) -> None:
    m1, m2, r1 = lab.node("m1"), lab.node("m2"), lab.node("r1")
    m1.run(["lxc", "network", "create", NET, "--type=ovn", "network=UPLINK", "ipv4.address=10.211.1.1/24",
            "ipv4.nat=false", "ipv6.address=none"], input_text="", timeout=60)  # fmt: skip
    for node in (m1, m2):
        ovn_node.set_netdev_datapath(node)
    try:
        uplink4 = m1.run(["lxc", "network", "get", NET, "volatile.network.ipv4.address"]).stdout.strip()
        for name, member in (("tovnc-s1", "m2"), ("tovnc-s2", "m1")):  # the lowest-named runs on m2
            init_on(m1, name, member)
            m1.run(["lxc", "start", name], timeout=60)
        s1, s2 = address_of(m1, "tovnc-s1"), address_of(m1, "tovnc-s2")
        for name in ("tovnc-s1", "tovnc-s2"):
            m1.run(["lxc", "exec", name, "--", "touch", "/tmp/ok"])
        took = wait_until("forward to s1", lambda: forward_target(m1) == s1, timeout=30)
        wait_for(r1.netns_name, f"{SERVICE}/32", {uplink4}, timeout=20)
        print(f"\ncluster: forward to s1 (on m2) {took:.2f}s after the checks could pass")
        # OVN programs the forward's flows on the chassis after LXD has written it: a reply within 5 s.
        assert r1.run(["ping", "-c1", "-w5", SERVICE], check=False).returncode == 0  # reaches s1 on m2
        # m1 checks both backends; m2 checks none and says who manages the forward. m2 counts the
        # address announced once its own LXD lists the forward m1 wrote: its OVN re-read runs every 5 s.
        wait_until(
            "m2 lists the forward",
            lambda: services_of(m2)["addresses"][0]["state"] == "announced",  # type: ignore[index]
            timeout=15,
        )
        on_m1, on_m2 = services_of(m1), services_of(m2)
        assert {b["instance"]: b["state"] for b in on_m1["backends"]} == {"tovnc-s1": "up", "tovnc-s2": "up"}
        for backend in on_m2["backends"]:  # type: ignore[attr-defined]
            assert backend["state"] == "excluded" and "checked by member m1" in backend["reason"], on_m2
        assert on_m2["addresses"][0]["state"] == "announced"  # type: ignore[index]
        assert "managed by member m1" in on_m2["addresses"][0]["reason"]  # type: ignore[index]

        m1.run(["lxc", "exec", "tovnc-s1", "--", "rm", "/tmp/ok"])
        took = wait_until("retarget to s2", lambda: forward_target(m1) == s2)
        print(f"cluster: s1 fails -> forward retargeted to s2 (on m1) in {took:.2f}s")
        assert forward_target(m2) == s2  # one forward, cluster-wide
        m1.run(["lxc", "stop", "--force", "tovnc-s1"], timeout=60)
        assert r1.run(["ping", "-c1", "-w5", SERVICE], check=False).returncode == 0  # now s2 on m1
    finally:
        for name in ("tovnc-s1", "tovnc-s2"):
            m1.run(["lxc", "delete", "--force", name], check=False, timeout=60)
        m1.run(["lxc", "query", "-X", "DELETE", f"/1.0/networks/{NET}/forwards/{SERVICE}"], check=False)
        m1.run(["lxc", "network", "delete", NET], check=False, timeout=60)
