"""Config reload on SIGHUP, end to end on labs/basic.clab.yml: real FRR, ExaBGP, LXD and fabricd.

h1's fabricd runs a config of this test's own, first with the IPv4 session to r1 only and a
narrower route policy. r1's kernel table and its BGP neighbor counters are the judges: a reload
that adds the IPv6 peer and widens the policy must show up there, while the IPv4 session, which
did not change, must neither drop nor restart.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric_lab.fib import routes_to, wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.reload_lab import (
    H1_V4,
    H1_V6,
    config_text,
    eventually,
    flood,
    run_agent_on,
    session,
    status,
)
from fabric_lab.reload_lab import reload as send_and_wait
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, agent_pid, fresh_lab, stop_agent

pytestmark = pytest.mark.lab

INSTANCE = "trl-web1"
V4_ROUTE, V6_ROUTE = "10.202.1.0/24", "fd00:201:1::/64"
BEFORE = config_text(v6_peer=False, ranges=("10.201.0.0/16", "fd00:201::/32"))
AFTER = config_text(v6_peer=True, ranges=("10.201.0.0/16", "10.202.0.0/16", "fd00:201::/32"))


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "basic.clab.yml", "trl", state_root) as lab:
        yield lab


@pytest.fixture(scope="module")
def config_file(lab: Lab) -> Path:
    """h1's fabricd restarted on this test's config file (the lab records its pid for teardown)."""
    file = lab.state_dir / "trl-h1-fabricd.yaml"
    file.write_text(BEFORE)
    stop_agent(lab, "h1")
    run_agent_on(lab, "h1", file)
    return file


@pytest.fixture(scope="module")
def instance(lab: Lab, config_file: Path) -> Iterator[str]:
    """An instance asking for a route outside the first policy, and an IPv6 one (no IPv6 peer yet)."""
    h1 = lab.node("h1")
    h1.run(["lxc", "init", "busybox", INSTANCE])
    h1.run(
        [
            "lxc", "config", "device", "override", INSTANCE, "eth0",
            f"ipv4.routes.external={V4_ROUTE}", f"ipv6.routes.external={V6_ROUTE}",
        ]
    )  # fmt: skip
    h1.run(["lxc", "start", INSTANCE])
    try:
        yield INSTANCE
    finally:
        h1.run(["lxc", "delete", "--force", INSTANCE], check=False, timeout=60)


def reload(lab: Lab, node: NodeRuntime, text: str) -> dict[str, Any]:
    """Write the file, SIGHUP fabricd, and return its status once the reload's result is in it."""
    return send_and_wait(node, agent_pid(lab, "h1"), lab.state_dir / "trl-h1-fabricd.yaml", text)


def test_a_valid_reload_adds_a_peer_and_widens_the_policy_without_resetting_the_session(
    lab: Lab, config_file: Path, instance: str
) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    eventually(
        lambda: any(r["prefix"] == V4_ROUTE and r["state"] == "refused" for r in status(h1)["routes"]),
        30,
        f"{V4_ROUTE} refused by the first policy",
    )
    assert routes_to(r1.netns_name, V4_ROUTE) == set()
    assert routes_to(r1.netns_name, V6_ROUTE) == set()
    assert session(r1, H1_V6)["state"] != "Established"
    # FRR counts uptime in whole seconds: an uptime of 2 s or more that went on proves no restart.
    eventually(lambda: session(r1, H1_V4)["up_ms"] >= 2000, 10, "two seconds of IPv4 session")
    v4_before = session(r1, H1_V4)
    since = status(h1)["bgp_peers"][0]["since"]

    started = time.monotonic()
    after = reload(lab, h1, AFTER)
    last = after["config"]["last_reload"]
    assert last["outcome"] == "applied", last
    assert set(last["changed"]) == {"bgp.peers", "routes.allowed_ranges"}
    v4_took = wait_for(r1.netns_name, V4_ROUTE, {H1_V4}, timeout=20)
    v6_took = wait_for(r1.netns_name, V6_ROUTE, {H1_V6}, timeout=30)
    total = time.monotonic() - started
    print(f"\nreload → r1: policy route {v4_took:.2f}s, new peer's route {v6_took:.2f}s, total {total:.2f}s")

    v4_after = session(r1, H1_V4)
    assert v4_after["state"] == "Established"
    assert (v4_after["established"], v4_after["dropped"]) == (v4_before["established"], v4_before["dropped"])
    assert v4_after["up_ms"] >= v4_before["up_ms"] >= 2000
    print(f"IPv4 session at r1: {v4_before} before, {v4_after} after")
    assert session(r1, H1_V6)["state"] == "Established"
    peers = {p["name"]: p for p in status(h1)["bgp_peers"]}
    assert peers["r1"]["since"] == since and peers["r1-v6"]["state"] == "established"
    events = json.loads(h1.fabricctl("events", "--json").stdout)["events"]
    reloads = [e for e in events if e["event"] == "config.reload"]
    assert reloads and reloads[-1]["outcome"] == "applied", reloads


def test_an_invalid_file_keeps_the_running_config_and_says_why(
    lab: Lab, config_file: Path, instance: str
) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    v4_before = session(r1, H1_V4)
    seen = reload(lab, h1, config_text(v6_peer=False, ranges=("10.201.0.0/16",), hold_time=1))
    last = seen["config"]["last_reload"]
    assert last["outcome"] == "invalid"
    assert last["problems"] == [f"{config_file}:6: bgp.hold_time: expected 0 or an integer 3..65535, got 1"]
    assert any(p.startswith("config reload invalid, the running config stays") for p in seen["problems"])
    assert "NOT APPLIED" in h1.fabricctl("status").stdout
    log = Path(h1.log_file("fabricd")).read_text()
    assert "config reload: invalid config" in log and "bgp.hold_time" in log
    time.sleep(2.0)  # long enough for a wrongly applied config to reach r1
    assert routes_to(r1.netns_name, V4_ROUTE) == {H1_V4}
    assert routes_to(r1.netns_name, V6_ROUTE) == {H1_V6}
    assert session(r1, H1_V4)["established"] == v4_before["established"]
    assert session(r1, H1_V6)["state"] == "Established"


def test_a_restart_only_key_is_refused_by_name_until_a_good_reload(
    lab: Lab, config_file: Path, instance: str
) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    seen = reload(lab, h1, config_text(v6_peer=True, ranges=("10.201.0.0/16",), vni=101))
    last = seen["config"]["last_reload"]
    assert last["outcome"] == "refused"
    assert last["reason"] == "changing overlay.vni needs a restart"
    assert any("changing overlay.vni needs a restart" in p for p in seen["problems"])
    assert seen["overlay"]["vni"] == 100
    time.sleep(1.0)
    assert routes_to(r1.netns_name, V4_ROUTE) == {H1_V4}  # the policy change that came with it waits too

    # Back to the running config: nothing to change, and the problem is gone.
    seen = reload(lab, h1, AFTER)
    assert seen["config"]["last_reload"]["outcome"] == "unchanged"
    assert not any("config reload" in p for p in seen["problems"])


def test_a_changed_peer_restarts_only_its_own_session(lab: Lab, config_file: Path, instance: str) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    eventually(lambda: session(r1, H1_V6)["up_ms"] >= 2000, 10, "two seconds of IPv6 session")
    v4_before, v6_before = session(r1, H1_V4), session(r1, H1_V6)
    since = {p["name"]: p["since"] for p in status(h1)["bgp_peers"]}
    text = config_text(
        v6_peer=True, ranges=("10.201.0.0/16", "10.202.0.0/16", "fd00:201::/32"), v6_hold_time=6
    )
    seen = reload(lab, h1, text)
    assert seen["config"]["last_reload"]["outcome"] == "applied"
    # r1 forgets a listen-range neighbor when its session drops, so its counters start over: the
    # restart shows as a younger session, and as a new 'since' in fabricd's status.
    eventually(
        lambda: (
            session(r1, H1_V6)["state"] == "Established" and session(r1, H1_V6)["up_ms"] < v6_before["up_ms"]
        ),
        20,
        "a new IPv6 session",
    )
    wait_for(r1.netns_name, V6_ROUTE, {H1_V6}, timeout=15)
    exabgp_conf = h1.run(["cat", "/run/fabricd/bgp/exabgp.conf"]).stdout  # what ExaBGP re-read
    v6_block = exabgp_conf.split("neighbor fd00:99:1::1 {", 1)[1].split("}", 1)[0]
    assert "hold-time 6;" in v6_block and "hold-time 3;" in exabgp_conf.split("neighbor 10.99.1.1 {", 1)[1]
    now = {p["name"]: p["since"] for p in status(h1)["bgp_peers"]}
    assert now["r1"] == since["r1"] and now["r1-v6"] > since["r1-v6"]
    v4_after = session(r1, H1_V4)
    assert (v4_after["established"], v4_after["dropped"]) == (v4_before["established"], v4_before["dropped"])
    assert v4_after["up_ms"] >= v4_before["up_ms"]
    assert routes_to(r1.netns_name, V4_ROUTE) == {H1_V4}


def test_removing_a_peer_ends_only_its_session(lab: Lab, config_file: Path, instance: str) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    v4_before = session(r1, H1_V4)
    text = config_text(v6_peer=False, ranges=("10.201.0.0/16", "10.202.0.0/16", "fd00:201::/32"))
    seen = reload(lab, h1, text)
    assert seen["config"]["last_reload"]["outcome"] == "applied"
    wait_for(r1.netns_name, V6_ROUTE, None, timeout=15)
    assert [p["name"] for p in status(h1)["bgp_peers"]] == ["r1"]
    time.sleep(1.0)
    assert routes_to(r1.netns_name, V4_ROUTE) == {H1_V4}
    v4_after = session(r1, H1_V4)
    assert (v4_after["established"], v4_after["dropped"]) == (v4_before["established"], v4_before["dropped"])


def test_static_overlay_peers_follow_a_reload(lab: Lab, config_file: Path, instance: str) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    ranges = ("10.201.0.0/16", "10.202.0.0/16", "fd00:201::/32")
    eventually(lambda: flood(h1) == {"10.99.2.12"}, 15, "the flood list of the running config")
    v4_before = session(r1, H1_V4)
    seen = reload(lab, h1, config_text(v6_peer=False, ranges=ranges, h3=True))
    assert seen["config"]["last_reload"]["changed"] == ["overlay.peers"]
    eventually(lambda: flood(h1) == {"10.99.2.12", "10.99.3.13"}, 10, "h3 in the kernel's flood list")
    assert "h3" in {p["name"] for p in status(h1)["overlay_peers"]}
    seen = reload(lab, h1, config_text(v6_peer=False, ranges=ranges))
    assert seen["config"]["last_reload"]["outcome"] == "applied"
    eventually(lambda: flood(h1) == {"10.99.2.12"}, 10, "h3 out of the kernel's flood list")
    v4_after = session(r1, H1_V4)
    assert (v4_after["established"], v4_after["dropped"]) == (v4_before["established"], v4_before["dropped"])


BURST = [f"10.201.{128 + i // 256}.{i % 256}/32" for i in range(4000)]


def test_a_reload_during_a_burst_of_announcements_still_takes_effect(lab: Lab, config_file: Path) -> None:
    """ExaBGP 5.0.15 drops a SIGUSR1 while it still has updates queued; fabricd signals again."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    ranges = ("10.201.0.0/16", "10.202.0.0/16", "fd00:201::/32")
    seen = reload(lab, h1, config_text(v6_peer=False, ranges=ranges))  # the IPv4 peer only
    assert seen["config"]["last_reload"]["ok"]
    eventually(lambda: session(r1, H1_V6)["state"] == "absent", 15, "no IPv6 session")
    log_file = Path(h1.log_file("fabricd"))
    retries_before = log_file.read_text().count("signalling it again")
    h1.run(["lxc", "launch", "busybox", "trl-burst"], timeout=120)
    try:
        h1.run(["lxc", "config", "set", "trl-burst", "user.fabric.routes", ",".join(BURST)])
        wait_for(r1.netns_name, BURST[0], {H1_V4}, timeout=30)  # ExaBGP is sending the burst now
        started = time.monotonic()
        Path(lab.state_dir / "trl-h1-fabricd.yaml").write_text(config_text(v6_peer=True, ranges=ranges))
        os.kill(agent_pid(lab, "h1"), signal.SIGHUP)
        eventually(lambda: session(r1, H1_V6)["state"] == "Established", 40, "the IPv6 session")
        took = time.monotonic() - started
        wait_for(r1.netns_name, BURST[-1], {H1_V4}, timeout=30)
        retries = log_file.read_text().count("signalling it again") - retries_before
        print(
            f"\nreload in a 4000-route burst: IPv6 session up after {took:.2f}s, {retries} repeated SIGUSR1"
        )
        assert status(h1)["config"]["last_reload"]["outcome"] == "applied"
    finally:
        h1.run(["lxc", "delete", "--force", "trl-burst"], check=False, timeout=60)
