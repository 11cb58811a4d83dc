"""The DHCP/DNS authority among standalone LXD hosts (labs/authority-standalone.clab.yml).

Three hosts s1, s2, s3, each with its own LXD (no cluster, no shared store), one overlay bridge
fabric0 over VXLAN on a routed underlay, `dhcp.election: standalone` with priority s1, s2, s3, a
probe every 4 s, silent_probes 2. Real LXD, real dnsmasq, busybox udhcpc in the instances
(`fabric_lab.dhcp_clients`), and OFFER counters on the hosts' bridges: they record every OFFER
there, fabricd's own probes' included, with the serving host from option 224, so who serves is
read off the wire, not only from fabricctl.

Checked: one authority (s1) serves every host, every host agrees, and names of other hosts'
instances come from the clients; SIGKILL and SIGTERM of the holder hand over to the next in line
while clients keep their addresses, and s1, restarted, takes the authority back; a partition (s1's
underlay link down) gives one server per side and, healed, the worse-ranked one yields within about
a probe; a foreign DHCP server is reported on every host and no standby ever answers. Each test
leaves s1 serving and every fabricd running, as the lab starts. Measured times are printed
(pytest -s); the time bounds are safety margins.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
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
# A yield, a take-back or a second server shows within one probe interval plus the probe's
# listening window; the rest is polling (fabricctl starts a Python each time), a safety margin.
ONE_PROBE = PROBE_INTERVAL + PROBE_TIMEOUT + 2.5
STATUS_LAG = 15.0  # the lab's reconcile interval (5 s) after which the status is rebuilt, and slack
LATE = 4.0  # a DISCOVER's answer may come this late: dnsmasq serves no DHCP during a 3 s ping check
BUSY = 2 * 3.0  # a server may first ping-check two clients new to it (3 s each, no DHCP meanwhile)


def takeover_probes(host: str) -> int:
    """Unanswered probes after which `host` takes over (the elector's rule): silent_probes, at least
    enough to outlast a busy dnsmasq, plus the rank's share (5, 11 and 17 here)."""
    return max(SILENT_PROBES, busy_probes(PROBE_INTERVAL)) + RANK[host] * rank_probes(PROBE_INTERVAL)


def takeover_bound(host: str) -> float:
    """Safety bound for a takeover: its probes, one more for the phase, the window, slack."""
    return (takeover_probes(host) + 1) * PROBE_INTERVAL + PROBE_TIMEOUT + 5.0


# A returning better-ranked host hears the server for silent_probes probes, takes over; the old
# server yields at its next probe that hears it (which the new dnsmasq may answer late when busy).
TAKE_BACK = (SILENT_PROBES + 1) * PROBE_INTERVAL + PROBE_TIMEOUT + ONE_PROBE + BUSY + 5.0


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
    return dict(json.loads(node.fabricctl("status", "--json", timeout=20).stdout))


def authority(node: NodeRuntime) -> dict[str, Any]:
    """The status's authority section; empty while a fabricd just started has none yet."""
    return dict(status(node).get("authority") or {})


def holders(lab: Lab, hosts: tuple[str, ...] = HOSTS) -> dict[str, tuple[str, str | None]]:
    """host → (role, holder), as each host's fabricctl says."""
    found = {}
    for host in hosts:
        section = authority(lab.node(host))
        found[host] = (str(section.get("role")), section.get("holder"))
    return found


def agreed(lab: Lab, holder: str, hosts: tuple[str, ...] = HOSTS) -> bool:
    """`holder` serves and every host in `hosts` names it."""
    return holders(lab, hosts) == {h: ("authority" if h == holder else "standby", holder) for h in hosts}


def role(node: NodeRuntime) -> str:
    return str(authority(node).get("role"))


def has_floating(node: NodeRuntime) -> bool:
    return FLOATING in netns.link_names(node.netns_name)


def leases(node: NodeRuntime) -> dict[str, str]:
    """MAC → address in the node's `fabricctl leases` (its own dnsmasq's lease file)."""
    rows = json.loads(node.fabricctl("leases", "--json").stdout)["leases"]
    return {str(row["mac"]): str(row["address"]) for row in rows}


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


def lookup(node: NodeRuntime, instance: str, query: str) -> set[str] | None:
    """`query`'s A records (an address: its PTR names) asked from inside `instance`; None: no such name."""
    reverse = query.replace(".", "").isdigit()
    found = nslookup(node, instance, query, SERVER, kind=None if reverse else "a")
    if found.error is not None:
        return None
    return set(found.names if reverse else found.addresses)


def resolves(node: NodeRuntime, instance: str, query: str, expected: set[str], timeout: float) -> float:
    """Seconds until `query` answers exactly `expected` from inside `instance`; an answer that was
    not yet right (or no answer: busybox nslookup once failed a PTR query the next try answered)
    is printed."""
    began = time.time()
    misses: list[str] = []

    def right() -> bool:
        found = nslookup(
            node, instance, query, SERVER, kind=None if query.replace(".", "").isdigit() else "a"
        )
        got = set(found.names or found.addresses) if found.error is None else None
        if got != expected:
            misses.append(f"{found.error or got} at {time.time() - began:.2f} s")
        return got == expected

    wait_until(right, timeout, f"{query} to answer {expected} in {instance}", lambda: misses[-3:])
    if misses:
        print(f"{instance}: {query} first answered {misses[:3]} ({len(misses)} misses)")
    return time.time() - began


def renew_all(clients: dict[str, DhcpClient]) -> None:
    """Each client renews (REQUESTs for its address) and keeps it: no NAK, no starting over."""
    for name, client in clients.items():
        address = latest_address(client).ip
        events = client.renew(timeout=30)
        seen = [(e.event, e.ip, e.serverid) for e in events]
        assert seen == [("renew", address, SERVER)], (name, address, seen)


def addresses_of(clients: dict[str, DhcpClient]) -> dict[str, str]:
    return {name: latest_address(client).ip for name, client in clients.items()}


def print_timings(timings: dict[str, float]) -> None:
    print()
    for what, seconds in timings.items():
        print(f"{what}: {seconds:.2f} s")


# ---- OFFERs on the wire --------------------------------------------------------------------------


def counter_mac(index: int) -> str:
    return f"02:ac:0a:00:00:{index:02x}"


@contextlib.contextmanager
def counting(lab: Lab, hosts: tuple[str, ...] = HOSTS) -> Iterator[dict[str, OfferCounter]]:
    """An OFFER counter on each host's bridge (its own DISCOVER every 0.5 s, and every OFFER seen),
    each answered at least once before the caller goes on."""
    counters: dict[str, OfferCounter] = {}
    try:
        for host in hosts:
            counters[host] = OfferCounter(lab.node(host), counter_mac(RANK[host]))
        warm(counters, hosts, 0.0)
        yield counters
    finally:
        for counter in counters.values():
            counter.stop()


def warm(counters: dict[str, OfferCounter], hosts: tuple[str, ...], since: float) -> None:
    """Until each counter in `hosts` had a DISCOVER sent after `since` answered: a server answers a
    MAC new to it only after a 3 s ping check, and only one such at a time."""

    def any_answer(host: str) -> bool:
        return bool(answered(counters[host].log(), since, float("inf")))

    for host in hosts:
        wait_until(partial(any_answer, host), 30, f"an answer on {host}")


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


def only(counters: dict[str, OfferCounter], server: str, since: float, until: float) -> None:
    """Every DISCOVER each counter sent in [since, until) was answered, by `server` alone."""
    for host, counter in counters.items():
        per_xid = answered(counter.log(), since, until)
        expected = (until - since) / 0.5
        assert len(per_xid) >= expected / 2, (host, len(per_xid), expected)
        assert set(map(frozenset, per_xid.values())) == {frozenset({server})}, (host, per_xid)


def last_offer_from(counters: dict[str, OfferCounter], host: str) -> float:
    return max((o.at for c in counters.values() for o in c.log().offers if o.host == host), default=0.0)


# ---- the lab -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    started = time.monotonic()
    with fresh_lab(LAB_FILE, "tas", state_root) as lab:
        print(f"\nlab up: {time.monotonic() - started:.1f} s")
        wait_until(lambda: agreed(lab, "s1"), 60, "s1 to serve and every host to agree")
        print(f"lab up → s1 serving and agreed on by all: {time.monotonic() - started:.1f} s")
        for name, host in INSTANCES.items():
            node = lab.node(host)  # each host's own LXD
            node.run(
                ["lxc", "init", "busybox", name, "-p", "default", "-p", "overlay"], input_text="", timeout=120
            )
            node.run(["lxc", "start", name], timeout=60)
        yield lab


@pytest.fixture(scope="module")
def clients(lab: Lab) -> Iterator[dict[str, DhcpClient]]:
    """One recording udhcpc per instance, driven through its own host's LXD, each sending its own
    name as its hostname (option 12)."""
    started = {name: DhcpClient(lab.node(host), name) for name, host in INSTANCES.items()}
    for name, client in started.items():
        client.start("-x", f"hostname:{name}")
    for client in started.values():
        client.wait_bound(timeout=40)
    yield started
    for client in started.values():
        client.stop()


@pytest.fixture(autouse=True)
def s1_serves_after(lab: Lab) -> Iterator[None]:
    """Every test leaves the lab as it starts, every fabricd running and s1 serving, even after a
    failure, so one failed test does not fail the next."""
    yield
    heal(lab.node("s1"))
    for host in HOSTS:
        pid = lab.state().nodes[host].agent_pid
        if pid is None or not netns.alive(pid):
            start_agent(lab, host)
    wait_until(lambda: agreed(lab, "s1"), TAKE_BACK + ONE_PROBE, "s1 to serve again")


# ---- 1. one authority ----------------------------------------------------------------------------


def test_one_authority_serves_every_host_and_names_come_from_the_clients(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    timings: dict[str, float] = {}
    s1_serves = {h: ("authority" if h == "s1" else "standby", "s1") for h in HOSTS}

    # The clients just started are new to dnsmasq: its ping checks can leave a probe or two unanswered
    # (a standby keeps naming the holder it heard meanwhile), so wait for a probe every host heard s1 answer.
    def heard_s1_everywhere() -> dict[str, dict[str, Any]] | None:
        sections = {host: authority(lab.node(host)) for host in HOSTS}
        heard = all((sections[h].get("probe") or {}).get("answering") == ["s1"] for h in HOSTS)
        named = {h: (sections[h].get("role"), sections[h].get("holder")) for h in HOSTS}
        return sections if heard and named == s1_serves else None

    sections = wait_until(heard_s1_everywhere, 2 * ONE_PROBE + 20, "every host to hear and name s1")
    for host in HOSTS:
        node = lab.node(host)
        section = sections[host]
        assert (section["mode"], section["host"]) == ("standalone", host)
        assert sorted(section["standbys"]) == ["s2", "s3"]
        assert section["probe"]["answering"] == ["s1"] and section["probe"]["second_servers"] == []
        # Only s1 runs dnsmasq and holds the floating device.
        assert (section["dnsmasq"]["pid"] is not None, has_floating(node)) == (host == "s1",) * 2
        assert not [p for p in status(node)["problems"] if "DHCP" in p], status(node)["problems"]

    # Every instance, on whichever host, has a pool address from the one server, tas1 too, whose own
    # LXD s1 plans (no fixed addresses among standalone hosts), the overlay MTU, the server as DNS;
    # s1's lease file has them all.
    got = addresses_of(clients)
    for client in clients.values():
        lease = latest_address(client)
        assert in_pool(lease.ip) and client.address() == lease.ip, lease
        assert (lease.serverid, lease.dns, lease.domain, lease.mtu) == (SERVER, SERVER, DOMAIN, MTU), lease
    assert len(set(got.values())) == len(got)
    want = {mac_of(lab.node(INSTANCES[n]), n): a for n, a in got.items()}
    wait_until(lambda: want.items() <= leases(lab.node("s1")).items(), STATUS_LAG, "s1's lease table")
    assert leases(lab.node("s2")) == {} and leases(lab.node("s3")) == {}

    # The wire agrees: every DISCOVER of every counter, and every probe of fabricd, answered by s1.
    with counting(lab) as counters:
        since = time.time()
        time.sleep(PROBE_INTERVAL + LATE)
        until = time.time() - LATE
        only(counters, "s1", since, until)
        assert hosts_answering(counters, since) == {"s1"}
        identities = {(o.mac, o.server_id) for c in counters.values() for o in c.log().offers}
        assert identities == {(SERVER_MAC, SERVER)}  # the floating MAC and address, whoever serves

    # Names: s1's own instance from LXD (bare, qualified, PTR); the other hosts' instances from the
    # hostname their clients send, asked across hosts.
    for instance, host in INSTANCES.items():
        node = lab.node(host)
        timings[f"{instance}: tas1 resolves"] = resolves(node, instance, f"tas1.{DOMAIN}", {got["tas1"]}, 20)
        resolves(node, instance, f"tas1.s1.{DOMAIN}", {got["tas1"]}, 10)
        resolves(node, instance, got["tas1"], {f"tas1.{DOMAIN}"}, 10)
    timings["tas1 (s1): tas3 (s3, client-sent name) resolves"] = resolves(
        lab.node("s1"), "tas1", f"tas3.{DOMAIN}", {got["tas3"]}, 20
    )
    timings["tas3 (s3): tas2 (s2, client-sent name) resolves"] = resolves(
        lab.node("s3"), "tas3", f"tas2.{DOMAIN}", {got["tas2"]}, 20
    )
    assert lookup(lab.node("s2"), "tas2", got["tas3"]) == {f"tas3.{DOMAIN}"}
    assert lookup(lab.node("s2"), "tas2", f"tas3.s3.{DOMAIN}") is None  # qualified: the authority's own only
    assert lookup(lab.node("s2"), "tas2", f"tasnobody.{DOMAIN}") is None

    # A client LXD lists on s1 cannot claim another name; an unknown client cannot take tas1's name.
    claimer = clients["tas1"]
    try:
        claimer.start("-x", "hostname:tasclaim")
        assert claimer.wait_bound(timeout=30).ip == got["tas1"]
        imposter = DhcpClient(lab.node("s2"), "tas2", interface="imp")
        add_macvlan(lab.node("s2"), "tas2", "imp", "02:ac:0a:00:02:01")
        imposter.start("-x", "hostname:tas1")
        fake = imposter.wait_bound(timeout=30).ip
        imposter.stop()
        time.sleep(1.0)  # the lease is written; the names are dnsmasq's at once
        assert lookup(lab.node("s3"), "tas3", f"tasclaim.{DOMAIN}") is None
        assert lookup(lab.node("s3"), "tas3", f"tas1.{DOMAIN}") == {got["tas1"]}
        assert lookup(lab.node("s3"), "tas3", fake) != {f"tas1.{DOMAIN}"}
    finally:
        lxc_exec(lab.node("s2"), "tas2", ["ip", "link", "del", "imp"], check=False)
        claimer.start("-x", "hostname:tas1")
        claimer.wait_bound(timeout=30)
        print_timings(timings)


# ---- 2. SIGKILL, and the holder coming back ------------------------------------------------------

NEWCOMER = "02:ac:0a:00:01:01"  # a client no server has seen


def test_sigkill_hands_over_and_the_restarted_host_takes_the_authority_back(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    s1, s2, s3 = (lab.node(h) for h in HOSTS)
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    before = addresses_of(clients)
    dnsmasq = authority(s1)["dnsmasq"]["pid"]
    assert dnsmasq is not None and netns.alive(dnsmasq)
    newcomer = DhcpClient(s3, "tas3", interface="new2")
    watch = DnsWatch(s3, "tas3", SERVER, f"tas2.{DOMAIN}")  # any reply counts, NXDOMAIN too
    try:
        with counting(lab) as counters:
            began = time.time()
            # SIGKILL: dnsmasq (parent-death signal) and the floating device (the deadman helper) go
            # with fabricd; s2, next in line, takes over.
            killed = time.time()
            kill_agent(lab, "s1")
            wait_until(lambda: not netns.alive(dnsmasq), 5, "s1's dnsmasq to die with fabricd")
            timings["SIGKILL → s1's dnsmasq gone"] = time.time() - killed
            wait_until(lambda: not has_floating(s1), 5, f"{FLOATING} to go from s1")
            wait_until(lambda: role(s2) == "authority", takeover_bound("s2"), "s2 to take over")
            timings["SIGKILL → s2 serving (status)"] = time.time() - killed
            assert (
                authority(s2)["reason"]
                == f"taking over: no authority answered {takeover_probes('s2')} probes"
            )
            wait_until(lambda: agreed(lab, "s2", ("s2", "s3")), 2 * ONE_PROBE, "s3 to see s2 serve")
            timings["SIGKILL → DHCP answered again (counter on s3)"] = (
                min(o.at for o in counters["s3"].log().from_host("s2")) - killed
            )
            # DNS answers again, from s2.
            wait_until(
                lambda: any(s.answers is not None and s.at > killed + 5 for s in watch.samples()),
                20,
                "DNS to answer again",
            )
            silence = longest_silence(watch.samples(), killed - 1.0)
            timings["SIGKILL: longest DNS silence (tas3)"] = silence[1] - silence[0] if silence else 0.0

            # Clients keep their addresses: the renewal reaches s2 (from tas1 through the flood, as
            # nobody updates the dead host's forwarding entries). First the new server's ping checks of
            # the counters, new to it, are over: a forced renewal (SIGUSR1) gives up after udhcpc's -A
            # (10 s), where a real client would go on renewing until its lease runs out.
            warm(counters, tuple(counters), killed)
            timings["SIGKILL → every counter answered by s2"] = time.time() - killed
            renew_all(clients)
            assert addresses_of(clients) == before
            # A client never seen before gets a new address, from s2.
            add_macvlan(s3, "tas3", "new2", NEWCOMER)
            added = time.time()
            newcomer.start()
            fresh = newcomer.wait_bound(timeout=30)
            timings["new client: DISCOVER → bound (s2)"] = time.time() - added
            assert in_pool(fresh.ip) and fresh.serverid == SERVER
            assert fresh.ip not in before.values()
            # DNS from s2: its own instance (from its LXD), and s3's (the name tas3's renewal sent).
            assert lookup(s1, "tas1", f"tas2.s2.{DOMAIN}") == {before["tas2"]}
            assert lookup(s1, "tas1", f"tas3.{DOMAIN}") == {before["tas3"]}
            assert lookup(s3, "tas3", f"tas1.{DOMAIN}") == {before["tas1"]}

            # s1 comes back: it hears s2 answer for silent_probes probes and takes the authority back;
            # s2 yields at its next probe that s1's new dnsmasq answers. That dnsmasq ping-checks every
            # client new to it first (3 s each, answering nothing meanwhile): only the counter on s3
            # goes on, so it is busy with two (that counter and fabricd's probe MAC), not four.
            for host in ("s1", "s2"):
                counters.pop(host).stop()
            start_agent(lab, "s1")
            back = time.time()
            wait_until(lambda: role(s1) == "authority", TAKE_BACK, "s1 to take the authority back")
            timings["s1 restarted → s1 serving (status)"] = time.time() - back
            assert authority(s1)["reason"] == "taking the authority back from s2, ranked below this host"
            wait_until(
                lambda: agreed(lab, "s1"),
                ONE_PROBE + BUSY + 4.0,
                "s2 to yield and every host to agree",
                lambda: holders(lab),
            )
            timings["s1 restarted → s2 yielded, all agree on s1"] = time.time() - back
            fences = [e["reason"] for e in log_events(s2, "authority.fence")]
            assert fences[-1:] == ["yielding to s1, ranked above this host"], fences
            settled = time.time()
            last_s2 = last_offer_from(counters, "s2")
            first_s1 = min(o.at for c in counters.values() for o in c.log().from_host("s1", back))
            timings["take-back: two servers answering (first s1 → last s2 OFFER)"] = max(
                0.0, last_s2 - first_s1
            )
            time.sleep(PROBE_INTERVAL + LATE)
            only(counters, "s1", settled, time.time() - LATE)
            # Nobody re-addressed: every client renews with s1 and keeps its address.
            warm(counters, ("s3",), back)
            renew_all(clients)
            assert addresses_of(clients) == before
            assert newcomer.renew(timeout=30)[-1].ip == fresh.ip
            log = counters["s3"].log()
            # From before the kill (the counter was answered every 0.5 s then) to s1's return.
            timings["SIGKILL: longest DHCP silence (counter on s3)"] = serving_gap(log, began - 2.0, back)
            assert hosts_answering(counters, began) == {"s1", "s2"}  # s3, ranked last, never answered
    finally:
        watch.stop()
        newcomer.stop()
        lxc_exec(s3, "tas3", ["ip", "link", "del", "new2"], check=False)
        print_timings(timings)


# ---- 3. clean stop -------------------------------------------------------------------------------


def test_a_clean_stop_of_the_authority_hands_over(lab: Lab, clients: dict[str, DhcpClient]) -> None:
    s1, s2, _ = (lab.node(h) for h in HOSTS)
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    before = addresses_of(clients)
    dnsmasq = authority(s1)["dnsmasq"]["pid"]
    watch = DnsWatch(lab.node("s3"), "tas3", SERVER, f"tas2.{DOMAIN}")
    try:
        with counting(lab, ("s2", "s3")) as counters:
            stopping = time.time()
            stop_agent(lab, "s1")
            timings["SIGTERM → fabricd on s1 exited"] = time.time() - stopping
            assert not netns.alive(dnsmasq) and not has_floating(s1)
            wait_until(lambda: role(s2) == "authority", takeover_bound("s2"), "s2 to take over")
            timings["SIGTERM → s2 serving (status)"] = time.time() - stopping
            wait_until(lambda: agreed(lab, "s2", ("s2", "s3")), 2 * ONE_PROBE, "s3 to see s2 serve")
            wait_until(
                lambda: any(s.answers is not None and s.at > stopping + 5 for s in watch.samples()),
                20,
                "DNS to answer again",
            )
            silence = longest_silence(watch.samples(), stopping - 1.0)
            timings["SIGTERM: longest DNS silence (tas3)"] = silence[1] - silence[0] if silence else 0.0
            warm(counters, tuple(counters), stopping)  # the new server's ping checks are over (as above)
            renew_all(clients)
            assert addresses_of(clients) == before
            log = counters["s3"].log()
            timings["SIGTERM: longest DHCP silence (counter on s3)"] = serving_gap(
                log, stopping - 1.0, time.time()
            )
            assert hosts_answering(counters, stopping) <= {"s1", "s2"}
    finally:
        watch.stop()
        print_timings(timings)


# ---- 4. partition --------------------------------------------------------------------------------

S1_UNDERLAY = (  # what the lab's exec lines set on s1's eth1, put back after the link comes up
    ["ip", "link", "set", "eth1", "up"],
    ["ip", "route", "replace", "10.98.0.0/16", "via", "10.98.1.1"],
    ["ip", "-6", "addr", "replace", "fd00:98:1::11/64", "dev", "eth1", "nodad"],
    ["ip", "-6", "route", "replace", "fd00:98:2::/64", "via", "fd00:98:1::1"],
    ["ip", "-6", "route", "replace", "fd00:98:3::/64", "via", "fd00:98:1::1"],
)


def cut(s1: NodeRuntime) -> None:
    s1.run(["ip", "link", "set", "eth1", "down"])


def heal(s1: NodeRuntime) -> None:
    for argv in S1_UNDERLAY:
        s1.run(argv, check=False)


def reaches(node: NodeRuntime, address: str) -> bool:
    return node.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0


def test_partition_both_sides_serve_then_the_worse_ranked_yields(
    lab: Lab, clients: dict[str, DhcpClient]
) -> None:
    """docs/authority.md, standalone hosts: s1's underlay link goes down. Each side then has one
    server (s1 alone; s2 for s2 and s3); once the link is back, s2 yields to s1 within a probe."""
    s1, s2, _ = (lab.node(h) for h in HOSTS)
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    before = addresses_of(clients)
    try:
        with counting(lab) as counters:
            began = time.time()
            try:
                cut(s1)
                cut_at = time.time()
                assert not reaches(s1, "10.98.2.12") and reaches(s2, "10.98.3.13")
                wait_until(lambda: role(s2) == "authority", takeover_bound("s2"), "s2 to take over its side")
                taken = time.time()
                timings["link down → s2 serves its side (status)"] = taken - cut_at
                wait_until(lambda: agreed(lab, "s2", ("s2", "s3")), 2 * ONE_PROBE, "s3 to see s2 serve")
                assert holders(lab, ("s1",)) == {"s1": ("authority", "s1")}  # s1 heard nothing amiss
                warm(counters, ("s2", "s3"), taken)  # the counters' MACs are new to s2's dnsmasq
                split = time.time()
                time.sleep(PROBE_INTERVAL + LATE)
                split_end = time.time() - LATE
                # During the partition: one server per side, every DISCOVER answered by it alone.
                only({"s1": counters["s1"]}, "s1", split, split_end)
                only({h: counters[h] for h in ("s2", "s3")}, "s2", split, split_end)
                # The far side's counters stop here: after the heal s1 would ping-check their MACs, new
                # to it for over 30 s, and answer no probe meanwhile (docs: up to 18 s). The counter on
                # s1 stays and sees s2's OFFERs (to every probe, broadcast) until s2 yields.
                for host in ("s2", "s3"):
                    counters[host].stop()
            finally:
                heal(s1)
                healed = time.time()
            assert reaches(s1, "10.98.2.12")
            wait_until(lambda: role(s2) == "standby", ONE_PROBE + BUSY, "s2 to yield", lambda: holders(lab))
            timings["link up → s2 yielded (status)"] = time.time() - healed
            fences = [e["reason"] for e in log_events(s2, "authority.fence")]
            assert fences[-1:] == ["yielding to s1, ranked above this host"], fences
            wait_until(lambda: agreed(lab, "s1"), ONE_PROBE, "every host to agree on s1")
            settled = time.time()
            time.sleep(PROBE_INTERVAL + LATE)
            last_s2 = last_offer_from(counters, "s2")
            timings["link up → s2's last OFFER (counter on s1)"] = last_s2 - healed
            assert last_s2 - healed <= PROBE_INTERVAL + PROBE_TIMEOUT + 2.0
            # Afterwards one server: the counter on s1, which sees every server's (broadcast) answer to
            # every probe on the overlay, sees only s1's.
            only({"s1": counters["s1"]}, "s1", settled, time.time() - LATE)
            assert hosts_answering(counters, settled) == {"s1"}
            assert hosts_answering(counters, began) == {"s1", "s2"}  # s3 never served
        # Clients keep their addresses (s2's and s3's renew with s1 again).
        renew_all(clients)
        assert addresses_of(clients) == before
    finally:
        heal(s1)
        print_timings(timings)


# ---- 5. a second DHCP server ---------------------------------------------------------------------

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


def cleared(node: NodeRuntime) -> bool:
    return second_servers(node) == ([], [])


def reported(node: NodeRuntime) -> tuple[list[str], list[str]] | None:
    found = second_servers(node)
    return found if found[0] else None


def test_a_rogue_server_is_reported_on_every_host_and_standbys_never_answer(lab: Lab, tmp_path: Path) -> None:
    wait_until(lambda: agreed(lab, "s1"), 30, "s1 to serve")
    timings: dict[str, float] = {}
    try:
        with counting(lab) as counters:
            began = time.time()
            with rogue_server(lab, "s3", tmp_path):
                started = time.time()
                pending = set(HOSTS)
                while pending:  # every host polled in turn, so each one's time is its own
                    assert time.time() - started < ONE_PROBE + 3.0, f"not reported on {sorted(pending)}"
                    for host in sorted(pending):
                        found = reported(lab.node(host))
                        if found is None:
                            continue
                        timings[f"rogue up → reported on {host}"] = time.time() - started
                        servers, problems = found
                        assert len(servers) == 1 and ROGUE_IP in servers[0] and ROGUE_MAC in servers[0], (
                            servers
                        )
                        assert len(problems) == 1 and ROGUE_IP in problems[0], problems
                        pending.discard(host)
                window = time.time()
                time.sleep(PROBE_INTERVAL + LATE)
                window_end = time.time() - LATE
                # Only the authority and the rogue answer the DISCOVERs; a foreign server moves no one.
                # (Not every DISCOVER gets both answers: the counter on s1 once had 2 of 8 answered by
                # the rogue alone; how many each answered is printed.)
                for host, counter in counters.items():
                    per_xid = answered(counter.log(), window, window_end)
                    assert len(per_xid) >= 6, host
                    assert set().union(*per_xid.values()) == {"s1", "?"}, (host, per_xid)
                    by_s1 = sum("s1" in hosts for hosts in per_xid.values())
                    by_rogue = sum("?" in hosts for hosts in per_xid.values())
                    print(
                        f"counter on {host}: {len(per_xid)} answered, {by_s1} by s1, {by_rogue} by the rogue"
                    )
                assert agreed(lab, "s1")
            removed = time.time()
            for host in HOSTS:
                wait_until(partial(cleared, lab.node(host)), ONE_PROBE, f"{host} to clear it")
            timings["rogue gone → cleared on every host"] = time.time() - removed
            # Over the whole test, fabricd's probes and the counters' DISCOVERs alike: no standby answered.
            assert hosts_answering(counters, began) == {"s1", "?"}
    finally:
        print_timings(timings)
