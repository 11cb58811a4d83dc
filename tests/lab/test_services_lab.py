"""Anycast services on labs/services.clab.yml: FRR router r1, LXD host h1 running fabricd.

h1's fabricd serves `web` (10.250.0.80 and fd00:250::80, TCP check on port 8080 every 0.5 s,
rise 2, fall 2, drain_delay 4 s) from the instance tsvc-web1, which carries both addresses on its
loopback and runs busybox httpd. r1's kernel table (proto bgp), r1's BGP table (communities, MED),
h1's kernel (fabricd's route protocol 251) and real HTTP requests from r1 are the judges.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from fabric_lab.fib import routes_to, wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabricd.services.host_routes import RTPROT_FABRICD_SERVICES
from tests.lab.conftest import REPO, fresh_lab, start_agent, stop_agent

pytestmark = pytest.mark.lab

INSTANCE = "tsvc-web1"
V4, V6 = "10.250.0.80", "fd00:250::80"
PREFIXES = {f"{V4}/32": "10.99.1.11", f"{V6}/128": "fd00:99:1::11"}
INTERVAL, FALL, RISE, DRAIN_DELAY = 0.5, 2, 2, 4.0
# A failed backend is out after `fall` failed checks, `interval` apart (the first one comes within
# an interval of the kill), then a reconcile pass, ExaBGP and FRR: measured 0.66 s here; the bound
# leaves a second for a machine loaded by other labs.
WITHDRAW_BOUND = INTERVAL * FALL + 1.0
GRACEFUL_SHUTDOWN = ("graceful-shutdown", "65535:0")
DRAIN_MED = 4294967294


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "services.clab.yml", "tsvc", state_root) as lab:
        h1 = lab.node("h1")
        h1.run(["lxc", "launch", "busybox", INSTANCE])
        script = (
            f"ip addr add {V4}/32 dev lo && ip -6 addr add {V6}/128 dev lo"
            " && mkdir -p /www && echo ok > /www/index.html && touch /www/up"
        )
        h1.run(["lxc", "exec", INSTANCE, "--", "sh", "-c", script])
        start_httpd(h1)
        # The instance's IPv6 default route comes with a later router advertisement than its
        # address: replies over IPv6 need it (the check itself goes over IPv4).
        wait_until(
            lambda: "default" in h1.run(["lxc", "exec", INSTANCE, "--", "ip", "-6", "route"]).stdout,
            "the instance's IPv6 default route",
            30,
        )
        yield lab


def start_httpd(h1: NodeRuntime, instance: str = INSTANCE) -> None:
    h1.run(["lxc", "exec", instance, "--", "httpd", "-p", "8080", "-h", "/www"])


def stop_httpd(h1: NodeRuntime, instance: str = INSTANCE) -> None:
    pids = h1.run(["lxc", "exec", instance, "--", "pidof", "httpd"]).stdout.split()
    assert pids, "httpd is not running in the instance"
    h1.run(["lxc", "exec", instance, "--", "kill", *pids])


def services(node: NodeRuntime) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(node.fabricctl("services", "--json").stdout)
    return reply["services"]


def web(node: NodeRuntime) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in services(node)["services"] if s["name"] == "web")
    return found


def address_states(node: NodeRuntime) -> dict[str, str]:
    return {a["address"]: a["state"] for a in web(node)["addresses"]}


def wait_until(
    check: Callable[[], bool], what: str, timeout: float = 30, detail: Callable[[], Any] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; {detail()}")
        time.sleep(0.1)


def host_routes(h1: NodeRuntime) -> dict[str, set[str]]:
    """fabricd's service routes in h1's kernel: prefix -> gateways."""
    found: dict[str, set[str]] = {}
    with NetNS(h1.netns_name) as ns:
        for family, length in ((2, 32), (10, 128)):
            for route in ns.get_routes(family=family, table=254):
                if route["proto"] != RTPROT_FABRICD_SERVICES:
                    continue
                prefix = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
                hops = {route.get_attr("RTA_GATEWAY")} - {None}
                hops |= {h.get_attr("RTA_GATEWAY") for h in route.get_attr("RTA_MULTIPATH") or []}
                assert route["dst_len"] == length
                found.setdefault(prefix, set()).update(hops)
    return found


def router_path(r1: NodeRuntime, prefix: str) -> dict[str, Any] | None:
    family = "ipv4" if ":" not in prefix else "ipv6"
    reply = json.loads(r1.run(["vtysh", "-c", f"show bgp {family} unicast {prefix} json"]).stdout or "{}")
    paths = reply.get("paths") or []
    return paths[0] if paths else None


def communities(path: dict[str, Any] | None) -> str:
    return "" if path is None else str((path.get("community") or {}).get("string", ""))


def http_from_router(r1: NodeRuntime, address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    argv = ["curl", "-s", "-m", "2", "--noproxy", "*", f"http://{host}:8080/"]
    return r1.run(argv, check=False).stdout.strip()


def metric_samples(h1: NodeRuntime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics endpoint's samples: (name, sorted labels) -> value."""
    text = h1.run(["curl", "-s", "-m", "5", "--noproxy", "*", "http://10.99.1.11:9464/metrics"]).stdout
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or line.startswith("#"):
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")))
        found[(match.group(1), labels)] = float(match.group(3))
    return found


def updates_received(r1: NodeRuntime) -> dict[str, int]:
    """UPDATE messages r1 received from h1, per session."""
    found = {}
    for peer in PREFIXES.values():
        reply = json.loads(r1.run(["vtysh", "-c", f"show bgp neighbors {peer} json"]).stdout or "{}")
        found[peer] = int(reply[peer]["messageStats"]["updatesRecv"])
    return found


def wait_announced(lab: Lab, timeout: float = 60) -> None:
    r1 = lab.node("r1")
    for prefix, hop in PREFIXES.items():
        wait_for(r1.netns_name, prefix, {hop}, timeout=timeout)


def backend_address(h1: NodeRuntime, version: int) -> str:
    (backend,) = web(h1)["backends"]
    return next(a for a in backend["addresses"] if (":" in a) == (version == 6))


def test_exec_check_runs_in_the_instance_through_the_lxd_api(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    probe = "10.250.0.81/32"
    wait_for(r1.netns_name, probe, {"10.99.1.11"}, timeout=60)
    h1.run(["lxc", "exec", INSTANCE, "--", "rm", "/www/up"])
    wait_for(r1.netns_name, probe, None, timeout=5)
    (row,) = [s for s in services(h1)["services"] if s["name"] == "probe"]
    assert row["backends"][0]["last_result"]["reason"] == "test exited with 1", row
    h1.run(["lxc", "exec", INSTANCE, "--", "touch", "/www/up"])
    wait_for(r1.netns_name, probe, {"10.99.1.11"}, timeout=5)


def test_service_is_announced_over_its_host_route_and_serves_traffic(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_announced(lab)
    assert address_states(h1) == {V4: "announced", V6: "announced"}
    (backend,) = web(h1)["backends"]
    assert backend["instance"] == INSTANCE and backend["state"] == "up" and backend["device"] == "lxdbr0"
    assert backend["last_result"]["ok"] and "connected to" in backend["last_result"]["reason"]
    # The host route to the backend's own address, IPv4 and IPv6, with fabricd's protocol number.
    assert host_routes(h1) == {
        f"{V4}/32": {backend_address(h1, 4)},
        f"{V6}/128": {backend_address(h1, 6)},
        "10.250.0.81/32": {backend_address(h1, 4)},
    }
    for prefix in PREFIXES:
        path = router_path(r1, prefix)
        assert path is not None and path["metric"] == 10 and communities(path) == "65011:80", path
    assert http_from_router(r1, V4) == "ok"
    # IPv6: the check runs over IPv4 (one check per backend), so the IPv6 path can lag the
    # announcement briefly after the instance starts (seen: the first request failing ~1 s after
    # the announcement, in some runs); it must serve within a few seconds.
    started = time.monotonic()
    wait_until(lambda: http_from_router(r1, V6) == "ok", "HTTP over IPv6 from r1", 5)
    print(f"\nfirst IPv6 reply {time.monotonic() - started:.2f} s after the announcement was seen")
    status = json.loads(h1.fabricctl("status", "--json").stdout)
    assert not [p for p in status["problems"] if "service" in p], status["problems"]
    text = h1.fabricctl("services").stdout
    assert "announced" in text and INSTANCE in text
    summary = h1.run(["fabricctl", "status"], check=False).stdout
    assert "web" in summary and V4 in summary  # the services lines in the status summary
    wanted = {
        ("fabricd_service_address_announced", (("address", V4), ("service", "web"), ("state", "announced"))),
        ("fabricd_service_backend_up", (("backend", INSTANCE), ("project", "default"), ("service", "web"))),
    }
    wait_until(
        lambda: all(metric_samples(h1).get(key) == 1.0 for key in wanted),
        "service metrics",
        15,
        lambda: {k: v for k, v in metric_samples(h1).items() if "service" in k[0]},
    )


def test_failed_check_withdraws_within_interval_times_fall_and_recovery_reannounces(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_announced(lab)
    time.sleep(1.0)  # nothing else in flight: every UPDATE counted below is this flap's
    updates = updates_received(r1)
    stop_httpd(h1)
    killed = time.monotonic()
    gone = {prefix: wait_for(r1.netns_name, prefix, None, timeout=15) for prefix in PREFIXES}
    took = time.monotonic() - killed
    print(f"\nbackend failure -> withdrawn at r1: {took:.2f} s (bound {WITHDRAW_BOUND:.2f} s)")
    assert took < WITHDRAW_BOUND, gone
    wait_until(
        lambda: not set(PREFIXES) & set(host_routes(h1)),
        "host routes removed after the withdraw",
        10,
        lambda: host_routes(h1),
    )
    current = web(h1)
    assert {a["state"] for a in current["addresses"]} == {"withdrawn"}
    assert all("no healthy backend here" in a["reason"] for a in current["addresses"]), current
    (backend,) = current["backends"]
    assert backend["state"] == "down" and backend["reason"] == "connection refused", backend
    status = json.loads(h1.fabricctl("status", "--json").stdout)
    assert any("service web" in p and "withdrawn" in p for p in status["problems"]), status["problems"]
    assert h1.run(["fabricctl", "check"], check=False).returncode == 3
    # Back: `rise` passing checks, then route in, then announced.
    start_httpd(h1)
    back = time.monotonic()
    wait_announced(lab, timeout=15)
    print(f"backend recovered -> announced at r1: {time.monotonic() - back:.2f} s")
    assert http_from_router(r1, V4) == "ok"
    time.sleep(1.0)
    # One UPDATE per session for the fall (the withdraw) and one for the recovery (the announce).
    flap = {peer: count - updates[peer] for peer, count in updates_received(r1).items()}
    print(f"UPDATEs received by r1 for one fall and recovery, per session: {flap}")
    assert flap == {"10.99.1.11": 2, "fd00:99:1::11": 2}, flap


def test_drain_shuts_down_gracefully_then_withdraws_and_undrain_returns(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_announced(lab)
    routes_before = host_routes(h1)
    h1.fabricctl("drain", "--service", "web")
    drained_at = time.monotonic()

    def graceful() -> bool:
        paths = [router_path(r1, p) for p in PREFIXES]
        return all(
            p is not None and any(c in communities(p) for c in GRACEFUL_SHUTDOWN) and p["metric"] == DRAIN_MED
            for p in paths
        )

    wait_until(
        graceful,
        "GRACEFUL_SHUTDOWN and the drain MED at r1",
        5,
        lambda: [router_path(r1, p) for p in PREFIXES],
    )
    assert "65011:80" in communities(router_path(r1, f"{V4}/32"))
    assert address_states(h1) == {V4: "draining", V6: "draining"}
    assert web(h1)["backends"][0]["state"] == "drained"
    # Still delivered while draining: traffic moves off, nothing breaks.
    assert http_from_router(r1, V4) == "ok"
    for prefix in PREFIXES:
        wait_for(r1.netns_name, prefix, None, timeout=DRAIN_DELAY + 5)
    withdrawn_after = time.monotonic() - drained_at
    print(f"\ndrain -> withdrawn at r1 after {withdrawn_after:.2f} s (drain_delay {DRAIN_DELAY:g} s)")
    assert withdrawn_after >= DRAIN_DELAY - 0.5
    assert address_states(h1) == {V4: "withdrawn", V6: "withdrawn"}
    assert all("drained" in a["reason"] for a in web(h1)["addresses"])
    assert host_routes(h1) == routes_before  # the host route stays while drained
    h1.fabricctl("undrain", "--service", "web")
    wait_announced(lab, timeout=10)
    wait_until(
        lambda: communities(router_path(r1, f"{V4}/32")) == "65011:80",
        "normal attributes after the undrain",
        5,
    )
    assert router_path(r1, f"{V4}/32")["metric"] == 10  # type: ignore[index]
    assert address_states(h1) == {V4: "announced", V6: "announced"}


def test_host_drain_survives_an_agent_restart(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_announced(lab)
    h1.fabricctl("drain")
    assert services(h1)["drain"]["host"] is not None
    for prefix in PREFIXES:
        wait_for(r1.netns_name, prefix, None, timeout=DRAIN_DELAY + 5)
    stop_agent(lab, "h1")
    start_agent(lab, "h1")
    # Started drained: nothing is announced, and the drain time is the one from before.
    time.sleep(3)
    assert all(not routes_to(r1.netns_name, p) for p in PREFIXES)
    assert services(h1)["drain"]["host"] is not None
    assert {a["state"] for a in web(h1)["addresses"]} == {"withdrawn"}
    h1.fabricctl("undrain")
    wait_announced(lab, timeout=15)


def test_stop_withdraws_then_removes_host_routes_and_a_start_clears_stale_ones(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_announced(lab)
    stopping = time.monotonic()
    stop_agent(lab, "h1")
    stopped = time.monotonic() - stopping
    print(f"\nfabricd stop (SIGTERM to exit): {stopped:.2f} s")
    assert stopped < 4.0  # the withdraw does not wait out its timeout
    # Withdrawn (the UPDATE, then the session's end), and only then the host routes removed.
    for prefix in PREFIXES:
        wait_for(r1.netns_name, prefix, None, timeout=1.0)
    assert host_routes(h1) == {}
    # A route left with fabricd's protocol number by an earlier run goes at the next start.
    proto = str(RTPROT_FABRICD_SERVICES)
    h1.run(["ip", "route", "add", "10.250.9.9/32", "dev", "lxdbr0", "proto", proto])
    assert "10.250.9.9/32" in host_routes(h1)
    start_agent(lab, "h1")
    wait_announced(lab, timeout=30)
    wait_until(
        lambda: "10.250.9.9/32" not in host_routes(h1),
        "stale host route removed",
        15,
        lambda: host_routes(h1),
    )
    assert set(host_routes(h1)) == {*PREFIXES, "10.250.0.81/32"}


def test_two_local_backends_share_the_address_by_ecmp_without_a_withdraw(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    second = "tsvc-web2"
    wait_announced(lab)
    h1.run(["lxc", "launch", "busybox", second])
    try:
        script = (
            f"ip addr add {V4}/32 dev lo && ip -6 addr add {V6}/128 dev lo"
            " && mkdir -p /www && echo two > /www/index.html"
        )
        h1.run(["lxc", "exec", second, "--", "sh", "-c", script])
        start_httpd(h1, second)
        # Both backends healthy: one route per address with two next hops (replaced in place).
        wait_until(
            lambda: all(len(host_routes(h1).get(p, ())) == 2 for p in PREFIXES),
            "ECMP host routes",
            60,
            lambda: (host_routes(h1), web(h1)),
        )
        answers = {http_from_router(r1, V4) for _ in range(20)}
        assert answers <= {"ok", "two"} and answers, answers
        # One of the two fails: the route narrows to the other, and r1 never loses the path.
        stop_httpd(h1, second)
        deadline = time.monotonic() + 10
        while any(len(host_routes(h1).get(p, ())) != 1 for p in PREFIXES):
            assert all(routes_to(r1.netns_name, p) for p in PREFIXES), "withdrawn while a backend was healthy"
            assert time.monotonic() < deadline, host_routes(h1)
            time.sleep(0.05)
        assert all(routes_to(r1.netns_name, p) for p in PREFIXES)
        assert http_from_router(r1, V4) == "ok"
    finally:
        h1.run(["lxc", "delete", "--force", second], check=False)
    wait_until(lambda: len(web(h1)["backends"]) == 1, "the deleted backend gone from the service", 30)


def test_a_service_defined_on_the_instance_is_announced_and_goes_with_its_keys(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    keys = {
        "user.fabric.anycast.tenant.addresses": "10.201.8.8",
        "user.fabric.anycast.tenant.check.type": "tcp",
        "user.fabric.anycast.tenant.check.port": "8080",
    }
    wait_announced(lab)
    h1.run(["lxc", "config", "set", INSTANCE, *(f"{k}={v}" for k, v in keys.items())])
    wait_for(r1.netns_name, "10.201.8.8/32", {"10.99.1.11"}, timeout=30)
    (row,) = [s for s in services(h1)["services"] if s["name"] == "tenant"]
    assert row["source"] == "instances" and row["addresses"][0]["state"] == "announced", row
    # Outside routes.allowed_ranges: refused, with the reason, and never announced.
    h1.run(["lxc", "config", "set", INSTANCE, "user.fabric.anycast.tenant.addresses=10.202.8.8"])
    wait_for(r1.netns_name, "10.201.8.8/32", None, timeout=15)
    wait_until(
        lambda: (
            [a["state"] for s in services(h1)["services"] if s["name"] == "tenant" for a in s["addresses"]]
            == ["refused"]
        ),
        "an instance-defined address outside the allowed ranges refused",
        15,
        lambda: services(h1),
    )
    assert routes_to(r1.netns_name, "10.202.8.8/32") == set()
    for key in keys:
        h1.run(["lxc", "config", "unset", INSTANCE, key])
    wait_until(
        lambda: "tenant" not in {s["name"] for s in services(h1)["services"]},
        "the service gone with its keys",
        15,
    )
    wait_until(
        lambda: not {"10.201.8.8/32", "10.202.8.8/32"} & set(host_routes(h1)), "its host route removed", 15
    )
