"""The authority benchmark's clients: a namespace per lab host on that host's fabric0, asking all the time.

Each `GapClient` is a network namespace `fl-<lab>-c<N>` with one veth into host N's bridge (the
port `bcp<N>` in the host's namespace). It takes a lease once with a full DORA, puts the address on
its eth0, and then, until stopped, from threads of this process:
- sends a DHCPREQUEST every `DHCP_EVERY` (INIT-REBOOT: broadcast, broadcast flag, its leased address
  as option 50, no server identifier: the request a client that lost its server sends, answered by
  whichever server is the authority now) and records every reply to its MAC;
- sends a DNS query for one instance name to the server address every `DNS_EVERY`, pipelined (a lost
  query costs nothing but its own slot) and records every answer.
Every send and receive is stamped with this process's `time.monotonic()`: one clock for all. The
sockets are made in the namespace (`fabricd.authority.netns_io`); no thread of ours changes namespace.

The DHCP messages are built and read here by hand (a few dozen bytes), not with scapy, so three clients
at 20 requests a second cost next to nothing. DNS uses `fabric_lab.dhcp_clients`' encoder and reader.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import NetNS

from fabric_lab import netns
from fabric_lab.dhcp_clients import dns_query, parse_dns_answer
from fabricd.authority.dnsmasq_plan import SERVING_HOST_OPTION
from fabricd.authority.netns_io import ETH_P_IP, in_netns, packet_socket, write_sysctl

DHCP_EVERY = 0.05
DNS_EVERY = 0.02
SERVER_PORT, CLIENT_PORT = 67, 68
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
MESSAGE = {DISCOVER: "discover", OFFER: "offer", REQUEST: "request", ACK: "ack", NAK: "nak"}
BROADCAST_MAC = b"\xff" * 6


# --- DHCP on the wire ---------------------------------------------------------------------------------


def _checksum(header: bytes) -> int:
    total = sum(int(word) for word in struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dhcp_frame(
    mac: str, xid: int, kind: int, requested: str | None = None, server: str | None = None
) -> bytes:
    """A client's DHCP message in a broadcast Ethernet frame, with the broadcast flag (RFC 2131 4.1):
    every reply is broadcast too, so it reaches this client whatever the bridges have learnt."""
    raw_mac = bytes.fromhex(mac.replace(":", ""))
    options = bytes((53, 1, kind)) + bytes((61, 7, 1)) + raw_mac
    if requested is not None:
        options += bytes((50, 4)) + ipaddress.IPv4Address(requested).packed
    if server is not None:
        options += bytes((54, 4)) + ipaddress.IPv4Address(server).packed
    options += bytes((55, 5, 1, 6, 15, 26, 54)) + b"\xff"
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                        b"\0" * 4, b"\0" * 4, raw_mac, b"", b"")  # fmt: skip
    payload = bootp + MAGIC + options
    udp = struct.pack("!HHHH", CLIENT_PORT, SERVER_PORT, 8 + len(payload), 0) + payload  # no UDP checksum
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return BROADCAST_MAC + raw_mac + b"\x08\x00" + header + udp


@dataclass(frozen=True, slots=True)
class DhcpReply:
    at: float  # time.monotonic() when it arrived
    xid: int
    kind: str  # "offer", "ack", "nak", or the number
    yiaddr: str
    server_id: str | None
    host: str | None  # the serving host, from fabricd's option 224


def parse_dhcp_reply(frame: bytes, mac: str, at: float) -> DhcpReply | None:
    """A server's reply to the client `mac` in an Ethernet frame, or None for anything else."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    udp = 14 + (frame[14] & 0x0F) * 4
    if frame[udp : udp + 4] != struct.pack("!HH", SERVER_PORT, CLIENT_PORT):
        return None
    bootp = udp + 8
    if frame[bootp] != 2 or frame[bootp + 28 : bootp + 34] != bytes.fromhex(mac.replace(":", "")):
        return None
    if frame[bootp + 236 : bootp + 240] != MAGIC:
        return None
    xid = int.from_bytes(frame[bootp + 4 : bootp + 8], "big")
    yiaddr = str(ipaddress.IPv4Address(frame[bootp + 16 : bootp + 20]))
    options: dict[int, bytes] = {}
    at_option = bootp + 240
    while at_option < len(frame):
        code = frame[at_option]
        if code == 255:
            break
        if code == 0:
            at_option += 1
            continue
        if at_option + 1 >= len(frame):
            break
        length = frame[at_option + 1]
        options.setdefault(code, frame[at_option + 2 : at_option + 2 + length])
        at_option += 2 + length
    kind_byte = options.get(53, b"")
    kind = MESSAGE.get(kind_byte[0], str(kind_byte[0])) if kind_byte else "bootp"
    server = options.get(54)
    host = options.get(SERVING_HOST_OPTION)
    return DhcpReply(
        at,
        xid,
        kind,
        yiaddr,
        str(ipaddress.IPv4Address(server)) if server is not None and len(server) == 4 else None,
        host.decode("ascii", "replace") if host else None,
    )


# --- one client -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsReply:
    at: float
    ident: int
    rcode: int
    answers: tuple[str, ...]


@dataclass
class Records:
    """What one client sent and heard, monotonic times; appended by its threads, read under `lock`."""

    dhcp_sent: dict[int, float] = field(default_factory=dict)  # xid -> sent
    dhcp: list[DhcpReply] = field(default_factory=list)
    dns_sent: dict[int, float] = field(default_factory=dict)  # query id -> sent (ids reused: last send)
    dns: list[DnsReply] = field(default_factory=list)
    dns_sent_order: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class GapClient:
    def __init__(self, lab_prefix: str, index: int, host: str, host_netns: str, mac: str, mtu: int) -> None:
        self.index, self.host, self.host_netns, self.mac, self.mtu = index, host, host_netns, mac, mtu
        self.netns = f"{lab_prefix}c{index}"
        self.port = f"bcp{index}"
        self.lease: str | None = None
        self.lease_server_host: str | None = None
        self.query_name = ""
        self.server = ""
        self.records = Records()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._packet: socket.socket | None = None
        self._udp: socket.socket | None = None
        self.errors: list[str] = []

    # set-up ------------------------------------------------------------------------------------------

    def build(self, bridge: str) -> None:
        """The namespace and its veth into the host's bridge; no address, IPv6 off (nothing but ours)."""
        netns.remove(self.netns)
        netns.create(self.netns)
        netns.add_veth(self.host_netns, self.port, self.netns, "eth0", mtu=self.mtu)
        write_sysctl("ipv6/conf/eth0/disable_ipv6", "1", self.netns)
        with NetNS(self.netns) as ns:
            (eth0,) = ns.link_lookup(ifname="eth0")
            ns.link("set", index=eth0, address=self.mac)
        with NetNS(self.host_netns) as ns:
            (port,) = ns.link_lookup(ifname=self.port)
            (master,) = ns.link_lookup(ifname=bridge)
            ns.link("set", index=port, master=master, state="up")
        self._packet = packet_socket("eth0", ETH_P_IP, self.netns)

    def remove(self) -> list[str]:
        """Close the sockets, delete the port and the namespace; what could not be removed."""
        self.stop()
        for sock in (self._packet, self._udp):
            if sock is not None:
                sock.close()
        self._packet = self._udp = None
        left = []
        with contextlib.suppress(Exception), NetNS(self.host_netns) as ns:
            for index in ns.link_lookup(ifname=self.port):
                ns.link("del", index=index)
        netns.remove(self.netns)
        if netns.exists(self.netns):
            left.append(self.netns)
        return left

    def take_lease(self, timeout: float = 20) -> str:
        """A full DORA (DISCOVER repeated every second: a server pings a new address for 3 s before
        it first offers it), started over after a NAK as RFC 2131 says (dnsmasq can offer one address
        to two clients that ask at once, and NAKs the second REQUEST); the address goes on eth0."""
        sock = self._require_packet()
        deadline = time.monotonic() + timeout
        ack: DhcpReply | None = None
        naks = 0
        while (ack is None or ack.kind != "ack") and time.monotonic() < deadline:
            offer: DhcpReply | None = None
            xid = secrets.randbits(32)
            while offer is None and time.monotonic() < deadline:
                sock.send(dhcp_frame(self.mac, xid, DISCOVER))
                offer = self._await(sock, xid, ("offer",), min(1.0, deadline - time.monotonic()))
            if offer is None or offer.server_id is None:
                raise TimeoutError(f"{self.netns}: no DHCP offer within {timeout:g}s ({naks} NAKs)")
            ack = None
            while ack is None and time.monotonic() < deadline:
                sock.send(dhcp_frame(self.mac, xid, REQUEST, offer.yiaddr, offer.server_id))
                ack = self._await(sock, xid, ("ack", "nak"), min(1.0, deadline - time.monotonic()))
            naks += ack is not None and ack.kind == "nak"
        if ack is None or ack.kind != "ack":
            raise TimeoutError(f"{self.netns}: no DHCP ack within {timeout:g}s ({naks} NAKs, last {ack})")
        self.lease, self.lease_server_host = ack.yiaddr, ack.host
        with NetNS(self.netns) as ns:
            (eth0,) = ns.link_lookup(ifname="eth0")
            ns.addr("add", index=eth0, address=ack.yiaddr, prefixlen=24)
        return ack.yiaddr

    def _await(self, sock: socket.socket, xid: int, kinds: tuple[str, ...], wait: float) -> DhcpReply | None:
        deadline = time.monotonic() + max(0.0, wait)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                frame = sock.recv(4096)
            except TimeoutError:
                return None
            reply = parse_dhcp_reply(frame, self.mac, time.monotonic())
            if reply is not None and reply.xid == xid and reply.kind in kinds:
                return reply
        return None

    def _require_packet(self) -> socket.socket:
        if self._packet is None:
            raise RuntimeError(f"{self.netns} is not built")
        return self._packet

    def _require_udp(self) -> socket.socket:
        if self._udp is None:
            raise RuntimeError(f"{self.netns} was not started")
        return self._udp

    def _require_lease(self) -> str:
        if self.lease is None:
            raise RuntimeError(f"{self.netns} has no lease")
        return self.lease

    # the loops ---------------------------------------------------------------------------------------

    def start(self, server: str, query_name: str) -> None:
        """From now until `stop`: a REQUEST every DHCP_EVERY, a DNS query every DNS_EVERY."""
        if self.lease is None:
            raise RuntimeError(f"{self.netns} has no lease")
        self.server, self.query_name = server, query_name
        lease = self.lease

        def udp() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((lease, 0))
            return sock

        self._udp = in_netns(self.netns, udp)
        self._stop.clear()
        for name, target in (("send", self._send), ("dhcp", self._receive_dhcp), ("dns", self._receive_dns)):
            thread = threading.Thread(target=self._guard(target), name=f"{self.netns}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def _guard(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except Exception as failure:  # recorded: a loop that died must show in the report
                if not self._stop.is_set():
                    self.errors.append(f"{type(failure).__name__}: {failure}")

        return run

    def _send(self) -> None:
        packet, udp, records = self._require_packet(), self._require_udp(), self.records
        lease = self._require_lease()
        server = (self.server, 53)
        next_dhcp = next_dns = time.monotonic()
        ident = secrets.randbits(16)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_dhcp:
                xid = secrets.randbits(32)
                frame = dhcp_frame(self.mac, xid, REQUEST, lease)
                with records.lock:
                    records.dhcp_sent[xid] = time.monotonic()
                with contextlib.suppress(OSError):
                    packet.send(frame)
                next_dhcp += DHCP_EVERY
                if next_dhcp < now:  # late (a busy machine): no burst to catch up
                    next_dhcp = now + DHCP_EVERY
            if now >= next_dns:
                ident = (ident + 1) & 0xFFFF
                query = dns_query(self.query_name, "A", ident)
                sent = time.monotonic()
                with records.lock:
                    records.dns_sent[ident] = sent
                    records.dns_sent_order.append((sent, ident))
                with contextlib.suppress(OSError):  # no route or a full buffer: a lost query
                    udp.sendto(query, server)
                next_dns += DNS_EVERY
                if next_dns < now:
                    next_dns = now + DNS_EVERY
            self._stop.wait(max(0.0, min(next_dhcp, next_dns) - time.monotonic()))

    def _receive_dhcp(self) -> None:
        packet, records = self._require_packet(), self.records
        packet.settimeout(0.2)
        while not self._stop.is_set():
            try:
                frame = packet.recv(4096)
            except TimeoutError:
                continue
            reply = parse_dhcp_reply(frame, self.mac, time.monotonic())
            if reply is not None:
                with records.lock:
                    records.dhcp.append(reply)

    def _receive_dns(self) -> None:
        udp, records = self._require_udp(), self.records
        udp.settimeout(0.2)
        while not self._stop.is_set():
            try:
                message = udp.recv(4096)
            except TimeoutError:
                continue
            at = time.monotonic()
            if len(message) < 12:
                continue
            ident = struct.unpack("!H", message[:2])[0]
            answer = parse_dns_answer(message, ident)
            if answer is not None:
                with records.lock:
                    records.dns.append(DnsReply(at, ident, answer.rcode, answer.answers))

    # reading the records ---------------------------------------------------------------------------

    def snapshot(self, since: float = 0.0) -> Records:
        """A copy to read without the lock; with `since`, only what was sent or arrived after it."""
        with self.records.lock:
            r = self.records
            return Records(
                dhcp_sent={x: t for x, t in r.dhcp_sent.items() if t >= since}
                if since
                else dict(r.dhcp_sent),
                dhcp=[reply for reply in r.dhcp if reply.at >= since],
                dns_sent=dict(r.dns_sent),
                dns=[reply for reply in r.dns if reply.at >= since],
                dns_sent_order=[(t, i) for t, i in r.dns_sent_order if t >= since],
            )


def first_ack(records: Records, since: float, until: float, not_host: str | None = None) -> DhcpReply | None:
    """The first ACK to a REQUEST sent at or after `since`, arriving before `until`, from a host other
    than `not_host` (the authority that was just stopped)."""
    for reply in records.dhcp:
        sent = records.dhcp_sent.get(reply.xid)
        if sent is None or sent < since or reply.at >= until or reply.kind != "ack":
            continue
        if not_host is not None and reply.host == not_host:
            continue
        return reply
    return None


def first_dns(
    records: Records, since: float, until: float, want: Callable[[DnsReply], bool]
) -> DnsReply | None:
    """The first DNS answer `want` accepts to a query sent at or after `since`, before `until`.

    Query ids wrap after 65,536 queries (22 minutes at 20 ms): an id is matched to its latest send."""
    for reply in records.dns:
        sent = records.dns_sent.get(reply.ident)
        if sent is None or sent < since or reply.at >= until or reply.at < sent:
            continue
        if want(reply):
            return reply
    return None


def last_before(records: Records, before: float) -> tuple[DhcpReply | None, DnsReply | None]:
    """The last ACK and the last DNS answer that arrived before `before` (was the loop working?)."""
    ack = next((r for r in reversed(records.dhcp) if r.kind == "ack" and r.at < before), None)
    dns = next((r for r in reversed(records.dns) if r.rcode == 0 and r.answers and r.at < before), None)
    return ack, dns


def dns_outage(records: Records, since: float, now: float, patience: float = 0.2) -> float | None:
    """When the first query sent at or after `since` went unanswered (sent at least `patience` before
    `now`, and no reply within 1 s): the moment the old server stopped answering. None: none yet."""
    replied: dict[int, list[float]] = {}
    for reply in records.dns:
        replied.setdefault(reply.ident, []).append(reply.at)
    for sent, ident in records.dns_sent_order:
        if sent < since:
            continue
        if sent > now - patience:
            return None
        if not any(sent <= at <= sent + 1.0 for at in replied.get(ident, ())):
            return sent
    return None
