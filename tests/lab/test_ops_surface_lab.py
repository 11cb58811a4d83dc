"""fabricctl as a monitoring check and the Prometheus endpoint, against fabricd on labs/basic.clab.yml.

Healthy → exit 0; a refused route or a BGP peer shut down on r1 → exit 3 with the reason; fabricd
stopped → exit 1. Metrics are scraped from r1's namespace (lab addresses only: h1 serves on
10.99.1.11:9464, h2 on [fd00:99:2::12]:9464) and checked against `fabricctl status --json`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabric_lab.fib import wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, fresh_lab, start_agent, stop_agent
from tests.lab.unit_sandbox import capabilities_of, restart_as_the_unit, unit_capabilities

pytestmark = pytest.mark.lab

LAB = "tops"
INSTANCE = f"{LAB}-c1"  # LXD instance names are machine-wide: prefixed with the lab's name
H1_METRICS = "http://10.99.1.11:9464/metrics"
H2_METRICS = "http://[fd00:99:2::12]:9464/metrics"
# Runs in r1's namespace: no proxy (the lab's environment points proxies at a closed port).
SCRAPE = (
    "import sys, urllib.request\n"
    "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "sys.stdout.write(opener.open(sys.argv[1], timeout=5).read().decode())\n"
)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "basic.clab.yml", LAB, state_root) as lab:
        yield lab


def ctl(node: NodeRuntime, *args: str) -> tuple[int, str, str]:
    out = node.run(["fabricctl", *args], check=False, timeout=30)
    return out.returncode, out.stdout, out.stderr


def status(node: NodeRuntime) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(node.fabricctl("status", "--json").stdout)
    return found


def scrape(lab: Lab, url: str) -> Samples:
    asked = time.monotonic()
    out = lab.node("r1").run([sys.executable, "-c", SCRAPE, url], timeout=30)
    took = time.monotonic() - asked
    print(f"\nscraped {url}: {len(out.stdout)} bytes in {took:.2f} s (python start included)")
    samples: Samples = {}
    for family in text_string_to_metric_families(out.stdout):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def wait_check(node: NodeRuntime, code: int, timeout: float = 30) -> str:
    """`fabricctl check`'s line once it exits with `code`."""
    deadline = time.monotonic() + timeout
    seen: tuple[int, str, str] = (-1, "", "")
    while time.monotonic() < deadline:
        seen = ctl(node, "check")
        if seen[0] == code:
            return seen[1]
        time.sleep(0.3)
    raise AssertionError(f"fabricctl check on {node.name}: wanted exit {code}, last {seen}")


def wait_until(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)


def peer_labels(peer: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return (("address", str(peer["address"])), ("peer", str(peer["name"])))


def test_healthy_agent_exits_0_on_every_view(lab: Lab) -> None:
    h1 = lab.node("h1")
    assert wait_check(h1, 0, timeout=60) == "FABRICD OK - healthy\n"
    for view in (["status"], ["status", "--json"], ["peers"], ["peers", "--json"], ["routes", "--json"]):
        code, out, err = ctl(h1, *view)
        assert code == 0, (view, err)
    code, out, _ = ctl(h1, "peers", "--json")
    peers = json.loads(out)
    assert {p["name"]: p["state"] for p in peers["bgp_peers"]} == {
        "r1": "established",
        "r1-v6": "established",
    }
    assert [(p["name"], p["state"]) for p in peers["overlay_peers"] if p["name"] == "h2"] == [("h2", "up")]
    assert peers["health"] == {"code": 0, "state": "healthy", "reasons": []}
    text = ctl(h1, "peers")[1]
    assert "r1-v6" in text and "OVERLAY PEER" in text


def test_metrics_match_status_on_both_hosts(lab: Lab) -> None:
    for host, url in (("h1", H1_METRICS), ("h2", H2_METRICS)):
        node = lab.node(host)
        wait_check(node, 0, timeout=60)
        before = status(node)
        samples = scrape(lab, url)
        after = status(node)
        assert samples["fabricd_info"] == {(("host", host), ("version", before["host"]["version"])): 1.0}
        assert samples["fabricd_health_status"] == {(): 0.0}
        for peer in after["bgp_peers"]:
            labels = peer_labels(peer)
            assert samples["fabricd_bgp_session_up"][labels] == 1.0
            assert samples["fabricd_bgp_session_state"][labels] == 2.0
            assert samples["fabricd_bgp_session_flaps_total"][labels] == peer["flaps"]
            assert samples["fabricd_bgp_prefixes_sent"][labels] == peer["prefixes_sent"]
        assert sum(samples.get("fabricd_routes", {}).values()) == len(after["routes"])
        assert samples["fabricd_overlay_peers_flooded"] == {(): float(len(after["overlay"]["flood"]))}
        passes = samples["fabricd_reconcile_passes_total"][()]
        assert before["reconcile"]["passes"] <= passes <= after["reconcile"]["passes"]
        # Every finished pass is in the histogram, up to the one the served snapshot was built after.
        assert samples["fabricd_reconcile_pass_seconds_count"][()] >= passes
        assert samples["fabricd_exabgp_restarts_total"] == {(): 0.0}
        assert samples["fabricd_lxd_connected"] == {(): 1.0}


def test_a_refused_route_degrades_and_metrics_say_why(lab: Lab) -> None:
    h1 = lab.node("h1")
    h1.run(["lxc", "init", "busybox", INSTANCE])
    # One prefix in routes.allowed_ranges, one outside them: the second is refused.
    routes = "ipv4.routes.external=10.201.7.0/24,10.77.0.0/24"
    h1.run(["lxc", "config", "device", "override", INSTANCE, "eth0", routes])
    h1.run(["lxc", "start", INSTANCE])
    try:
        line = wait_check(h1, 3, timeout=60)
        assert "1 route(s) refused: 10.77.0.0/24" in line and "outside the allowed ranges" in line
        rows = {r["prefix"]: r for r in status(h1)["routes"]}
        wait_until(lambda: {r["prefix"]: r["state"] for r in status(h1)["routes"]}.get("10.201.7.0/24")
                   == "announced")  # fmt: skip
        samples = scrape(lab, H1_METRICS)
        assert samples["fabricd_health_status"] == {(): 3.0}
        assert samples["fabricd_routes"][(("reason", "outside_allowed_ranges"), ("state", "refused"))] == 1.0
        assert samples["fabricd_routes"][(("reason", "none"), ("state", "announced"))] >= 1.0
        assert rows["10.77.0.0/24"]["state"] == "refused"
        # The instance's start and its route came from LXD events: their wait for a pass is measured.
        assert samples["fabricd_lxd_event_to_pass_seconds_count"][()] >= 1.0
        code, out, _ = ctl(h1, "status", "--json")
        assert code == 3 and json.loads(out)["health"]["state"] == "degraded"
    finally:
        h1.run(["lxc", "delete", "--force", INSTANCE], check=False, timeout=60)
    assert wait_check(h1, 0, timeout=60) == "FABRICD OK - healthy\n"


def test_a_bgp_peer_shut_down_on_r1_degrades_then_recovers(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_check(h1, 0, timeout=60)
    flaps = {p["name"]: p["flaps"] for p in status(h1)["bgp_peers"]}
    bgp = ["vtysh", "-c", "configure terminal", "-c", "router bgp 65000"]
    r1.run([*bgp, "-c", "neighbor HOSTS shutdown"])  # the IPv4 sessions only
    shut = time.monotonic()
    try:
        line = wait_check(h1, 3, timeout=30)
        print(f"\nr1 shut the IPv4 session: fabricctl check exits 3 after {time.monotonic() - shut:.1f} s")
        assert "bgp peer r1 (10.99.1.1) is" in line and "r1-v6" not in line
        samples = scrape(lab, H1_METRICS)
        peers = {p["name"]: p for p in status(h1)["bgp_peers"]}
        assert samples["fabricd_bgp_session_up"][peer_labels(peers["r1"])] == 0.0
        assert samples["fabricd_bgp_session_up"][peer_labels(peers["r1-v6"])] == 1.0
        assert samples["fabricd_health_status"] == {(): 3.0}
        assert ctl(h1, "peers")[0] == 3
    finally:
        r1.run([*bgp, "-c", "no neighbor HOSTS shutdown"])
    opened = time.monotonic()
    wait_check(h1, 0, timeout=60)
    print(f"session allowed again: fabricctl check exits 0 after {time.monotonic() - opened:.1f} s")
    peers = {p["name"]: p for p in status(h1)["bgp_peers"]}
    assert peers["r1"]["flaps"] == flaps["r1"] + 1 and peers["r1-v6"]["flaps"] == flaps["r1-v6"]
    samples = scrape(lab, H1_METRICS)
    assert samples["fabricd_bgp_session_flaps_total"][peer_labels(peers["r1"])] == flaps["r1"] + 1


def test_agent_does_its_work_with_only_the_units_capabilities(lab: Lab) -> None:
    """fabricd restarted as the unit runs it (root, bounding set, no_new_privs): sessions, overlay,
    nftables and a route to r1 all still work. (The unit's other limits need systemd itself.)"""
    h1 = lab.node("h1")
    pid = restart_as_the_unit(lab, "h1")
    assert wait_check(h1, 0, timeout=60) == "FABRICD OK - healthy\n"
    assert "fabricd" in Path(f"/proc/{pid}/cmdline").read_text()
    found = capabilities_of(pid)
    assert found["CapEff"] == found["CapBnd"] and bin(found["CapBnd"]).count("1") == len(unit_capabilities())
    assert found["NoNewPrivs"] == 1
    overlay = status(h1)["overlay"]
    assert overlay["state"] == "up" and not (overlay.get("firewall") or {}).get("error")
    h1.run(["lxc", "init", "busybox", INSTANCE])
    h1.run(["lxc", "config", "device", "override", INSTANCE, "eth0", "ipv4.routes.external=10.201.8.0/24"])
    h1.run(["lxc", "start", INSTANCE])
    try:
        wait_for(lab.node("r1").netns_name, "10.201.8.0/24", {"10.99.1.11"}, timeout=30)
    finally:
        h1.run(["lxc", "delete", "--force", INSTANCE], check=False, timeout=60)
    wait_for(lab.node("r1").netns_name, "10.201.8.0/24", None, timeout=30)


def test_stopped_agent_exits_1_and_metrics_go_away(lab: Lab) -> None:
    h1 = lab.node("h1")
    stop_agent(lab, "h1")
    try:
        for view in (["check"], ["status", "--json"], ["peers"]):
            code, out, err = ctl(h1, *view)
            assert (code, out) == (1, ""), view
            assert err.startswith("fabricctl: ") and err.count("\n") == 1, err
        gone = lab.node("r1").run([sys.executable, "-c", SCRAPE, H1_METRICS], check=False, timeout=30)
        assert gone.returncode != 0 and "Connection refused" in gone.stderr
    finally:
        start_agent(lab, "h1", timeout=40)
    assert wait_check(h1, 0, timeout=60) == "FABRICD OK - healthy\n"
