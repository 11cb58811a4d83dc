"""The authority benchmark's lab work: set-up, the failover and handover rounds, the instance rounds.

Every time is `time.monotonic()` of this process; wall-clock times (fabricd's log, LXD's event
timestamps, the offer counter's records) are mapped onto it with one offset measured at the start.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.authority_clients import (
    DhcpReply,
    DnsReply,
    GapClient,
    Records,
    dns_outage,
    first_ack,
    first_dns,
    last_before,
)
from bench.authority_keepalived import KeepalivedBaseline
from bench.labs import reap, restart_agent
from bench.lxd_events import LifecycleEvents
from bench.stats import TIMED_OUT, Json, distribution
from fabric_lab import netns
from fabric_lab.dhcp_clients import (
    DhcpClient,
    LeaseEvent,
    OfferCounter,
    OfferLog,
    dns_query,
    parse_dns_answer,
)
from fabric_lab.node import AGENT_ANSWERS, LabError
from fabric_lab.runner import Lab, namespace_prefix
from fabricd.authority.netns_io import in_netns

HOSTS = ("h1", "h2", "h3")
BRIDGE = "fabric0"
OVERLAY_MTU = 1450
SERVER = "192.168.100.1"
DOMAIN = "fabric.internal"
# Instance names are unique machine-wide (every lab's LXD shares the cgroup tree): "bau-" is ours.
INSTANCES = {"bau-a": "h1", "bau-b": "h2", "bau-c": "h3"}
QUERY_INSTANCE = "bau-a"  # the name every client's DNS loop asks for
CLIENT_MACS = {"h1": "02:ba:00:00:00:01", "h2": "02:ba:00:00:00:02", "h3": "02:ba:00:00:00:03"}
# The offer counter asks as the h1 client namespace's MAC: that MAC has a lease (its REQUEST loop
# renews it every 50 ms, with every authority), and dnsmasq offers a client its lease without the
# 3 s ping check that blocks its DHCP service. A MAC of its own would make the benchmark itself stall
# the authority's DHCP for 3 s after every takeover and every 30 s (dnsmasq's ping cache).
COUNTER_HOST = "h1"
COUNTER_INTERVAL = 0.5
ROUND_TIMEOUT = 15.0  # seconds after the signal before a client still unanswered counts as timed out
CREATE_TIMEOUT = 20.0
RENEW_TIMEOUT = 20.0
SETTLE_TIMEOUT = 40.0
FRESH = 1.0  # a loop counts as working when it had an answer this recently
DNSMASQ_DIR = "run/fabricd/dnsmasq"  # below a node's root (its holder's /proc/PID/root)

Progress = Callable[[str], None]


def clock_offset() -> float:
    """time.time() - time.monotonic(), the median of a few back-to-back readings."""
    readings = sorted(time.time() - time.monotonic() for _ in range(9))
    return readings[4]


def answered(reply: DnsReply) -> bool:
    return reply.rcode == 0 and bool(reply.answers)


# --- fabricd's log -----------------------------------------------------------------------------------


class AgentLog:
    """fabricd's JSON log of one node: the authority's steps, after an offset (wall clock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def first(self, since: int, event: str) -> float | None:
        """time.time() of the first line after byte `since` whose "event" is `event`."""
        with contextlib.suppress(OSError), open(self.path, "rb") as log:
            log.seek(since)
            for raw in log:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    line = json.loads(raw)
                    if line.get("event") == event:
                        return datetime.fromisoformat(line["timestamp"]).timestamp()
        return None


# --- rounds ------------------------------------------------------------------------------------------


@dataclass
class FailoverRound:
    kind: str  # "sigkill" or "sigterm"
    index: int
    old: str
    healthy_before: bool
    signal_at: float = 0.0
    new: str | None = None
    dhcp_s: dict[str, float] = field(default_factory=dict)  # per client host; TIMED_OUT if none
    dns_s: dict[str, float] = field(default_factory=dict)
    # per client: the first query after the signal that got no answer (the old server is gone); DNS
    # answers count from queries sent after it (the old server answers until it dies or drops the address)
    dns_outage_from_s: dict[str, float | None] = field(default_factory=dict)
    ack_hosts: dict[str, str | None] = field(default_factory=dict)
    steps: dict[str, float | None] = field(default_factory=dict)  # fabricd's log, seconds after the signal
    readdressed: list[str] = field(default_factory=list)
    naks: int = 0
    renewals: dict[str, Json] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def dhcp_all(self) -> float:
        return max(self.dhcp_s.values(), default=TIMED_OUT)

    @property
    def dns_all(self) -> float:
        return max(self.dns_s.values(), default=TIMED_OUT)

    @property
    def dhcp_first(self) -> float:
        return min(self.dhcp_s.values(), default=TIMED_OUT)

    @property
    def dns_first(self) -> float:
        return min(self.dns_s.values(), default=TIMED_OUT)


@dataclass
class CreateRound:
    index: int
    name: str
    host: str
    issued_at: float = 0.0  # monotonic: `lxc init` started
    resolved_s_after_start_returned: float = TIMED_OUT
    resolved_s_after_created_event: float | None = None
    resolved_s_after_init_issued: float = TIMED_OUT
    init_s: float = 0.0
    start_s: float = 0.0
    created_event_after_init_issued_s: float | None = None
    started_event_after_init_issued_s: float | None = None
    # when the authority's files first had the name (seconds after `lxc start` returned)
    files: dict[str, float | None] = field(default_factory=dict)
    address: str | None = None
    notes: list[str] = field(default_factory=list)


class NameWatch:
    """One name asked of the server every 20 ms from a client's namespace until it resolves; and the
    authority's files polled for it at the same pace (where the time goes)."""

    def __init__(self, client: GapClient, name: str, files_root: Path) -> None:
        self.name, self.fqdn = name, f"{name}.{DOMAIN}"
        self.files_root = files_root
        lease = client.lease
        if lease is None:
            raise RuntimeError("the client has no lease")

        def udp() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((lease, 0))
            sock.settimeout(0.02)
            return sock

        self.sock = in_netns(client.netns, udp)
        self.resolved: tuple[float, str] | None = None
        self.files: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def __enter__(self) -> NameWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def wait(self, timeout: float) -> tuple[float, str] | None:
        deadline = time.monotonic() + timeout
        while self.resolved is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.resolved

    def _run(self) -> None:
        ident = 0
        sent: dict[int, float] = {}
        while not self._stop.is_set() and self.resolved is None:
            began = time.monotonic()
            ident = (ident + 1) & 0xFFFF
            sent[ident] = began
            with contextlib.suppress(OSError):
                self.sock.sendto(dns_query(self.fqdn, "A", ident), (SERVER, 53))
            while (left := began + 0.02 - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    message = self.sock.recv(4096)
                except (TimeoutError, OSError):
                    break
                at = time.monotonic()
                got = struct.unpack("!H", message[:2])[0] if len(message) >= 2 else -1
                answer = parse_dns_answer(message, got) if got in sent else None
                if answer is not None and answer.rcode == 0 and answer.answers:
                    self.resolved = (at, answer.answers[0])
                    break
            self._poll_files()

    def _poll_files(self) -> None:
        for what, file in (("reservation", "hosts.dhcp"), ("lease", "leases"), ("hosts_dns", "hosts.dns")):
            if what in self.files:
                continue
            with contextlib.suppress(OSError):
                text = (self.files_root / file).read_text()
                if any(self.name in line.replace(",", " ").split() for line in text.splitlines()):
                    self.files[what] = time.monotonic()


# --- the bench ----------------------------------------------------------------------------------------


class AuthorityBench:
    """The cluster lab's bench; `hosts` and `round_timeout` let a lab of other hosts reuse the rounds."""

    poll_s = 0.05  # how often a round looks at the clients' records (times come from the records)

    def __init__(
        self,
        lab: Lab,
        progress: Progress,
        hosts: tuple[str, ...] = HOSTS,
        round_timeout: float = ROUND_TIMEOUT,
    ) -> None:
        self.lab, self.progress = lab, progress
        self.hosts, self.round_timeout = hosts, round_timeout
        self.h1 = lab.node(hosts[0])
        self.offset = clock_offset()
        self.clients: list[GapClient] = []
        self.instances: dict[str, DhcpClient] = {}
        self.leases: dict[str, str] = {}  # each instance's first lease
        self.created: list[str] = []
        self.counter: OfferCounter | None = None
        self.counter_log: OfferLog | None = None
        self.failovers: list[FailoverRound] = []
        self.creates: list[CreateRound] = []
        self.problems: list[str] = []
        self.started_at = time.monotonic()
        self.measured_until = 0.0
        self.steady_window: tuple[float, float] | None = None
        self.baseline: KeepalivedBaseline | None = None
        self.logs = {h: AgentLog(lab.node(h).log_file("fabricd")) for h in hosts}

    def mono(self, wall: float) -> float:
        return wall - self.offset

    # commands ----------------------------------------------------------------------------------------

    def lxc(self, *args: str, timeout: float = 120) -> str:
        # stdin empty: `lxc init` reads instance YAML from any stdin that is not a terminal
        return self.h1.run(["lxc", *args], input_text="", timeout=timeout).stdout

    def status(self, host: str) -> Json | None:
        with contextlib.suppress(LabError, ValueError):
            result = self.lab.node(host).run(["fabricctl", "status", "--json"], check=False, timeout=15)
            if result.returncode in AGENT_ANSWERS:
                found: Json = json.loads(result.stdout)
                return found
        return None

    def authorities(self) -> dict[str, Json | None]:
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            found = dict(zip(self.hosts, pool.map(self.status, self.hosts), strict=True))
        return {h: (s or {}).get("authority") for h, s in found.items()}

    def agent_pid(self, host: str) -> int:
        pid = self.lab.state().nodes[host].agent_pid
        if pid is None or not netns.alive(pid):
            raise RuntimeError(f"fabricd on {host} is not running")
        return pid

    def files_root(self, host: str) -> Path:
        holder = self.lab.node(host).holder_pid
        if holder is None:
            raise RuntimeError(f"{host} has no holder process")
        return Path(f"/proc/{holder}/root") / DNSMASQ_DIR

    # set-up ------------------------------------------------------------------------------------------

    def agreed_holder(self, need_names: int = 0) -> str | None:
        """The holder every fabricd names, when exactly that host serves and each plan has the names."""
        found = self.authorities()
        holders = {(a or {}).get("holder") for a in found.values()}
        serving = [h for h, a in found.items() if (a or {}).get("role") == "authority"]
        names = [int((a or {}).get("names") or 0) for a in found.values()]
        if len(serving) == 1 and holders == {serving[0]} and min(names) >= need_names:
            return serving[0]
        return None

    def wait_holder(self, timeout: float = 60, need_names: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holder = self.agreed_holder(need_names)
            if holder is not None:
                return holder
            time.sleep(0.3)
        raise TimeoutError(f"no agreed authority within {timeout:g}s: {self.authorities()}")

    def setup(self) -> Json:
        self.progress("waiting for one authority that every fabricd agrees on")
        holder = self.wait_holder()
        self.lxc("config", "set", "cluster.offline_threshold", "11")
        for name, host in INSTANCES.items():
            self.progress(f"creating {name} on {host}; udhcpc with an event script in it")
            self.created.append(name)
            self.lxc("init", "busybox", name, "--target", host, "-p", "default", "-p", "overlay")
            self.lxc("start", name)
            udhcpc = DhcpClient(self.h1, name)
            udhcpc.start()
            self.instances[name] = udhcpc
        leases = {name: client.wait_bound(30).ip for name, client in self.instances.items()}
        self.leases = leases
        self.progress(f"instances bound: {leases}; client namespaces on each host's {BRIDGE}")
        self.start_clients(SERVER, f"{QUERY_INSTANCE}.{DOMAIN}", CLIENT_MACS, COUNTER_HOST)
        self.progress("waiting until every fabricd plans the instances' names and every client is answered")
        holder = self.wait_holder(need_names=len(INSTANCES))
        self.settle(holder)
        return {
            "first_holder": holder,
            "instances": {n: {"host": INSTANCES[n], "address": leases[n]} for n in INSTANCES},
            "clients": {
                c.host: {"namespace": c.netns, "mac": c.mac, "lease": c.lease, "port": f"{c.host}:{c.port}"}
                for c in self.clients
            },
            "query_name": f"{QUERY_INSTANCE}.{DOMAIN}",
        }

    def start_clients(self, server: str, query: str, macs: dict[str, str], counter_host: str) -> None:
        """A client namespace on each host's bridge (a lease, then its DHCP loop to `server` and its
        DNS loop asking for `query`), and the offer counter on `counter_host` with that host's MAC."""
        prefix = namespace_prefix(self.lab.topology.name)
        for index, host in enumerate(self.hosts, 1):
            client = GapClient(prefix, index, host, self.lab.node(host).netns_name, macs[host], OVERLAY_MTU)
            self.clients.append(client)
            client.build(BRIDGE)
        with ThreadPoolExecutor(len(self.clients)) as pool:  # each waits out the 3 s ping check
            list(pool.map(lambda c: c.take_lease(), self.clients))
        for client in self.clients:
            client.start(server, query)
        self.progress(f"offer counter on {counter_host}'s {BRIDGE}, a DISCOVER every {COUNTER_INTERVAL:g}s")
        node = self.lab.node(counter_host)
        self.counter = OfferCounter(node, macs[counter_host], BRIDGE, COUNTER_INTERVAL)

    def healthy(self, holder: str, now: float) -> list[str]:
        """What is not answered by the holder right now (empty: every loop works)."""
        missing = []
        for client in self.clients:
            records = client.snapshot(now - 2 * FRESH)
            ack, dns = last_before(records, now + 1)
            if ack is None or ack.at < now - FRESH or ack.host != holder:
                missing.append(f"{client.host}: DHCP (last ack {_describe_ack(ack, now)})")
            if dns is None or dns.at < now - FRESH:
                missing.append(f"{client.host}: DNS")
            if client.errors:
                missing.append(f"{client.host}: loop failed: {client.errors[-1]}")
        return missing

    def settle(self, holder: str | None = None, timeout: float = SETTLE_TIMEOUT) -> tuple[str, bool]:
        """Until every fabricd agrees on the holder and every client's loops are answered by it."""
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            holder = self.agreed_holder()
            if holder is not None:
                missing = self.healthy(holder, time.monotonic())
                if not missing:
                    return holder, True
            time.sleep(0.3)
        self.problems.append(f"not settled within {timeout:g}s: holder {holder}, missing {missing}")
        return holder or self.wait_holder(), False

    # the rounds --------------------------------------------------------------------------------------

    def failover(self, kind: str, index: int) -> FailoverRound:
        old, healthy = self.settle()
        round_ = FailoverRound(kind, index, old, healthy)
        offsets = {h: log.offset() for h, log in self.logs.items()}
        pid = self.agent_pid(old)
        signum = signal.SIGKILL if kind == "sigkill" else signal.SIGTERM
        t0 = time.monotonic()
        os.kill(pid, signum)
        round_.signal_at = t0
        exited: float | None = None
        deadline = t0 + self.round_timeout
        answered_all = False
        while time.monotonic() < deadline and not (answered_all and exited is not None):
            time.sleep(self.poll_s)
            if exited is None and not netns.alive(pid):
                exited = time.monotonic()
            answered_all = answered_all or self._all_answered(t0, old, time.monotonic())
        time.sleep(0.3)  # replies still on their way count; an outage needs 0.2 s of silence to be seen
        if exited is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # a SIGTERM it did not obey in ROUND_TIMEOUT
            round_.notes.append(
                f"fabricd on {old} had not exited {self.round_timeout:g}s after {kind}: SIGKILLed"
            )
        reap(pid)
        self._gaps(round_, t0)
        round_.steps = self._steps(round_, offsets, t0, exited)
        self._renewals(round_, t0)
        dhcp = f"{_fmt(round_.dhcp_first)}..{_fmt(round_.dhcp_all)}"
        dns = f"{_fmt(round_.dns_first)}..{_fmt(round_.dns_all)}"
        moved = len(round_.readdressed)
        self.progress(f"{kind} {index + 1}: {old} -> {round_.new}: DHCP {dhcp}, DNS {dns}; moved {moved}")
        self.after_failover(round_)
        self.failovers.append(round_)
        return round_

    def after_failover(self, round_: FailoverRound) -> None:
        """The stopped agent starts again, as a standby (the standalone bench times it taking back)."""
        restart_agent(self.lab, round_.old)

    def _all_answered(self, t0: float, old: str, now: float) -> bool:
        for client in self.clients:
            records = client.snapshot(t0 - 1)
            if first_ack(records, t0, now, old) is None:
                return False
            outage = dns_outage(records, t0, now)
            if outage is None or first_dns(records, outage, now, answered) is None:
                return False
        return True

    def _gaps(self, round_: FailoverRound, t0: float) -> None:
        until = t0 + self.round_timeout
        hosts: set[str] = set()
        for client in self.clients:
            records = client.snapshot()
            ack = first_ack(records, t0, until, round_.old)
            outage = dns_outage(records, t0, until)
            dns = first_dns(records, outage, until, answered) if outage is not None else None
            round_.dhcp_s[client.host] = ack.at - t0 if ack is not None else TIMED_OUT
            round_.dns_s[client.host] = dns.at - t0 if dns is not None else TIMED_OUT
            round_.dns_outage_from_s[client.host] = round(outage - t0, 4) if outage is not None else None
            round_.ack_hosts[client.host] = ack.host if ack is not None else None
            if outage is None:
                round_.notes.append(f"{client.host}: no DNS query went unanswered after the signal")
            if ack is not None and ack.host:
                hosts.add(ack.host)
            self._moved(round_, client, records, t0)
        round_.new = hosts.pop() if len(hosts) == 1 else None
        if hosts:
            round_.notes.append(f"first ACKs came from several hosts: {sorted(hosts | {round_.new or ''})}")

    @staticmethod
    def _moved(round_: FailoverRound, client: GapClient, records: Records, t0: float) -> None:
        """NAKs to the client's REQUESTs sent from t0 on, and ACKs with another address than its lease."""
        after = [r for r in records.dhcp if r.at >= t0 and records.dhcp_sent.get(r.xid, 0.0) >= t0]
        round_.naks += sum(1 for r in after if r.kind == "nak")
        moved = sorted({r.yiaddr for r in after if r.kind == "ack" and r.yiaddr != client.lease})
        if moved:
            round_.readdressed.append(f"{client.netns} ({client.lease}) was given {', '.join(moved)}")

    def _steps(self, round_: FailoverRound, offsets: dict[str, int], t0: float, exited: float | None) -> Json:
        def after(host: str | None, event: str) -> float | None:
            if host is None:
                return None
            wall = self.logs[host].first(offsets[host], event)
            return round(self.mono(wall) - t0, 4) if wall is not None else None

        steps: Json = {
            "old_exited_s": round(exited - t0, 4) if exited is not None else None,
            "new_took_lease_s": after(round_.new, "authority taken"),
            "new_claimed_address_s": after(round_.new, "server address claimed"),
            "new_dnsmasq_serving_s": after(round_.new, "dnsmasq serving"),
        }
        serving = steps["new_dnsmasq_serving_s"]
        first = round_.dhcp_first
        steps["first_ack_after_dnsmasq_serving_s"] = (
            round(first - serving, 4) if serving is not None and first != TIMED_OUT else None
        )
        if round_.kind == "sigterm":
            steps["old_released_address_s"] = after(round_.old, "server address released")
            steps["old_freed_record_s"] = after(round_.old, "authority released")
        return steps

    def _renewals(self, round_: FailoverRound, t0: float) -> None:
        """Every instance's udhcpc renews (SIGUSR1) with the new authority; its address must stay the one
        it was first given (read from udhcpc's own events, never from a command that may fail)."""

        def renew(item: tuple[str, DhcpClient]) -> tuple[str, Json]:
            name, client = item
            began = time.monotonic()
            try:
                events = read_events(client)
                before = next((e.ip for e in reversed(events) if e.got_address), None)
                if not client.send_signal(signal.SIGUSR1):
                    raise LabError(f"udhcpc in {name} has exited")
                new = wait_new_address(client, len(events), RENEW_TIMEOUT)
            except (TimeoutError, LabError) as failure:
                return name, {"first_lease": self.leases[name], "after": None, "error": str(failure)}
            return name, {
                "first_lease": self.leases[name],
                "before": before,
                "after": new[-1].ip,
                "renew_s": round(time.monotonic() - began, 3),
                "events": [e.event for e in new],
            }

        with ThreadPoolExecutor(len(self.instances)) as pool:
            for name, result in pool.map(renew, self.instances.items()):
                round_.renewals[name] = result
                if result.get("after") is None:
                    round_.notes.append(f"{name}: renewal failed: {result.get('error')}")
                elif result["after"] != result["first_lease"]:
                    round_.readdressed.append(f"{name}: {result['first_lease']} -> {result['after']}")

    def create(self, index: int, events: LifecycleEvents) -> CreateRound:
        holder, _ = self.settle()
        host = HOSTS[index % len(HOSTS)]
        name = f"bau-n{index + 1}"
        round_ = CreateRound(index, name, host)
        mark = events.mark()
        self.created.append(name)
        with NameWatch(self.clients[0], name, self.files_root(holder)) as watch:
            issued = round_.issued_at = time.monotonic()
            self.lxc("init", "busybox", name, "--target", host, "-p", "default", "-p", "overlay")
            inited = time.monotonic()
            self.lxc("start", name)
            started = time.monotonic()
            resolved = watch.wait(CREATE_TIMEOUT)
            files = dict(watch.files)
        round_.init_s, round_.start_s = round(inited - issued, 4), round(started - inited, 4)
        created = events.wait(("instance-created",), name, mark, 5)
        began = events.wait(("instance-started",), name, mark, 5)
        created_at = self.mono(created.lxd_wall) if created is not None and created.lxd_wall else None
        began_at = self.mono(began.lxd_wall) if began is not None and began.lxd_wall else None
        if created_at is not None:
            round_.created_event_after_init_issued_s = round(created_at - issued, 4)
        if began_at is not None:
            round_.started_event_after_init_issued_s = round(began_at - issued, 4)
        round_.files = {k: round(v - started, 4) for k, v in sorted(files.items())}
        if resolved is None:
            round_.notes.append(f"{name}.{DOMAIN} did not resolve within {CREATE_TIMEOUT:g}s of `lxc start`")
        else:
            at, round_.address = resolved
            round_.resolved_s_after_start_returned = at - started
            round_.resolved_s_after_init_issued = at - issued
            if created_at is not None:
                round_.resolved_s_after_created_event = at - created_at
        self.progress(
            f"create {index + 1}: {name} on {host}: resolves {_fmt(round_.resolved_s_after_start_returned)} "
            f"after `lxc start` returned (files: {round_.files})"
        )
        self.lxc("delete", "--force", name)
        self.created.remove(name)
        self.creates.append(round_)
        return round_

    # the offer counter and the end -------------------------------------------------------------------

    def end_measurement(self) -> None:
        """fabricd's part is over: the counter stops; the client loops go on (for the baseline)."""
        self.measured_until = time.monotonic()
        if self.counter is not None:
            self.counter_log = self.counter.finish()
            self.counter = None

    def finish(self) -> None:
        if self.measured_until == 0.0:
            self.end_measurement()
        for client in self.clients:
            client.stop()

    def teardown(self) -> Json:
        left: Json = {}
        self.finish()
        client_left: list[str] = []
        for client in self.clients:
            with contextlib.suppress(Exception):
                client_left += client.remove()
        left["client_namespaces"] = client_left
        left["instances"] = self.remove_instances()
        return left

    def remove_instances(self) -> list[str]:
        """Delete the instances the bench created (through h1: one cluster); the ones left."""
        for name in reversed(self.created):
            with contextlib.suppress(LabError):
                self.h1.run(["lxc", "delete", "--force", name], input_text="", check=False, timeout=90)
        with contextlib.suppress(LabError):
            listed = self.h1.run(["lxc", "list", "--format", "csv", "-c", "n"], input_text="", check=False)
            return [n for n in listed.stdout.split() if n.startswith("bau-")]
        return ["? (lxc list failed)"]

    def all_replies(self) -> list[tuple[str, Records]]:
        """Every client's records of fabricd's part: from the end of the set-up to its end."""
        found = []
        for client in self.clients:
            records = client.snapshot(self.started_at)
            until = self.measured_until or time.monotonic()
            records.dhcp = [r for r in records.dhcp if r.at < until]
            records.dhcp_sent = {x: t for x, t in records.dhcp_sent.items() if t < until}
            records.dns = [r for r in records.dns if r.at < until]
            found.append((client.host, records))
        return found


def readdressed_section(rounds: list[FailoverRound], instances: str = "bau-a/b/c") -> Json:
    """Clients whose address changed across the rounds (instances' renewals, client namespaces' ACKs)."""
    details = [f"{r.kind} {r.index}: {d}" for r in rounds for d in r.readdressed]
    renewals = [v for r in rounds for v in r.renewals.values()]
    failed = [
        f"{r.kind} {r.index}: {n}" for r in rounds for n, v in r.renewals.items() if v.get("after") is None
    ]
    renew_s = [float(v["renew_s"]) for v in renewals if v.get("renew_s") is not None]
    dropped = [
        f"{r.kind} {r.index}: {name}: {' '.join(renewal['events'])}"
        for r in rounds
        for name, renewal in r.renewals.items()
        if {"deconfig", "nak"} & set(renewal.get("events", ()))
    ]
    return {
        "count": len(details),
        "goal": {"max": 0},
        "meets_goal": not details and not failed,
        "details": details,
        "instance_renewals": len(renewals),
        "instance_renewals_failed": failed,
        "instance_renewals_dropping_the_address_on_the_way": dropped,
        "instance_renew_s": distribution(renew_s) if renew_s else None,
        "client_namespace_naks": sum(r.naks for r in rounds),
        "what": f"instances {instances} renew by SIGUSR1 after every failover and handover (udhcpc "
        "unicasts a REQUEST to the server); the client namespaces' REQUESTs after the signal must all "
        "be ACKed with their lease. Any other address, or a renewal that never completes, misses the "
        "goal. A renewal that went through deconfig (udhcpc gave up, dropped the address, and got the "
        "same one again by DISCOVER) is listed apart: the address did not change, but the instance was "
        "without it briefly",
    }


def read_events(client: DhcpClient) -> list[LeaseEvent]:
    """udhcpc's event file in the instance, read from the machine (no `lxc exec` that may hang)."""
    return client.events()


def wait_new_address(client: DhcpClient, seen: int, timeout: float) -> list[LeaseEvent]:
    """The events after the first `seen`, up to the first that gives an address."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(LabError):
            events = read_events(client)[seen:]
            index = next((i for i, e in enumerate(events) if e.got_address), None)
            if index is not None:
                return events[: index + 1]
        time.sleep(0.1)
    raise TimeoutError(f"{client.instance}: no address from udhcpc within {timeout:g}s of SIGUSR1")


def _describe_ack(ack: DhcpReply | None, now: float) -> str:
    if ack is None:
        return "none"
    return f"{now - ack.at:.2f}s ago from {ack.host}"


def _fmt(value: float) -> str:
    return "timed out" if value == TIMED_OUT else f"{value:.3f}s"


def round_json(r: FailoverRound) -> Json:
    """One failover round as the report shows it (seconds per client; null for a timeout)."""
    return {
        "round": r.index,
        "old": r.old,
        "new": r.new,
        "settled_before": r.healthy_before,
        "dhcp_ack_s": seconds_by_host(r.dhcp_s),
        "dns_answer_s": seconds_by_host(r.dns_s),
        "dns_outage_from_s": r.dns_outage_from_s,
        "first_ack_hosts": r.ack_hosts,
        "steps": r.steps,
        "naks": r.naks,
        "readdressed": r.readdressed,
        "renewals": r.renewals,
        "notes": r.notes,
    }


def seconds_by_host(values: dict[str, float]) -> dict[str, float | None]:
    """Seconds per host, rounded; null for a timeout."""
    return {h: round(v, 4) if math.isfinite(v) else None for h, v in values.items()}
