"""DHCP and DNS clients for lab tests and benchmarks on an overlay served by fabricd's authority.

- `DhcpClient`: busybox udhcpc inside an LXD instance (started by `lxc exec` on any lab node that is
  a cluster member), in the background with a script that applies the lease and appends each
  event (bound, renew, deconfig, leasefail, nak) to a file in the instance; renew is SIGUSR1.
  Signals and event reads go from the machine (the udhcpc's host PID, the instance's root under
  /proc), not through `lxc exec`: one `lxc exec kill -USR1` hung for 30 s in CI, and a repeated
  SIGUSR1 would have made udhcpc start over.
- `nslookup`: busybox nslookup inside an instance, forward or reverse, parsed.
- `OfferCounter`: runs in a lab node for as long as a test likes, sends a DHCP DISCOVER with the
  broadcast flag on the node's bridge every `interval` and records every OFFER it sees (its own
  and anyone's broadcast ones) with the serving host from fabricd's option 224. `OfferLog` says
  which hosts answered each DISCOVER: two hosts for one DISCOVER means two servers at once.
- `DnsWatch`: runs in an instance's network namespace (nsenter from its node) and sends one DNS query every
  `interval`, recording answers and silences: the DNS gap of a failover.

Timestamps are wall-clock (`time.time()`): every lab process shares the machine's clock, so times
from different nodes compare. Instance events carry `/proc/uptime` (busybox `date` has no
sub-second format), turned into wall time with the machine's boot-time offset.

`python -m fabric_lab.dhcp_clients count-offers|watch-dns ...` is what the two long-running
watchers execute inside a node; they print one JSON object per line.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fabric_lab.node import LabError, NodeRuntime

_T = TypeVar("_T")

STATE_DIR = "/run"  # inside the instance; the busybox image has it (and the script names it)
SCRIPT = f"{STATE_DIR}/fabric-lab-udhcpc.script"
# udhcpc's -A (busybox default 20 s): short enough to retry DISCOVERs soon, long enough for a
# SIGUSR1 renewal, which busybox caps at -A (with -A 1 it gave up before any answer came).
RETRY_WAIT = 10
# Applies the lease like the image's own script and records the event; values with spaces (several
# DNS servers or routers) are joined with commas so every field stays one word.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" scope global; ip link set "$interface" up ;;
  bound)
    for old in $(ip -4 -o addr show dev "$interface" scope global | awk '{print $4}'); do
      [ "$old" = "$ip/${mask:-24}" ] || ip addr del "$old" dev "$interface"
    done
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu" ;;
  renew)
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu" ;;
esac
read -r up _ < /proc/uptime
echo "$1 up=$up ip=$ip mask=$mask mtu=$mtu hostname=$hostname dns=${dns// /,} domain=$domain \
router=${router// /,} serverid=$serverid lease=$lease" >> "/run/fabric-lab-udhcpc.$interface.events"
exit 0
"""


def boot_offset() -> float:
    """time.time() minus the machine's boot time clock: /proc/uptime + this is wall time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def wait_for(check: Callable[[], _T | None], timeout: float, what: str, poll: float = 0.1) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


# ---- udhcpc in an instance -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """One line of the client's event file: what udhcpc told its script."""

    event: str  # bound, renew, deconfig, leasefail, nak
    ip: str = ""
    serverid: str = ""
    hostname: str = ""
    mtu: str = ""
    dns: str = ""
    domain: str = ""
    lease: str = ""
    at: float | None = None  # wall time, from the instance's /proc/uptime (10 ms resolution)

    @property
    def got_address(self) -> bool:
        return self.event in ("bound", "renew") and bool(self.ip)


def parse_events(text: str, offset: float) -> list[LeaseEvent]:
    """The event file's lines; `offset` turns uptime into wall time (see `boot_offset`)."""
    events = []
    for line in text.splitlines():
        event, *pairs = line.split()
        fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        at = None
        with contextlib.suppress(KeyError, ValueError):
            at = float(fields["up"]) + offset
        names = ("ip", "serverid", "hostname", "mtu", "dns", "domain", "lease")
        events.append(LeaseEvent(event, **{k: fields.get(k, "") for k in names}, at=at))
    return events


def lxc_exec(
    node: NodeRuntime,
    instance: str,
    command: Sequence[str],
    *,
    project: str = "default",
    input_text: str | None = None,
    timeout: float = 30,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    # No terminal, and no stdin unless there is input: fewer ways for LXD to keep the session open.
    argv = ["lxc", "exec", "-T", *(["-n"] if input_text is None else []), instance, "--project", project]
    return node.run([*argv, "--", *command], input_text=input_text, timeout=timeout, check=check)


def lxc_read(
    node: NodeRuntime, instance: str, command: Sequence[str], *, project: str = "default", timeout: float = 30
) -> str:
    """A read-only command's stdout; run once more when `lxc exec` failed or never returned (LXD
    under load), never more, so a command that really fails still fails."""
    reason = ""
    for _ in range(2):
        try:
            result = lxc_exec(node, instance, command, project=project, check=False, timeout=timeout)
        except LabError as hung:
            reason = str(hung)
            continue
        if result.returncode == 0:
            return result.stdout
        reason = f"exited {result.returncode}: {result.stderr.strip()[-200:]}"
    raise LabError(f"node {node.name}: {' '.join(command)} in {instance} failed twice, last: {reason}")


def add_macvlan(
    node: NodeRuntime, instance: str, name: str, mac: str, *, parent: str = "eth0", project: str = "default"
) -> None:
    """A macvlan on the instance's NIC with a MAC LXD does not know: a dynamic DHCP client's interface.

    Frames leave through the instance's own NIC, so the client sits where the instance does.
    """
    # Two interfaces in one subnet: each must answer ARP only for its own addresses, or the server's
    # reply to this client's address may go to the parent's MAC, where udhcpc never sees it.
    for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
        lxc_exec(node, instance, ["sysctl", "-qw", f"net.ipv4.conf.all.{key}={value}"], project=project)
    link = ["ip", "link", "add", "link", parent, "name", name, "address", mac, "type", "macvlan", "mode"]
    lxc_exec(node, instance, [*link, "bridge"], project=project)
    lxc_exec(node, instance, ["ip", "link", "set", name, "up"], project=project)


def instance_pid(node: NodeRuntime, instance: str, project: str = "default") -> int:
    """The instance's init PID on the machine (lab nodes share the machine's PID namespace)."""
    path = f"/1.0/instances/{instance}/state?project={project}"
    state = json.loads(node.run(["lxc", "query", path]).stdout)
    pid = int(state.get("pid") or 0)
    if pid <= 0:
        raise LabError(f"instance {project}/{instance} is not running")
    return pid


@dataclass
class DhcpClient:
    """busybox udhcpc on one interface of one instance, recording its events.

    `node` runs `lxc`: any cluster member that can reach the instance's member (the member itself
    when the others may be cut off). Starting stops every udhcpc already on that interface (the
    image starts one at boot) by PID.
    """

    node: NodeRuntime
    instance: str
    project: str = "default"
    interface: str = "eth0"
    pid: int | None = None  # udhcpc's PID inside the instance
    _offset: float = field(default_factory=boot_offset)
    _host_pid: int | None = None  # the same process seen from the machine
    _init_pid: int | None = None

    @property
    def events_file(self) -> str:
        return f"{STATE_DIR}/fabric-lab-udhcpc.{self.interface}.events"

    @property
    def pid_file(self) -> str:
        return f"{STATE_DIR}/fabric-lab-udhcpc.{self.interface}.pid"

    def exec(
        self, *command: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return lxc_exec(self.node, self.instance, command, project=self.project, check=check, timeout=timeout)

    def start(self, *extra: str, requested: str | None = None, retry_wait: int = RETRY_WAIT) -> None:
        """udhcpc in the background (-f under start-stop-daemon, so `lxc exec` returns at once).

        `extra` goes to udhcpc as is (e.g. "-x", "hostname:x"); `requested` asks for an address.
        DISCOVERs go out every second for 10 s: a new address costs the server a 3 s ping check,
        two when the first is taken (a round shorter than that never sees the OFFER).
        `retry_wait` is udhcpc's -A: the pause after a round of DISCOVERs that got no lease, and
        also how long a SIGUSR1 renewal keeps asking before it gives the address up (see `renew`).
        The event file starts empty.
        """
        self.kill_others()
        # The text goes as an argument: `lxc exec` with data on stdin sometimes never sees its end.
        self.exec("sh", "-c", 'printf "%s" "$1" > "$0" && chmod 755 "$0"', SCRIPT, UDHCPC_SCRIPT)
        self.exec("rm", "-f", self.events_file, self.pid_file)
        udhcpc = ["-f", "-i", self.interface, "-s", SCRIPT, "-t", "10", "-T", "1", "-A", str(retry_wait)]
        udhcpc += ["-O", "mtu"]
        if requested is not None:
            udhcpc += ["-r", requested]
        self.exec(
            "start-stop-daemon", "-S", "-b", "-m", "-p", self.pid_file, "-x", "/bin/udhcpc", "--",
            *udhcpc, *extra,
        )  # fmt: skip
        self.pid = wait_for(self._read_pid, 10, f"udhcpc's pid file in {self.instance}")
        self._host_pid = wait_for(
            self._find_host_pid, 10, f"udhcpc {self.pid} of {self.instance} on the machine"
        )

    def _read_pid(self) -> int | None:
        out = self._read_file(self.pid_file).strip()
        return int(out) if out.isdigit() else None

    def _root(self) -> str:
        """The instance's root directory as the machine sees it (lab nodes share its PID namespace)."""
        if self._init_pid is None or not os.path.exists(f"/proc/{self._init_pid}/root"):
            self._init_pid = instance_pid(self.node, self.instance, self.project)
        return f"/proc/{self._init_pid}/root"

    def _read_file(self, path: str) -> str:
        """A file in the instance, read from the machine; "" when it does not exist (yet)."""
        try:
            with open(self._root() + path, encoding="utf-8", errors="replace") as file:
                return file.read()
        except FileNotFoundError:
            return ""

    def _find_host_pid(self) -> int | None:
        """The machine's PID of the process that is `self.pid` in the instance's PID namespace."""
        self._root()
        namespace = os.readlink(f"/proc/{self._init_pid}/ns/pid")
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and self._is_ours(int(entry.name), namespace):
                return int(entry.name)
        return None

    def _is_ours(self, host_pid: int, namespace: str | None = None) -> bool:
        try:
            if namespace is not None and os.readlink(f"/proc/{host_pid}/ns/pid") != namespace:
                return False
            with open(f"/proc/{host_pid}/status", encoding="ascii") as file:
                nspid = next((line.split()[1:] for line in file if line.startswith("NSpid:")), [])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        return len(nspid) > 1 and nspid[-1] == str(self.pid)

    def send_signal(self, number: int) -> bool:
        """Signal this client's udhcpc from the machine; False when it has exited."""
        if self.pid is None or self._host_pid is None:
            raise LabError(f"udhcpc in {self.instance} was not started by this client")
        if not self._is_ours(self._host_pid):  # exited (and its PID maybe reused)
            return False
        os.kill(self._host_pid, number)
        return True

    def kill_others(self) -> list[int]:
        """Stop every udhcpc in the instance that serves this interface (by PID): two would fight."""
        pids = [int(p) for p in self.exec("pidof", "udhcpc", check=False).stdout.split() if p.isdigit()]
        mine = []
        for pid in pids:
            argv = self.exec("cat", f"/proc/{pid}/cmdline", check=False).stdout.split("\0")
            interface = argv[argv.index("-i") + 1] if "-i" in argv[:-1] else "eth0"
            if interface == self.interface:
                mine.append(pid)
        if mine:
            self.exec("kill", *map(str, mine), check=False)
        return mine

    def events(self) -> list[LeaseEvent]:
        return parse_events(self._read_file(self.events_file), self._offset)

    def wait_event(
        self, accept: Callable[[LeaseEvent], bool], *, after: int = 0, timeout: float = 20
    ) -> tuple[int, LeaseEvent]:
        """The first event at index >= `after` that `accept` takes, and its index."""

        def found() -> tuple[int, LeaseEvent] | None:
            events = self.events()
            return next(((i, e) for i, e in enumerate(events) if i >= after and accept(e)), None)

        return wait_for(found, timeout, f"a udhcpc event in {self.instance}", poll=0.1)

    def wait_bound(self, timeout: float = 20) -> LeaseEvent:
        return self.wait_event(lambda e: e.got_address, timeout=timeout)[1]

    def renew(self, timeout: float = 20) -> list[LeaseEvent]:
        """SIGUSR1, and every event up to the next address.

        busybox 1.35 caps a SIGUSR1 renewal at its -A time: it broadcasts REQUESTs for its
        address (RFC 2131 REBINDING) at halving intervals over that time, then gives the address
        up (deconfig) and starts over with DISCOVER. Returns the events since the signal, ending
        with the first bound/renew: a deconfig or leasefail on the way means the renewal failed.
        """
        seen = len(self.events())
        if not self.send_signal(signal.SIGUSR1):
            raise LabError(f"udhcpc {self.pid} in {self.instance} has exited; events: {self.events()}")
        index, _ = self.wait_event(lambda e: e.got_address, after=seen, timeout=timeout)
        return self.events()[seen : index + 1]

    def addresses(self) -> list[str]:
        """The interface's global IPv4 addresses, "a.b.c.d/len", as the instance has them now."""
        argv = ("ip", "-4", "-o", "addr", "show", "dev", self.interface, "scope", "global")
        out = self.exec(*argv, check=False).stdout
        return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]

    def address(self) -> str | None:
        """The first global IPv4 address without its prefix length, or None."""
        found = self.addresses()
        return found[0].split("/")[0] if found else None

    def alive(self) -> bool:
        return self.pid is not None and self._host_pid is not None and self._is_ours(self._host_pid)

    def stop(self) -> None:
        """Stop udhcpc without releasing the lease (as a crashed client would)."""
        if self.pid is not None and self._host_pid is not None:
            self.send_signal(signal.SIGTERM)
        self.pid = self._host_pid = None


# ---- DNS from inside an instance -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lookup:
    """What busybox nslookup said: addresses and names (PTR) found, or why none."""

    query: str
    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    error: str | None = None  # NXDOMAIN, timeout, ...
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.addresses or self.names)


def parse_nslookup(query: str, text: str) -> Lookup:
    addresses: list[str] = []
    names: list[str] = []
    error = None
    in_answer = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Name:"):
            in_answer = True
        elif in_answer and line.startswith("Address:"):
            addresses.append(line.split(None, 1)[1].strip())
        elif "name = " in line:
            names.append(line.split("name = ", 1)[1].strip().rstrip("."))
        elif line.startswith("** server can't find") or "timed out" in line or "no servers" in line:
            error = line.rsplit(":", 1)[-1].strip() if line.startswith("**") else line
    if error is None and not addresses and not names:
        error = "no answer"
    return Lookup(query, tuple(addresses), tuple(names), error, text)


def nslookup(
    node: NodeRuntime,
    instance: str,
    query: str,
    server: str,
    *,
    kind: str | None = None,
    project: str = "default",
    timeout: float = 10,
) -> Lookup:
    """busybox nslookup QUERY SERVER inside the instance (an address as QUERY asks for its PTR)."""
    argv = ["timeout", str(int(timeout)), "nslookup"]
    if kind:
        argv.append(f"-type={kind}")
    argv += [query, server]
    try:
        result = lxc_exec(node, instance, argv, project=project, check=False, timeout=timeout + 20)
    except LabError as hung:  # `lxc exec` that never returned (LXD under load): no answer, say why
        return Lookup(query, error=f"lxc exec did not return: {hung}")
    return parse_nslookup(query, result.stdout + result.stderr)


# ---- DNS queries on the wire (for DnsWatch) --------------------------------------------------------

QTYPES = {"A": 1, "PTR": 12, "AAAA": 28}


def dns_query(name: str, qtype: str, ident: int) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return header + labels + b"\x00" + struct.pack("!HH", QTYPES[qtype], 1)


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounded: a compression loop in a bad message ends here
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        offset += 1
        if length == 0:
            break
        labels.append(message[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), end if end is not None else offset


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    rcode: int
    answers: tuple[str, ...]  # addresses (A/AAAA) or names (PTR), in the order given


def parse_dns_answer(message: bytes, ident: int) -> DnsAnswer | None:
    """The answer to query `ident`, or None for anything else (another id, not a response)."""
    if len(message) < 12:
        return None
    got, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", message[:12])
    if got != ident or not flags & 0x8000:
        return None
    offset = 12
    try:
        for _ in range(qdcount):
            _, offset = _read_name(message, offset)
            offset += 4
        answers: list[str] = []
        for _ in range(ancount):
            _, offset = _read_name(message, offset)
            rtype, _, _, length = struct.unpack("!HHIH", message[offset : offset + 10])
            offset += 10
            data = message[offset : offset + length]
            if len(data) != length:
                return None
            if rtype == QTYPES["A"] and length == 4:
                answers.append(str(ipaddress.IPv4Address(data)))
            elif rtype == QTYPES["AAAA"] and length == 16:
                answers.append(str(ipaddress.IPv6Address(data)))
            elif rtype == QTYPES["PTR"]:
                answers.append(_read_name(message, offset)[0])
            offset += length
    except (IndexError, struct.error):
        return None
    return DnsAnswer(flags & 0x0F, tuple(answers))


def resolve(server: str, name: str, qtype: str = "A", timeout: float = 1.0) -> DnsAnswer | None:
    """One UDP query from this network namespace; None when nothing answered in time."""
    ident = secrets.randbits(16)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(dns_query(name, qtype, ident), (server, 53))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                message = sock.recv(4096)
            except TimeoutError:
                return None
            answer = parse_dns_answer(message, ident)
            if answer is not None:
                return answer
    return None


# ---- long-running watchers, as processes in a node -------------------------------------------------


class _LineProcess:
    """A watcher process in a node: JSON lines on stdout, collected by a thread; "ready" first."""

    def __init__(
        self,
        node: NodeRuntime,
        args: Sequence[str],
        what: str,
        ready_timeout: float = 30,
        prefix: Sequence[str] = (),
    ) -> None:
        argv = node.argv([*prefix, sys.executable, "-m", "fabric_lab.dhcp_clients", *args])
        self.what = what
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node.base_env()
        )
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"lines-{what}", daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout):
            self.stop()
            raise LabError(f"{what} did not start: {self._stderr()}")

    def _read(self) -> None:
        if self.process.stdout is None:
            return
        for line in self.process.stdout:
            if line.strip() == "ready":
                self._ready.set()
                continue
            with contextlib.suppress(ValueError), self._lock:
                self.records.append(json.loads(line))
        self._ready.set()  # ended: stop waiting for "ready"

    def _stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "still running"
        return self.process.stderr.read().strip()[-500:]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def stop(self) -> list[dict[str, Any]]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.snapshot()


@dataclass(frozen=True, slots=True)
class Offer:
    """One OFFER seen on a bridge: for which DISCOVER (xid), from which host, when."""

    xid: int
    at: float
    host: str  # option 224; "?" when the server sent none
    server_id: str
    mac: str
    offered: str
    seen_on: str  # the node whose counter saw it
    own: bool  # an answer to this counter's own DISCOVER


@dataclass
class OfferLog:
    """What one or several offer counters saw."""

    probes: dict[int, float] = field(default_factory=dict)  # xid -> wall time sent
    offers: list[Offer] = field(default_factory=list)

    @classmethod
    def from_records(cls, node: str, records: Iterable[dict[str, Any]]) -> OfferLog:
        log = cls()
        for record in records:
            if record.get("kind") == "probe":
                log.probes[int(record["xid"])] = float(record["at"])
            elif record.get("kind") == "offer":
                log.offers.append(
                    Offer(
                        int(record["xid"]), float(record["at"]), str(record["host"] or "?"),
                        str(record["server_id"]), str(record["mac"]), str(record["offered"]), node,
                        bool(record["own"]),
                    )
                )  # fmt: skip
        return log

    @classmethod
    def merged(cls, logs: Iterable[OfferLog]) -> OfferLog:
        out = cls()
        for log in logs:
            out.probes.update(log.probes)
            out.offers += log.offers
        out.offers.sort(key=lambda o: o.at)
        return out

    def per_host(self) -> Counter[str]:
        """OFFERs per serving host, each DISCOVER's answer from a host counted once."""
        return Counter(host for _, host in {(o.xid, o.host) for o in self.offers})

    def hosts_by_xid(self) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for offer in self.offers:
            found.setdefault(offer.xid, set()).add(offer.host)
        return found

    def doubled(self) -> dict[int, set[str]]:
        """DISCOVERs that two or more hosts answered: two servers at once."""
        return {xid: hosts for xid, hosts in self.hosts_by_xid().items() if len(hosts) > 1}

    def from_host(self, host: str, since: float = 0.0, until: float = float("inf")) -> list[Offer]:
        return [o for o in self.offers if o.host == host and since <= o.at < until]

    def answered_probes(self, since: float = 0.0, until: float = float("inf")) -> dict[int, set[str]]:
        """This counter's own DISCOVERs sent in [since, until) and the hosts that answered each."""
        hosts = self.hosts_by_xid()
        return {xid: hosts.get(xid, set()) for xid, at in self.probes.items() if since <= at < until}


class OfferCounter(_LineProcess):
    """Sends a broadcast-flag DISCOVER on `interface` in `node` every `interval` and records OFFERs.

    `mac` is the DISCOVERs' client MAC: give each counter its own. A server answers a client MAC
    it never offered to only after its 3 s ping check, so the first answers after a start or a
    failover come that much later; answers are matched to DISCOVERs by xid, never by time.
    """

    def __init__(
        self, node: NodeRuntime, mac: str, interface: str = "fabric0", interval: float = 0.5
    ) -> None:
        self.node_name = node.name
        args = ["count-offers", interface, mac, "--interval", str(interval)]
        super().__init__(node, args, f"offer counter on {node.name}:{interface}")

    def log(self) -> OfferLog:
        return OfferLog.from_records(self.node_name, self.snapshot())

    def finish(self) -> OfferLog:
        return OfferLog.from_records(self.node_name, self.stop())


@dataclass(frozen=True, slots=True)
class DnsSample:
    at: float  # wall time the query was sent
    answers: tuple[str, ...] | None  # None: no answer within the timeout
    rcode: int | None
    rtt: float | None


class DnsWatch(_LineProcess):
    """One DNS query every `interval` from inside an instance's network namespace, answers recorded.

    Runs as a process in `node` inside the instance's network namespace (nsenter --net by its init
    PID), so it needs no tools inside the instance and measures to the millisecond. `node` must be
    the instance's own member.
    """

    def __init__(
        self,
        node: NodeRuntime,
        instance: str,
        server: str,
        name: str,
        *,
        qtype: str = "A",
        interval: float = 0.1,
        timeout: float = 0.5,
        project: str = "default",
    ) -> None:
        pid = instance_pid(node, instance, project)
        args = ["watch-dns", server, name, "--qtype", qtype, "--interval", str(interval)]
        args += ["--timeout", str(timeout)]
        enter = ["nsenter", f"--target={pid}", "--net", "--"]
        super().__init__(node, args, f"DNS watch in {instance}", prefix=enter)

    def samples(self) -> list[DnsSample]:
        return [
            DnsSample(float(r["at"]), tuple(r["answers"]) if r["answers"] is not None else None,
                      r["rcode"], r["rtt"])
            for r in self.snapshot()
        ]  # fmt: skip


def longest_silence(samples: Sequence[DnsSample], since: float = 0.0) -> tuple[float, float] | None:
    """(first unanswered, next answered) around the longest run of queries with no reply after `since`.

    Any reply ends a silence, NXDOMAIN or an empty answer included: the server answers again.
    """
    best: tuple[float, float] | None = None
    start = None
    for sample in samples:
        if sample.at < since:
            continue
        if sample.answers is None:
            start = sample.at if start is None else start
        elif start is not None:
            if best is None or sample.at - start > best[1] - best[0]:
                best = (start, sample.at)
            start = None
    return best


# ---- the watchers' process side --------------------------------------------------------------------


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _bootp_ids(frame: bytes) -> tuple[int, str] | None:
    """xid and client MAC of a BOOTP message in an IPv4/UDP Ethernet frame (no checks beyond length)."""
    if len(frame) < 14 + 20 + 8 + 34:
        return None
    bootp = 14 + (frame[14] & 0x0F) * 4 + 8
    if len(frame) < bootp + 34:
        return None
    xid = int.from_bytes(frame[bootp + 4 : bootp + 8], "big")
    mac = ":".join(f"{b:02x}" for b in frame[bootp + 28 : bootp + 34])
    return xid, mac


def count_offers(interface: str, mac: str, interval: float) -> None:
    from fabricd.authority.netns_io import ETH_P_IP, packet_socket
    from fabricd.authority.probe import discover_frame, parse_offer

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    own: set[int] = set()
    with packet_socket(interface, ETH_P_IP) as sock:
        discover_frame(mac, 0)  # import scapy before saying ready
        _emit_ready()
        next_probe = time.monotonic()
        while not stopping.is_set():
            now = time.monotonic()
            if now >= next_probe:
                xid = secrets.randbits(32)
                own.add(xid)
                sock.send(bytes(discover_frame(mac, xid)))
                _emit({"kind": "probe", "xid": xid, "at": time.time()})
                next_probe = now + interval
            sock.settimeout(max(0.01, next_probe - time.monotonic()))
            try:
                frame = sock.recv(65535)
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            ids = _bootp_ids(frame)
            seen = parse_offer(frame, ids[1], ids[0]) if ids is not None else None
            if seen is None or ids is None:
                continue
            _emit(
                {
                    "kind": "offer", "xid": ids[0], "at": time.time(), "host": seen.host,
                    "server_id": str(seen.server_id), "mac": seen.mac, "offered": str(seen.offered),
                    "own": ids[0] in own,
                }
            )  # fmt: skip


def watch_dns(server: str, name: str, qtype: str, interval: float, timeout: float) -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    _emit_ready()
    while not stopping.is_set():
        began, at = time.monotonic(), time.time()
        try:
            answer = resolve(server, name, qtype, timeout)
        except OSError:  # no route yet (the instance has no address): a silence like any other
            answer = None
        rtt = round(time.monotonic() - began, 4) if answer is not None else None
        _emit(
            {
                "at": at,
                "answers": list(answer.answers) if answer is not None else None,
                "rcode": answer.rcode if answer is not None else None,
                "rtt": rtt,
            }
        )
        stopping.wait(max(0.0, interval - (time.monotonic() - began)))


def _emit_ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fabric_lab.dhcp_clients")
    commands = parser.add_subparsers(dest="command", required=True)
    offers = commands.add_parser("count-offers", help="DISCOVER every interval, print every OFFER")
    offers.add_argument("interface")
    offers.add_argument("mac")
    offers.add_argument("--interval", type=float, default=0.5)
    dns = commands.add_parser("watch-dns", help="one DNS query every interval (run it under nsenter)")
    dns.add_argument("server")
    dns.add_argument("name")
    dns.add_argument("--qtype", choices=sorted(QTYPES), default="A")
    dns.add_argument("--interval", type=float, default=0.1)
    dns.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.command == "count-offers":
        count_offers(args.interface, args.mac, args.interval)
    else:
        watch_dns(args.server, args.name, args.qtype, args.interval, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
