"""labs/basic.clab.yml in namespaces: a real FRR router, two real LXD daemons, fabricd on each host."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import NetNS

from fabric_lab import netns
from fabric_lab.runner import Lab

pytestmark = pytest.mark.lab


def test_router_answers_with_its_bgp_config(basic_lab: Lab) -> None:
    r1 = basic_lab.node("r1")
    summary = r1.run(["vtysh", "-c", "show bgp summary"])
    assert summary.returncode == 0
    running = r1.run(["vtysh", "-c", "show running-config"]).stdout
    assert "router bgp 65000" in running and "bgp listen range 10.99.0.0/16 peer-group HOSTS" in running
    detail = json.loads(r1.run(["vtysh", "-c", "show bgp ipv4 unicast summary json"]).stdout or "{}")
    assert detail.get("as") == 65000 or "No BGP" in summary.stdout + summary.stderr


def test_underlay_is_routed_through_r1(basic_lab: Lab) -> None:
    h1 = basic_lab.node("h1")
    assert h1.run(["ping", "-c1", "-W2", "10.99.1.1"], check=False).returncode == 0
    assert h1.run(["ping", "-c1", "-W2", "10.99.2.12"], check=False).returncode == 0
    assert h1.run(["ping", "-6", "-c1", "-W2", "fd00:99:2::12"], check=False).returncode == 0


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_lxd_answers_on_each_host(basic_lab: Lab, host: str) -> None:
    node = basic_lab.node(host)
    listed = node.run(["lxc", "list", "--format", "csv"])
    assert listed.returncode == 0
    networks = node.run(["lxc", "network", "list", "--format", "csv"]).stdout
    assert "lxdbr0" in networks
    images = node.run(["lxc", "image", "list", "--format", "csv", "-c", "l"]).stdout
    assert "busybox" in images


def test_instance_gets_an_address_from_its_host_bridge(basic_lab: Lab) -> None:
    h2 = basic_lab.node("h2")
    h2.run(["lxc", "launch", "busybox", "tinst2"], timeout=120)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = h2.run(["lxc", "list", "tinst2", "--format", "csv", "-c", "s4"]).stdout
            if "RUNNING" in line and "10.210.2." in line:
                break
            time.sleep(0.3)
        assert "RUNNING" in line and "10.210.2." in line, line
    finally:
        h2.run(["lxc", "delete", "--force", "tinst2"], check=False, timeout=60)


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_fabricctl_status_on_each_host(basic_lab: Lab, host: str) -> None:
    node = basic_lab.node(host)
    status = json.loads(node.fabricctl("status", "--json").stdout)
    assert status["host"]["name"] == host
    assert {"host", "bgp_peers", "routes", "overlay_peers", "authority"} <= set(status)
    assert "fabricd" in node.fabricctl("status").stdout


def test_nodes_are_isolated(basic_lab: Lab) -> None:
    for name in ("r1", "h1", "h2"):
        node = basic_lab.node(name)
        assert node.run(["hostname"]).stdout.strip() == name
        assert node.run(["cat", "/etc/resolv.conf"]).stdout.startswith("nameserver 127.0.0.1")
        with NetNS(node.netns_name) as ns:
            defaults = [r for r in ns.get_routes(family=2) if r.get("dst_len") == 0]
            defaults += [r for r in ns.get_routes(family=10) if r.get("dst_len") == 0]
            assert defaults == [], f"{name} has a default route"
    # No lab link exists in the machine's own namespace.
    assert not [n for n in netns.link_names() if n.startswith(("eth1", "eth2")) and n not in ("eth0",)]


def test_fabric_lab_exec_cli(basic_lab: Lab) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fabric_lab.cli",
            "--state-dir",
            str(basic_lab.state_dir.parent),
            "exec",
            "r1",
            "--",
            "hostname",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "r1"


@pytest.mark.parametrize("path", ["/projects/default", "/profiles/default"])
def test_lxd_conditional_write_refuses_a_stale_etag(basic_lab: Lab, path: str) -> None:
    """The write path the election builds on: compare-and-swap on LXD's database by ETag."""
    h1 = basic_lab.node("h1")
    socket = "/var/lib/lxd/unix.socket"  # as the node's fabricd.yaml names it
    probe = str(Path(__file__).with_name("lxd_etag_probe.py"))
    out = h1.run([sys.executable, probe, socket, path], timeout=60)
    assert out.returncode == 0, out.stderr
    outcome = json.loads(out.stdout)
    assert outcome["after_first"] == "first"
    assert outcome["stale"] == 412
    assert outcome["after_stale"] == "first"  # the stale write changed nothing
    assert outcome["etag_changed"] and outcome["cleaned"]
