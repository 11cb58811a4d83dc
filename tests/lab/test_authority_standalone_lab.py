"""The DHCP/DNS authority among standalone LXD hosts (labs/authority-standalone.clab.yml).

Three hosts s1, s2, s3, each with its own LXD (no cluster, no shared store), one overlay bridge
fabric0 over VXLAN on a routed underlay, `dhcp.election: standalone` with priority s1, s2, s3, a
probe every 4 s and takeover after 2 silent probes plus the rank's share. Real LXD, real dnsmasq,
busybox udhcpc in the instances (`fabric_lab.dhcp_clients`), and an OFFER counter on every host's
bridge for the whole of each test: it records every OFFER there, fabricd's own probes' included,
with the serving host from option 224, so who serves is read off the wire, not only from fabricctl.

Checked: one authority (s1) serves every host and every host agrees; SIGKILL and SIGTERM of the
holder hand over to the next in line while clients keep their addresses, and a returning host stays
standby; a partition gives one server per side and, healed, the worse-ranked one yields within a
probe; a foreign DHCP server is reported on every host and no standby ever answers. Each test leaves
s1 serving and every fabricd running, as the lab starts. Gaps are printed (pytest -s); the time
bounds are safety only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fabric_lab import netns
from fabric_lab.dhcp_clients import (
    DhcpClient,
    DnsWatch,
    LeaseEvent,
    OfferCounter,
    OfferLog,
    add_macvlan,
    longest_silence,
    lxc_exec,
    nslookup,
)
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from fabricd.authority.macs import server_mac
from fabricd.authority.probe import PROBE_TIMEOUT
from fabricd.authority.standalone import busy_probes, rank_probes
from tests.lab.conftest import REPO, agent_pid, fresh_lab, start_agent, stop_agent

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_host")]
_T = TypeVar("_T")

LAB_FILE = REPO / "labs" / "authority-standalone.clab.yml"
HOSTS = ("s1", "s2", "s3")
RANK = {host: rank for rank, host in enumerate(HOSTS)}  # dhcp.priority
PROBE_INTERVAL, SILENT_PROBES = 4.0, 2  # dhcp.probe_interval, dhcp.silent_probes
SERVER, SERVER_MAC = "192.168.101.1", server_mac(101)
DOMAIN, MTU = "fabric.internal", "1450"
POOL = (IPv4Address("192.168.101.100"), IPv4Address("192.168.101.199"))
FLOATING = "fd-fabric0"
# Instance names are unique machine-wide (LXD daemons of all labs share the cgroup tree).
INSTANCES = {"tas1": "s1", "tas2": "s2", "tas3": "s3"}
# A yield or a second server shows within one probe interval plus the probe's listening window;
# the rest is polling (fabricctl starts a Python each time), a safety margin only.
ONE_PROBE = PROBE_INTERVAL + PROBE_TIMEOUT + 2.5
STATUS_LAG = 15.0  # the lab's reconcile interval (5 s) after which the status is rebuilt, and slack
LATE = 4.0  # a DISCOVER's answer may come this late: dnsmasq serves no DHCP during a 3 s ping check
REPINGS = 2 * 3.0  # after the partition, s1 ping-checks the other side's two counters again


def takeover_probes(host: str) -> int:
    """Unanswered probes after which `host` takes over (the elector's rule): silent_probes, at least
    enough to outlast a busy dnsmasq, plus the rank's share (5, 8 and 11 here)."""
    return max(SILENT_PROBES, busy_probes(PROBE_INTERVAL)) + RANK[host] * rank_probes(PROBE_INTERVAL)


def takeover_bound(host: str) -> float:
    """Safety bound for a takeover: its probes, one more for the phase, the window, slack."""
    return (takeover_probes(host) + 1) * PROBE_INTERVAL + PROBE_TIMEOUT + 5.0


# ---- helpers -------------------------------------------------------------------------------------


def wait_until(
    check: Callable[[], _T | None],
    timeout: float = 20.0,
    what: str = "condition",
    show: Callable[[], object] | None = None,
) -> _T:
    """`check()` once truthy; on timeout the message has `show()` (what the state was) too."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f": {show()!r} at {time.time():.3f}" if show is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(0.1)


def status(node: NodeRuntime) -> dict[str, Any]:
    return dict(json.loads(node.run(["fabricctl", "status", "--json"], timeout=20).stdout))


def authority(node: NodeRuntime) -> dict[str, Any]:
    return dict(status(node)["authority"])


def holders(lab: Lab, hosts: tuple[str, ...] = HOSTS) -> dict[str, tuple[str, str | None]]:
    """host → (role, holder), as each host's fabricctl says."""
    found = {}
    for host in hosts:
        section = authority(lab.node(host))
        found[host] = (str(section["role"]), section["holder"])
    return found


def agreed(lab: Lab, holder: str, hosts: tuple[str, ...] = HOSTS) -> bool:
    """`holder` serves and every host in `hosts` names it."""
    return holders(lab, hosts) == {h: ("authority" if h == holder else "standby", holder) for h in hosts}


def role(node: NodeRuntime) -> str:
    return str(authority(node)["role"])


def has_floating(node: NodeRuntime) -> bool:
    return FLOATING in netns.link_names(node.netns_name)


def leases(node: NodeRuntime) -> dict[str, str]:
    """MAC → address in the node's `fabricctl leases` (its own dnsmasq's lease file)."""
    rows = json.loads(node.run(["fabricctl", "leases", "--json"]).stdout)["leases"]
    return {str(row["mac"]): str(row["address"]) for row in rows}


def holds_leases(node: NodeRuntime, clients: dict[str, DhcpClient]) -> None:
    """`node`'s lease table has every client's current address (the status is rebuilt after each
    reconcile pass, so a new lease shows within one reconcile interval)."""
    want = {mac_of(c.node, name): latest_address(c).ip for name, c in clients.items()}
    wait_until(
        lambda: want.items() <= leases(node).items(),
        STATUS_LAG,
        f"{node.name}'s lease table to hold {want}",
        lambda: leases(node),
    )


def log_events(node: NodeRuntime, kind: str) -> list[dict[str, Any]]:
    """fabricd's JSON log lines with this event_kind (every start of fabricd appends to one file)."""
    path = node.log_file("fabricd")
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event_kind") == kind:
                    found.append(entry)
    return found


def kill_agent(lab: Lab, host: str) -> None:
    pid = agent_pid(lab, host)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not netns.alive(pid), 10, f"fabricd on {host} to die")


def mac_of(node: NodeRuntime, name: str) -> str:
    return node.run(["lxc", "config", "get", name, "volatile.eth0.hwaddr"]).stdout.strip().lower()


def in_pool(address: str) -> bool:
    return POOL[0] <= IPv4Address(address) <= POOL[1]


def latest_address(client: DhcpClient) -> LeaseEvent:
    return [e for e in client.events() if e.got_address][-1]


def dns_ok(node: NodeRuntime, instance: str, query: str, expected: set[str]) -> bool:
    """`query` (a name: its A records; an address: its PTR) answers exactly `expected`."""
    reverse = query.replace(".", "").isdigit()
    found = nslookup(node, instance, query, SERVER, kind=None if reverse else "a")
    return found.error is None and set(found.names if reverse else found.addresses) == expected


def renew_all(clients: dict[str, DhcpClient], names: list[str]) -> None:
    """Each client renews (a unicast REQUEST to the server address) and keeps its address."""
    for name in names:
        address = latest_address(clients[name]).ip
        events = clients[name].renew(timeout=30)
        seen = [(e.event, e.ip, e.serverid) for e in events]
        assert seen == [("renew", address, SERVER)], (name, address, seen)  # no NAK, no starting over


# ---- OFFERs on the wire --------------------------------------------------------------------------


def counter_mac(index: int) -> str:
    """The same MACs in every test: each is a new client to a server only once (its ping check)."""
    return f"02:ac:0a:00:00:{index:02x}"


NEWCOMER = "02:ac:0a:00:01:01"  # a client no server has seen


@contextlib.contextmanager
def counting(lab: Lab) -> Iterator[dict[str, OfferCounter]]:
    """An OFFER counter on every host's bridge (its own DISCOVER every 0.5 s, and every OFFER seen),
    each answered at least once before the caller goes on."""
    counters: dict[str, OfferCounter] = {}
    try:
        for index, host in enumerate(HOSTS):
            counters[host] = OfferCounter(lab.node(host), counter_mac(index))
        warm(counters, HOSTS, 0.0)
        yield counters
    finally:
        for counter in counters.values():
            counter.stop()


def warm(counters: dict[str, OfferCounter], hosts: tuple[str, ...], since: float) -> None:
    """Until each counter in `hosts` had a DISCOVER sent after `since` answered: a server answers a
    MAC new to it only after a 3 s ping check, and only one such at a time."""
    for host in hosts:
        wait_until(
            lambda h=host: answered(counters[h].log(), since, float("inf")), 30, f"an answer on {host}"
        )


def answered(log: OfferLog, since: float, until: float) -> dict[int, set[str]]:
    """The counter's own DISCOVERs sent in [since, until) that someone answered, and who."""
    return {xid: hosts for xid, hosts in log.answered_probes(since, until).items() if hosts}


def serving_gap(log: OfferLog, since: float, until: float) -> float:
    """The longest time between two answered DISCOVERs of the counter sent in [since, until)."""
    sent = sorted(log.probes[xid] for xid in answered(log, since, until))
    return max((b - a for a, b in pairwise(sent)), default=0.0)


def hosts_answering(counters: dict[str, OfferCounter], since: float, until: float = float("inf")) -> set[str]:
    """Every serving host that any OFFER seen on any bridge named (fabricd's probes' answers too)."""
    return {o.host for c in counters.values() for o in c.log().offers if since <= o.at < until}


# ---- the lab -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(LAB_FILE, "tas", state_root) as lab:
        started = time.monotonic()
        wait_until(lambda: agreed(lab, "s1"), 60, "s1 to serve and every host to agree")
        print(f"\nlab up → s1 serving and agreed on by all: {time.monotonic() - started:.1f} s")
        for name, host in INSTANCES.items():
            node = lab.node(host)  # each host's own LXD
            node.run(
                ["lxc", "init", "busybox", name, "-p", "default", "-p", "overlay"], input_text="", timeout=120
            )
            node.run(["lxc", "start", name], timeout=60)
        yield lab


@pytest.fixture(scope="module")
def clients(lab: Lab) -> Iterator[dict[str, DhcpClient]]:
    """One recording udhcpc per instance, driven through its own host's LXD."""
    started = {name: DhcpClient(lab.node(host), name) for name, host in INSTANCES.items()}
    for client in started.values():
        client.start()
    for client in started.values():
        client.wait_bound(timeout=30)
    yield started
    for client in started.values():
        client.stop()


@pytest.fixture(autouse=True)
def s1_serves_after(lab: Lab) -> Iterator[None]:
    """Every test leaves the lab as it starts, every fabricd running and s1 serving, even after a
    failure, so one failed test does not fail the next."""
    yield
    heal(lab.node("r1"))
    for host in HOSTS:
        pid = lab.state().nodes[host].agent_pid
        if pid is None or not netns.alive(pid):
            start_agent(lab, host)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: agreed(lab, "s1"), 2 * ONE_PROBE, "s1 to serve")
        return
    for host in ("s2", "s3"):  # a worse-ranked server s1 does not hear: restart it as a standby
        if role(lab.node(host)) == "authority":
            stop_agent(lab, host)
            start_agent(lab, host)
    wait_until(lambda: agreed(lab, "s1"), takeover_bound("s1") + ONE_PROBE, "s1 to serve again")


# ---- 1. one authority ----------------------------------------------------------------------------


def test_one_authority_serves_every_host_and_every_host_agrees(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    # The clients just started are new to dnsmasq: its ping checks can leave a probe or two unanswered,
    # and a standby shows no holder until it hears one again.
    wait_until(lambda: agreed(lab, "s1"), 2 * ONE_PROBE + 20, "every host to name s1")
    for host in HOSTS:
        node = lab.node(host)
        section = authority(node)
        assert (section["mode"], section["host"]) == ("standalone", host)
        assert sorted(section["standbys"]) == ["s2", "s3"]
        assert section["probe"]["answering"] == ["s1"] and section["probe"]["second_servers"] == []
        # Only s1 runs dnsmasq and holds the floating device.
        assert (section["dnsmasq"]["pid"] is not None, has_floating(node)) == (host == "s1",) * 2
        assert not [p for p in status(node)["problems"] if "DHCP" in p], status(node)["problems"]

    # Every instance, on whichever host, has a pool address from the one server (s1 reserves only the
    # names of its own LXD's instances), the overlay MTU, the server as DNS; s1's lease file has them.
    got = {}
    for name, client in clients.items():
        lease = latest_address(client)
        assert in_pool(lease.ip) and client.address() == lease.ip, lease
        assert (lease.serverid, lease.dns, lease.domain, lease.mtu) == (SERVER, SERVER, DOMAIN, MTU), lease
        got[name] = lease.ip
    assert latest_address(clients["tas1"]).hostname == "tas1"
    assert len(set(got.values())) == len(got)
    holds_leases(lab.node("s1"), clients)
    assert leases(lab.node("s2")) == {} and leases(lab.node("s3")) == {}

    # The wire agrees: every DISCOVER of every counter, and every probe of fabricd, answered by s1.
    with counting(lab) as counters:
        since = time.time()
        time.sleep(2 * PROBE_INTERVAL + LATE)
        until = time.time() - LATE
        for host, counter in counters.items():
            per_xid = answered(counter.log(), since, until)
            assert len(per_xid) >= 10 and set(map(frozenset, per_xid.values())) == {frozenset({"s1"})}, host
        assert hosts_answering(counters, since) == {"s1"}
        identities = {(o.mac, o.server_id) for c in counters.values() for o in c.log().offers}
        assert identities == {(SERVER_MAC, SERVER)}  # the floating MAC and address, whoever serves

    # s1's own instance by name, forward (bare and qualified) and reverse, from every instance.
    for client, host in INSTANCES.items():
        node = lab.node(host)
        assert dns_ok(node, client, f"tas1.{DOMAIN}", {got["tas1"]}), client
        assert dns_ok(node, client, "tas1", {got["tas1"]}), client
        assert dns_ok(node, client, got["tas1"], {f"tas1.{DOMAIN}"}), client
    assert nslookup(lab.node("s2"), "tas2", f"tasnobody.{DOMAIN}", SERVER).error == "NXDOMAIN"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="standalone: the authority plans dnsmasq from its own LXD only, so instances on the other "
    "hosts get a dynamic lease without a name (dhcp-ignore-names) and no DNS record",
)
def test_instances_on_the_other_hosts_resolve_while_s1_serves(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    node = lab.node("s1")
    for name in ("tas2", "tas3"):
        address = latest_address(clients[name]).ip
        assert dns_ok(node, "tas1", f"{name}.{DOMAIN}", {address}), name
        assert dns_ok(node, "tas1", address, {f"{name}.{DOMAIN}"}), name


# ---- 2. failover ---------------------------------------------------------------------------------


def test_failover_kill_and_clean_stop_and_a_returning_host_stays_standby(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    s1, s2, s3 = (lab.node(h) for h in HOSTS)
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    dnsmasq = authority(s1)["dnsmasq"]["pid"]
    assert dnsmasq is not None and netns.alive(dnsmasq)
    newcomer = DhcpClient(s3, "tas3", interface="new2")
    watch = DnsWatch(s3, "tas3", SERVER, f"tas3.{DOMAIN}")  # any reply counts, NXDOMAIN too
    try:
        with counting(lab) as counters:
            began = time.time()

            # SIGKILL: nothing of s1's serving outlives fabricd, dnsmasq (parent-death signal) and the
            # floating device (the deadman helper) go at once; s2, next in line, takes over.
            killed = time.time()
            kill_agent(lab, "s1")
            wait_until(lambda: not netns.alive(dnsmasq), 5, "s1's dnsmasq to die with fabricd")
            timings["SIGKILL → s1's dnsmasq gone"] = time.time() - killed
            wait_until(lambda: not has_floating(s1), 5, f"{FLOATING} to go from s1")
            timings[f"SIGKILL → s1's {FLOATING} gone"] = time.time() - killed
            wait_until(lambda: role(s2) == "authority", takeover_bound("s2"), "s2 to take over")
            timings["SIGKILL → s2 serving (status)"] = time.time() - killed
            assert (
                authority(s2)["reason"]
                == f"taking over: no authority answered {takeover_probes('s2')} probes"
            )
            wait_until(lambda: agreed(lab, "s2", ("s2", "s3")), 2 * ONE_PROBE, "s3 to see s2 serve")
            silence = longest_silence(watch.samples(), killed - 1.0)
            timings["SIGKILL: longest DNS silence (tas3)"] = silence[1] - silence[0] if silence else 0.0

            # Clients keep their addresses: the renewal reaches s2 (from tas1 through the flood, as
            # nobody updates the dead host's FDB), and s2's lease file now has them.
            renew_all(clients, list(INSTANCES))
            holds_leases(s2, clients)
            # A client never seen before gets a new address, from s2.
            add_macvlan(s3, "tas3", "new2", NEWCOMER)
            added = time.time()
            newcomer.start()
            fresh = newcomer.wait_bound(timeout=30)
            timings["new client: DISCOVER → bound"] = time.time() - added
            assert in_pool(fresh.ip) and fresh.serverid == SERVER
            assert fresh.ip not in {latest_address(c).ip for c in clients.values()}
            wait_until(
                lambda: leases(s2).get(NEWCOMER) == fresh.ip, STATUS_LAG, "the new lease in s2's table"
            )
            # DNS answers from s2: its own instance, forward and reverse, asked from the other hosts.
            tas2 = latest_address(clients["tas2"]).ip
            for name in ("tas1", "tas3"):
                node = lab.node(INSTANCES[name])
                assert dns_ok(node, name, f"tas2.{DOMAIN}", {tas2}) and dns_ok(
                    node, name, tas2, {f"tas2.{DOMAIN}"}
                )

            # s1 comes back: it hears s2 and stays standby; s2 keeps serving, same dnsmasq, no flapping.
            before = authority(s2)
            takes = len(log_events(s1, "authority.take"))
            start_agent(lab, "s1")
            back = time.time()
            wait_until(lambda: agreed(lab, "s2"), 2 * ONE_PROBE, "s1 to see s2 serve")
            time.sleep(4 * PROBE_INTERVAL)
            assert agreed(lab, "s2") and not has_floating(s1)
            after = authority(s2)
            assert (after["dnsmasq"]["pid"], after["since"]) == (before["dnsmasq"]["pid"], before["since"])
            assert len(log_events(s1, "authority.take")) == takes
            assert hosts_answering(counters, back) == {"s2"}

            # SIGTERM of s2: it withdraws at once; s1, the best ranked, takes over; s3 stays standby.
            s2_dnsmasq = after["dnsmasq"]["pid"]
            stopping = time.time()
            stop_agent(lab, "s2")
            timings["SIGTERM → fabricd on s2 exited"] = time.time() - stopping
            assert not netns.alive(s2_dnsmasq) and not has_floating(s2)
            wait_until(lambda: role(s1) == "authority", takeover_bound("s1"), "s1 to take over")
            timings["SIGTERM → s1 serving (status)"] = time.time() - stopping
            assert (
                authority(s1)["reason"]
                == f"taking over: no authority answered {takeover_probes('s1')} probes"
            )
            wait_until(lambda: agreed(lab, "s1", ("s1", "s3")), 2 * ONE_PROBE, "s3 to see s1 serve")
            silence = longest_silence(watch.samples(), stopping - 1.0)
            timings["SIGTERM: longest DNS silence (tas3)"] = silence[1] - silence[0] if silence else 0.0
            renew_all(clients, list(INSTANCES))
            assert newcomer.renew(timeout=30)[-1].ip == fresh.ip
            start_agent(lab, "s2")
            wait_until(lambda: agreed(lab, "s1"), 2 * ONE_PROBE, "s2 back as a standby")

            # The DHCP gaps, as a client sending a DISCOVER every 0.5 s from s3 saw them (a new
            # server answers such a client only after its 3 s ping check).
            log = counters["s3"].log()
            timings["SIGKILL: longest DHCP silence (counter on s3)"] = serving_gap(log, began, back)
            timings["SIGTERM: longest DHCP silence (counter on s3)"] = serving_gap(log, back, time.time() - 5)
            # Never two servers at once, and s3, ranked last, never answered anything.
            logs = {host: counter.log() for host, counter in counters.items()}
            for host, log in logs.items():
                assert log.doubled() == {}, (host, log.doubled())
            assert hosts_answering(counters, began) == {"s1", "s2"}
    finally:
        watch.stop()
        newcomer.stop()
        lxc_exec(s3, "tas3", ["ip", "link", "del", "new2"], check=False)
        print()
        for what, seconds in timings.items():
            print(f"{what}: {seconds:.2f} s")


# ---- 3. partition --------------------------------------------------------------------------------

CUT = """table inet tas_cut {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip saddr 10.98.1.0/24 drop
    ip daddr 10.98.1.0/24 drop
    ip6 saddr fd00:98:1::/64 drop
    ip6 daddr fd00:98:1::/64 drop
  }
}
"""


def cut_s1(r1: NodeRuntime) -> None:
    """r1 stops forwarding to and from s1's underlay subnet; no link changes state."""
    r1.run(["nft", "-f", "-"], input_text=CUT)


def heal(r1: NodeRuntime) -> None:
    r1.run(["nft", "delete", "table", "inet", "tas_cut"], check=False)


def reaches(node: NodeRuntime, address: str) -> bool:
    return node.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0


def test_partition_both_sides_serve_then_the_worse_ranked_yields(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    """docs/authority.md, standalone hosts: s1 serves and is cut off the underlay. Each side then has
    one server (s1 alone; s2 for s2 and s3); once healed, s2 yields to s1 within one probe."""
    s1, s2, _ = (lab.node(h) for h in HOSTS)
    r1 = lab.node("r1")
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    try:
        with counting(lab) as counters:
            began = time.time()
            try:
                cut_s1(r1)
                cut = time.time()
                assert not reaches(s1, "10.98.2.12") and reaches(s2, "10.98.3.13")
                wait_until(lambda: role(s2) == "authority", takeover_bound("s2"), "s2 to take over its side")
                taken = time.time()
                timings["cut → s2 serves its side (status)"] = taken - cut
                wait_until(lambda: agreed(lab, "s2", ("s2", "s3")), 2 * ONE_PROBE, "s3 to see s2 serve")
                assert holders(lab, ("s1",)) == {"s1": ("authority", "s1")}  # s1 heard nothing amiss
                warm(counters, ("s2", "s3"), taken)  # the counters' MACs are new to s2's dnsmasq
                split = time.time()
                time.sleep(2 * PROBE_INTERVAL + LATE)
                split_end = time.time() - LATE
            finally:
                heal(r1)
                healed = time.time()
            # During the partition: one server per side, every DISCOVER answered by it alone.
            for host, server in (("s1", "s1"), ("s2", "s2"), ("s3", "s2")):
                per_xid = answered(counters[host].log(), split, split_end)
                assert len(per_xid) >= 10 and set(map(frozenset, per_xid.values())) == {
                    frozenset({server})
                }, host
            assert hosts_answering(counters, split, split_end) == {"s1", "s2"}

            # s1 hears the other side's two counters again, MACs it last saw over 30 s ago: their ping
            # checks (3 s each, no DHCP meanwhile) can hold back its answer to s2's probe.
            wait_until(lambda: role(s2) == "standby", ONE_PROBE + REPINGS, "s2 to yield")
            timings["heal → s2 yielded (status)"] = time.time() - healed
            fences = [e["reason"] for e in log_events(s2, "authority.fence")]
            assert fences[-1:] == ["yielding to s1, ranked above this host"], fences
            wait_until(lambda: agreed(lab, "s1"), ONE_PROBE, "every host to agree on s1")
            settled = time.time()
            time.sleep(2 * PROBE_INTERVAL + LATE)
            end = time.time() - LATE
            last_s2 = max(o.at for c in counters.values() for o in c.log().offers if o.host == "s2")
            timings["heal → s2's last OFFER on any bridge"] = last_s2 - healed
            assert last_s2 - healed <= PROBE_INTERVAL + PROBE_TIMEOUT + REPINGS + 1.0
            # Afterwards exactly one server, s1, for every DISCOVER on every bridge.
            for host, counter in counters.items():
                per_xid = answered(counter.log(), settled, end)
                assert len(per_xid) >= 10 and set(map(frozenset, per_xid.values())) == {frozenset({"s1"})}, (
                    host
                )
            assert hosts_answering(counters, settled, end) == {"s1"}
            assert hosts_answering(counters, began) == {"s1", "s2"}  # s3 never served
        # s2's and s3's clients reach s1 again (s1's own clients never lost it).
        renew_all(clients, list(INSTANCES))
        holds_leases(s1, clients)
    finally:
        print()
        for what, seconds in timings.items():
            print(f"{what}: {seconds:.2f} s")


# ---- 4. a second DHCP server ---------------------------------------------------------------------

ROGUE_NS, ROGUE_PORT = "fl-tas-rogue", "tas-rogue"  # lab.down removes fl-tas-* namespaces too
ROGUE_IP, ROGUE_MAC = "192.168.101.250", "02:ac:0a:ff:00:fa"


@contextlib.contextmanager
def rogue_server(lab: Lab, host: str, work: Path) -> Iterator[None]:
    """A plain dnsmasq on the overlay, in a namespace of its own whose eth0 is a port of `host`'s
    fabric0 (a second server on that host's bridge); removed, by PID and namespace, at the end."""
    node = lab.node(host)
    netns.remove(ROGUE_NS)
    netns.create(ROGUE_NS)
    process: subprocess.Popen[bytes] | None = None
    log = work / "rogue-dnsmasq.log"
    try:
        netns.add_veth(ROGUE_NS, "eth0", node.netns_name, ROGUE_PORT, mtu=1450)
        node.run(["ip", "link", "set", ROGUE_PORT, "master", "fabric0"])
        subprocess.run(["ip", "-n", ROGUE_NS, "link", "set", "eth0", "address", ROGUE_MAC], check=True)
        subprocess.run(["ip", "-n", ROGUE_NS, "addr", "add", f"{ROGUE_IP}/24", "dev", "eth0"], check=True)
        process = subprocess.Popen(
            [
                "ip", "netns", "exec", ROGUE_NS, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                "--port=0", "--no-resolv", "--no-hosts", "--interface=eth0", "--bind-interfaces",
                "--except-interface=lo", "--dhcp-range=192.168.101.200,192.168.101.209,255.255.255.0,1h",
                "--no-ping", f"--dhcp-leasefile={work}/rogue.leases", "--pid-file=", "--user=root",
                "--group=root", f"--log-facility={log}",
            ],
        )  # fmt: skip
        wait_until(lambda: "started" in (log.read_text() if log.exists() else ""), 5, "the rogue dnsmasq")
        yield
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        netns.stop_pids(netns.pids_in(ROGUE_NS), grace=2.0)
        netns.remove(ROGUE_NS)  # and with it the veth and its port on fabric0


def second_servers(node: NodeRuntime) -> tuple[list[str], list[str]]:
    """(authority.probe.second_servers, the problems naming a second server), from fabricctl."""
    full = status(node)
    probe = full["authority"]["probe"] or {}
    return list(probe.get("second_servers") or []), [p for p in full["problems"] if "second DHCP" in p]


def reported(node: NodeRuntime) -> tuple[list[str], list[str]] | None:
    found = second_servers(node)
    return found if found[0] else None


def cleared(node: NodeRuntime) -> bool:
    return second_servers(node) == ([], [])


def test_a_rogue_server_is_reported_on_every_host_and_standbys_never_answer(lab: Lab, tmp_path: Path) -> None:
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    try:
        with counting(lab) as counters:
            began = time.time()
            with rogue_server(lab, "s3", tmp_path):
                started = time.time()
                for host in HOSTS:
                    node = lab.node(host)
                    servers, problems = wait_until(
                        lambda n=node: reported(n), ONE_PROBE, f"{host} to report it"
                    )
                    timings[f"rogue up → reported on {host}"] = time.time() - started
                    assert len(servers) == 1 and ROGUE_IP in servers[0] and ROGUE_MAC in servers[0], servers
                    assert len(problems) == 1 and ROGUE_IP in problems[0], problems
                    (logged, *_) = log_events(node, "authority.second_server")[-1:]
                    assert any(ROGUE_IP in s and ROGUE_MAC in s for s in logged["servers"]), logged
                window = time.time()
                time.sleep(2 * PROBE_INTERVAL + LATE)
                window_end = time.time() - LATE
                # Only the authority and the rogue answer, every DISCOVER; a foreign server moves no one.
                for host, counter in counters.items():
                    log = counter.log()
                    per_xid = answered(log, window, window_end)
                    assert len(per_xid) >= 10, host
                    assert set(map(frozenset, per_xid.values())) == {frozenset({"s1", "?"})}, host
                    foreign = {(o.mac, o.server_id) for o in log.offers if o.host == "?" and o.at >= window}
                    assert foreign == {(ROGUE_MAC, ROGUE_IP)}, foreign
                assert agreed(lab, "s1")
                for host in HOSTS:
                    assert not [p for p in status(lab.node(host))["problems"] if "two hosts answer" in p]
            removed = time.time()
            print(f"\nrogue removed at {removed:.3f}")
            for host in HOSTS:
                node = lab.node(host)
                wait_until(
                    lambda n=node: cleared(n),
                    ONE_PROBE,
                    f"{host} to clear it",
                    lambda n=node: second_servers(n),
                )
                timings[f"rogue gone → cleared on {host}"] = time.time() - removed
                assert log_events(node, "authority.second_server_gone")
            # Over the whole test, fabricd's probes and the counters' DISCOVERs alike: no standby answered.
            assert hosts_answering(counters, began) == {"s1", "?"}
    finally:
        print()
        for what, seconds in timings.items():
            print(f"{what}: {seconds:.2f} s")
