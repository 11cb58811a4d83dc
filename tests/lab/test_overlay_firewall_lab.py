"""The VXLAN firewall on a real data path: two namespaces joined by a veth, real UDP datagrams.

A (10.77.0.1, fd77::1) runs the firewall and listens; B sends from a peer address (10.77.0.2,
fd77::2) and from a rogue one (10.77.0.3, fd77::3) on the same link. Everything happens in
namespaces made here: the machine's own namespace and ruleset are never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2 import NetNS

from fabric_lab import netns
from fabricd.config.model import IPAddress
from fabricd.overlay.firewall import OverlayFirewall, render_peer_update, render_remove, render_ruleset

pytestmark = pytest.mark.lab

PORT = 4789
OTHER_PORT = 4790  # not VXLAN: the firewall must leave it alone
A4, PEER4, ROGUE4 = IPv4Address("10.77.0.1"), IPv4Address("10.77.0.2"), IPv4Address("10.77.0.3")
A6, PEER6, ROGUE6 = IPv6Address("fd77::1"), IPv6Address("fd77::2"), IPv6Address("fd77::3")
IFA_F_NODAD = 0x02  # usable at once: a tentative address cannot be bound
WAIT = 10.0

LISTEN = """
import select, socket, sys
log, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
socks = []
for port in ports:
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.bind(("0.0.0.0", port))
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s6.bind(("::", port))
    socks += [s4, s6]
with open(log, "a", buffering=1) as out:
    out.write("ready\\n")
    while True:
        for s in select.select(socks, [], [])[0]:
            data, addr = s.recvfrom(2048)
            out.write(f"{s.getsockname()[1]} {addr[0]} {data.decode()}\\n")
"""

SEND = """
import socket, sys
src, dst, port, token = sys.argv[1:5]
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as s:
    s.bind((src, 0))
    s.sendto(token.encode(), (dst, int(port)))
"""


@dataclass(frozen=True, slots=True)
class Link:
    a: str
    b: str
    log: Path


def in_ns(
    ns: str, *argv: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *argv]
    done = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{full} failed: {done.stderr}")
    return done


def nft_json(ns: str, *args: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(in_ns(ns, "nft", "-j", *args).stdout)["nftables"]
    return items


def handles(ns: str) -> tuple[int, int, tuple[int, ...]]:
    """(table, chain, rules) handles of our table: a rebuild gives the table a new one."""
    listed = nft_json(ns, "list", "table", "inet", "fabricd_overlay")
    (table,) = [i["table"]["handle"] for i in listed if "table" in i]
    (chain,) = [i["chain"]["handle"] for i in listed if "chain" in i]
    rules = tuple(i["rule"]["handle"] for i in listed if "rule" in i)
    return table, chain, rules


def add_addresses(ns: str, ifname: str, *cidrs: str) -> None:
    with NetNS(ns) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        for cidr in cidrs:
            iface = ip_interface(cidr)
            family = 2 if iface.version == 4 else 10
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                     family=family, flags=IFA_F_NODAD)  # fmt: skip


def cleanup(names: Sequence[str], pids: Sequence[int] = ()) -> None:
    netns.stop_pids(pids, grace=2.0)
    for name in names:
        netns.stop_pids(netns.pids_in(name), grace=2.0)
        netns.remove(name)


@pytest.fixture
def link(lab_host: None, tmp_path: Path) -> Iterator[Link]:
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    a, b = f"tfw-a-{tag}", f"tfw-b-{tag}"
    log = tmp_path / "received.log"
    pids: list[int] = []
    try:
        netns.create(a)
        netns.create(b)
        netns.add_veth(a, "fwa0", b, "fwb0")
        add_addresses(a, "fwa0", "10.77.0.1/24", "fd77::1/64")
        add_addresses(b, "fwb0", "10.77.0.2/24", "10.77.0.3/24", "fd77::2/64", "fd77::3/64")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", a, sys.executable, "-c", LISTEN, str(log), str(PORT), str(OTHER_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pids.append(listener.pid)
        deadline = time.monotonic() + WAIT
        while not (log.exists() and log.read_text().startswith("ready")):
            assert listener.poll() is None, "listener died"
            assert time.monotonic() < deadline, "listener never became ready"
            time.sleep(0.02)
        yield Link(a, b, log)
    finally:
        cleanup([a, b], pids)
        assert netns.list_with_prefix(f"tfw-a-{tag}") == [] and netns.list_with_prefix(f"tfw-b-{tag}") == []


def received(link: Link) -> set[tuple[int, str, str]]:
    lines = link.log.read_text().splitlines()[1:]
    return {(int(port), src, token) for port, src, token in (line.split() for line in lines)}


def exchange(
    link: Link, fw: OverlayFirewall, through: Sequence[IPAddress], dropped: Sequence[IPAddress],
    port: int = PORT,
) -> None:  # fmt: skip
    """Send one datagram from each source; the `through` ones must arrive, the `dropped` ones must be
    counted by vxlan_dropped, which proves the kernel saw and dropped them (no waiting for an absence)."""
    before = fw.counters().get("vxlan_dropped", 0)
    tokens = {src: f"t{uuid.uuid4().hex[:10]}" for src in (*dropped, *through)}
    for src, token in tokens.items():  # dropped first: when the last passes, the others were handled
        dst = A4 if src.version == 4 else A6
        in_ns(link.b, sys.executable, "-c", SEND, str(src), str(dst), str(port), token)
    want = {(port, str(src), tokens[src]) for src in through}
    deadline = time.monotonic() + WAIT
    while True:
        got = received(link)
        counted = fw.counters().get("vxlan_dropped", 0) - before if dropped else 0
        if want <= got and counted >= len(dropped):
            break
        assert time.monotonic() < deadline, f"want {want} and {len(dropped)} drops; got {got}, {counted}"
        time.sleep(0.05)
    assert counted == len(dropped)
    assert not {t for t in got if t[2] in {tokens[src] for src in dropped}}, "a dropped datagram arrived"


# --- the data path --------------------------------------------------------------------------------


def test_only_peers_get_through_and_a_peer_change_only_refills_the_sets(link: Link) -> None:
    fw = OverlayFirewall(PORT, netns=link.a)
    assert not fw.exists() and fw.counters() == {}
    fw.apply([PEER4])
    assert fw.exists()
    exchange(link, fw, through=[PEER4], dropped=[ROGUE4])
    assert fw.counters() == {"vxlan_accepted": 1, "vxlan_dropped": 1}
    exchange(link, fw, through=[PEER4, ROGUE4], dropped=[], port=OTHER_PORT)  # other ports untouched
    built = handles(link.a)

    fw.apply([ROGUE4])
    exchange(link, fw, through=[ROGUE4], dropped=[PEER4])
    # Same handles and counters that kept counting: the chain was not rebuilt, only the sets refilled.
    assert handles(link.a) == built
    assert fw.counters() == {"vxlan_accepted": 2, "vxlan_dropped": 2}

    fw.apply([ROGUE4])  # unchanged: nothing to do
    assert handles(link.a) == built

    fw.remove()
    assert not fw.exists() and fw.counters() == {}
    assert not [i for i in nft_json(link.a, "list", "tables") if "table" in i]
    exchange(link, fw, through=[PEER4, ROGUE4], dropped=[])
    fw.remove()  # nothing left to remove is fine


def test_ipv6_peers(link: Link) -> None:
    fw = OverlayFirewall(PORT, netns=link.a)
    fw.apply([PEER6])
    exchange(link, fw, through=[PEER6], dropped=[ROGUE6, PEER4])  # the empty v4 set drops all of v4
    fw.apply([ROGUE6, PEER4])
    exchange(link, fw, through=[ROGUE6, PEER4], dropped=[PEER6, ROGUE4])
    fw.apply([])
    exchange(link, fw, through=[], dropped=[PEER6, ROGUE6, PEER4, ROGUE4])
    assert fw.counters()["vxlan_accepted"] == 3
    fw.remove()
    exchange(link, fw, through=[PEER6, ROGUE6], dropped=[])


def test_a_port_change_or_a_deleted_table_rebuilds(link: Link) -> None:
    fw = OverlayFirewall(PORT, netns=link.a)
    fw.apply([PEER4])
    first = handles(link.a)
    other = OverlayFirewall(8472, netns=link.a)  # as after a restart with a new overlay.port
    other.apply([PEER4])
    moved = handles(link.a)
    assert moved[0] != first[0]  # a rebuild makes a new table; the chain handle alone does not tell
    chain = nft_json(link.a, "list", "chain", "inet", "fabricd_overlay", "vxlan_in")
    matches = [e["match"] for i in chain if "rule" in i for e in i["rule"]["expr"] if "match" in e]
    ports = {m["right"] for m in matches if m["left"].get("payload", {}).get("field") == "dport"}
    assert ports == {8472}
    exchange(link, other, through=[PEER4, ROGUE4], dropped=[], port=PORT)  # 4789 no longer filtered

    fw.apply([PEER4])  # the kernel's chain has another port than fw's: rebuild, even with equal peers
    assert handles(link.a)[0] != moved[0]
    exchange(link, fw, through=[PEER4], dropped=[ROGUE4])

    in_ns(link.a, "nft", "delete", "table", "inet", "fabricd_overlay")
    fw.apply([PEER4])
    assert fw.exists()
    exchange(link, fw, through=[PEER4], dropped=[ROGUE4])


def test_other_tables_are_left_alone(link: Link) -> None:
    theirs = (
        "table inet filter {\n\tset peers_v4 { type ipv4_addr; elements = { 192.0.2.1 } }\n"
        "\tchain input { type filter hook input priority 10; policy accept; udp dport 4789 counter; }\n}\n"
        "table ip fabricd_overlay {\n\tchain c { type filter hook input priority 20; policy accept; }\n}\n"
    )
    in_ns(link.a, "nft", "-f", "-", stdin=theirs)

    def ours(item: dict[str, Any]) -> bool:
        obj = next(iter(item.values()))
        return obj.get("family") == "inet" and "fabricd_overlay" in (obj.get("table"), obj.get("name"))

    def others() -> list[dict[str, Any]]:
        return [i for i in nft_json(link.a, "list", "ruleset") if "metainfo" not in i and not ours(i)]

    def their_counter() -> int:
        for item in nft_json(link.a, "list", "table", "inet", "filter"):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
        raise AssertionError("their counter is gone")

    before = others()
    fw = OverlayFirewall(PORT, netns=link.a)
    fw.apply([PEER4])
    fw.apply([ROGUE4])
    # Their accept-only chain runs after ours (priority 10 > filter): it sees what we let through.
    exchange(link, fw, through=[ROGUE4], dropped=[PEER4])
    assert their_counter() == 1
    fw.remove()
    fw.remove()
    after = others()
    for item in before + after:  # counters move with traffic; the rest must be identical
        for expr in item.get("rule", {}).get("expr", []):
            expr.get("counter", {}).update(packets=0, bytes=0)
    assert after == before


# --- nft itself accepts what we render (check mode needs CAP_NET_ADMIN, so it is here) ------------


@pytest.fixture(scope="module")
def scratch(lab_host: None) -> Iterator[str]:
    name = f"tfw-c-{os.getpid()}"
    try:
        netns.create(name)
        yield name
    finally:
        cleanup([name])


def nft_check(ns: str, ruleset: str) -> None:
    done = in_ns(ns, "nft", "-c", "-f", "-", stdin=ruleset, check=False)
    assert done.returncode == 0, f"nft -c refused:\n{ruleset}\n{done.stderr}"


CASES: list[list[IPAddress]] = [
    [],
    [PEER4],
    [PEER6],
    [IPv4Address(0), IPv4Address("255.255.255.255"), IPv4Address("224.0.0.1")],
    [IPv6Address("::"), IPv6Address("::ffff:1.2.3.4"), IPv6Address("fe80::1%eth0"), IPv6Address("ff02::1")],
    [IPv4Address(f"10.{n // 250}.{n % 250}.1") for n in range(600)] + [PEER6],
]


@pytest.mark.parametrize("peers", CASES, ids=["empty", "v4", "v6", "v4-special", "v6-special", "many"])
@pytest.mark.parametrize("port", [1, PORT, 65535])
def test_nft_accepts_the_rendered_ruleset(scratch: str, peers: list[IPAddress], port: int) -> None:
    in_ns(scratch, "nft", "-f", "-", stdin=render_remove())
    nft_check(scratch, render_ruleset(port, peers))  # no table yet
    in_ns(scratch, "nft", "-f", "-", stdin=render_ruleset(port, [PEER4]))
    nft_check(scratch, render_ruleset(port, peers))  # over an existing table
    nft_check(scratch, render_peer_update(peers))
    in_ns(scratch, "nft", "-f", "-", stdin=render_remove())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), max_size=20), st.integers(1, 65535))
def test_nft_accepts_any_rendered_ruleset(scratch: str, peers: list[IPAddress], port: int) -> None:
    nft_check(scratch, render_ruleset(port, peers))


def test_applied_sets_hold_exactly_the_peers(scratch: str) -> None:
    peers: list[IPAddress] = [IPv6Address("::ffff:1.2.3.4"), PEER4, PEER4, ROGUE6, IPv4Address("10.77.0.10")]
    fw = OverlayFirewall(PORT, netns=scratch)
    try:
        fw.apply(peers)
        elems = {
            i["set"]["name"]: i["set"].get("elem", [])
            for i in nft_json(scratch, "list", "table", "inet", "fabricd_overlay") if "set" in i
        }  # fmt: skip
        assert elems == {"peers_v4": ["10.77.0.2", "10.77.0.10"], "peers_v6": ["::ffff:1.2.3.4", "fd77::3"]}
        before = handles(scratch)
        fw.apply(list(reversed(peers)))  # same set in another order: nothing to do
        assert handles(scratch) == before
    finally:
        fw.remove()
