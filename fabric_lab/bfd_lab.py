"""labs/bfd.clab.yml seen from outside: both sides' BFD, r1's BGP routes, and a link cut at r1.

Shared by the BFD lab test and `python -m bench.bfd`. h1 runs BFD (100 ms x 3) on its IPv4 and IPv6
sessions with r1; h2 runs none. A cut drops every packet on r1's host-facing interfaces with
nftables in r1's namespace only (the links stay up, so nothing but BFD or the hold time can tell);
r1's kernel table, polled every 5 ms, is the judge.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from ipaddress import ip_network
from typing import Any

from pyroute2 import NetNS

from fabric_lab.fib import wait_for
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab

H1_V4, H1_V6, H2_V4, H2_V6 = "10.99.1.11", "fd00:99:1::11", "10.99.2.12", "fd00:99:2::12"
H1_ROUTES = {"10.201.1.0/24": H1_V4, "fd00:201:1::/64": H1_V6}
H2_ROUTES = {"10.201.2.0/24": H2_V4, "fd00:201:2::/64": H2_V6}
HOST_LINKS = ("eth1", "eth2")  # r1's interfaces towards h1 and h2
RTPROT_BGP = 186
POLL_S = 0.005


def launch(node: NodeRuntime, name: str, v4: str, v6: str) -> None:
    """A busybox instance whose NIC asks for one IPv4 and one IPv6 route."""
    node.run(["lxc", "init", "busybox", name])
    override = ["lxc", "config", "device", "override", name, "eth0"]
    node.run([*override, f"ipv4.routes.external={v4}", f"ipv6.routes.external={v6}"])
    node.run(["lxc", "start", name])


def launch_both(lab: Lab, prefix: str) -> None:
    """One instance on each host announcing that host's routes (H1_ROUTES, H2_ROUTES)."""
    launch(lab.node("h1"), f"{prefix}-w1", "10.201.1.0/24", "fd00:201:1::/64")
    launch(lab.node("h2"), f"{prefix}-w2", "10.201.2.0/24", "fd00:201:2::/64")


def status(node: NodeRuntime) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(node.fabricctl("status", "--json").stdout)
    return result


def diagnose(lab: Lab) -> str:
    """Both sides' view of BFD, for a failure message."""
    r1 = lab.node("r1").run(["vtysh", "-c", "show bfd peers"], check=False).stdout
    bird = ["birdc", "-s", "/run/fabricd/bfd/bird.ctl", "show", "bfd", "sessions"]
    h1 = lab.node("h1").run(bird, check=False)
    bgp = lab.node("r1").run(["vtysh", "-c", "show bgp summary"], check=False).stdout
    return f"\n--- r1 show bfd peers\n{r1}\n--- h1 birdc\n{h1.stdout}{h1.stderr}\n--- r1 bgp\n{bgp}"


def wait_status(
    node: NodeRuntime,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 30,
    lab: Lab | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(node)
        if check(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not within {timeout:g}s; {current}" + (diagnose(lab) if lab else "")
            )
        time.sleep(0.2)


def bfd_states(current: dict[str, Any]) -> dict[str, str]:
    return {s["address"]: s["state"] for s in current["bfd_sessions"]}


def router_bfd(r1: NodeRuntime) -> dict[str, dict[str, Any]]:
    peers = json.loads(r1.run(["vtysh", "-c", "show bfd peers json"]).stdout or "[]")
    return {p["peer"]: p for p in peers}


def router_bgp_follows_bfd(r1: NodeRuntime) -> dict[str, str | None]:
    """bgpd's own view of each h1 session's BFD: Up only when the BGP session is tied to it."""
    found: dict[str, str | None] = {}
    for peer in (H1_V4, H1_V6):
        neighbor = json.loads(r1.run(["vtysh", "-c", f"show bgp neighbors {peer} json"]).stdout or "{}")
        found[peer] = (neighbor.get(peer, {}).get("peerBfdInfo") or {}).get("status")
    return found


def bgp_up(current: dict[str, Any]) -> bool:
    return [p["state"] for p in current["bgp_peers"]] == ["established", "established"]


def wait_all_up(lab: Lab, timeout: float = 30) -> None:
    """h1's BGP and BFD up on both sides, r1's sessions tied to BFD, every host route at r1."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_status(
        h1,
        lambda s: bgp_up(s) and set(bfd_states(s).values()) == {"Up"},
        "h1 BGP and BFD up",
        timeout,
        lab=lab,
    )
    deadline = time.monotonic() + 20
    while {p: router_bfd(r1).get(p, {}).get("status") for p in (H1_V4, H1_V6)} != {H1_V4: "up", H1_V6: "up"}:
        if time.monotonic() > deadline:
            raise AssertionError(f"r1's BFD sessions with h1 not up: {router_bfd(r1)}")
        time.sleep(0.2)
    while router_bgp_follows_bfd(r1) != {H1_V4: "Up", H1_V6: "Up"}:
        if time.monotonic() > deadline:
            raise AssertionError(f"r1's BGP sessions not tied to BFD: {router_bgp_follows_bfd(r1)}")
        time.sleep(0.2)
    for prefix, hop in {**H1_ROUTES, **H2_ROUTES}.items():
        wait_for(r1.netns_name, prefix, {hop}, timeout=timeout)


def bgp_prefixes(ns: NetNS) -> set[str]:
    """The prefixes BGP installed in the namespace's main table."""
    found = set()
    for family in (2, 10):
        for route in ns.get_routes(family=family, table=254):
            if route["proto"] == RTPROT_BGP:
                found.add(str(ip_network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")))
    return found


def cut_ruleset(table: str, interfaces: Collection[str] = HOST_LINKS) -> str:
    names = ", ".join(f'"{name}"' for name in interfaces)
    return (
        f"table inet {table} {{\n"
        f"    chain pre {{ type filter hook prerouting priority -400; iifname {{ {names} }} drop; }}\n"
        f"    chain out {{ type filter hook output priority -400; oifname {{ {names} }} drop; }}\n"
        "}\n"
    )


@contextmanager
def links_cut(r1: NodeRuntime, table: str, interfaces: Collection[str] = HOST_LINKS) -> Iterator[float]:
    """r1's host-facing links cut for the block; yields the monotonic time taken just before the cut.
    The table goes again however the block ends."""
    cut_at = time.monotonic()
    r1.run(["nft", "-f", "-"], input_text=cut_ruleset(table, interfaces))
    try:
        yield cut_at
    finally:
        r1.run(["nft", "delete", "table", "inet", table], check=False)


def gone_after(ns: NetNS, watched: Collection[str], since: float, limit: float) -> dict[str, float]:
    """Seconds from `since` until each watched prefix left BGP's routes in `ns`, polled every 5 ms
    for at most `limit` seconds; a prefix that never left is missing from the answer."""
    gone: dict[str, float] = {}
    while len(gone) < len(watched) and time.monotonic() - since < limit:
        present = bgp_prefixes(ns)
        now = time.monotonic() - since
        for prefix in watched:
            if prefix not in present and prefix not in gone:
                gone[prefix] = now
        time.sleep(POLL_S)
    return gone


def kill_and_watch(
    ns: NetNS, pid: int, prefix: str, back_within: float = 30
) -> tuple[float | None, float | None]:
    """SIGKILL `pid` (h1's BIRD) and watch `prefix` in BGP's routes in `ns` every 5 ms: seconds until
    it left and until it was back. It is watched for 2 s if it never leaves (BFD would have dropped
    it by then) and for `back_within` s once it left; (None, None): it stayed, (t, None): not back."""
    gone_at: float | None = None
    back_at: float | None = None
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while back_at is None and time.monotonic() - killed < (back_within if gone_at is not None else 2):
        present = prefix in bgp_prefixes(ns)
        if not present and gone_at is None:
            gone_at = time.monotonic() - killed
        if present and gone_at is not None:
            back_at = time.monotonic() - killed
        time.sleep(POLL_S)
    return gone_at, back_at
