"""Second-server detection: a DHCP DISCOVER on the bridge, and every OFFER that answers it.

Each probe sends one DISCOVER from the probe MAC (fixed, derived from the VNI, never the server's)
with the broadcast flag set, so every server broadcasts its OFFER (RFC 2131 4.1) and it reaches
the bridge of every host, the prober's included, whatever host that server runs on. Listening in
promiscuous mode instead would copy every frame on the overlay to the host for the probe's whole
window. Only OFFERs for this probe's transaction and client address are taken.

A probe only ever sends DISCOVERs: no server commits a lease for one, so probing uses no address.
`probe()` blocks for its timeout; the agent runs it in a worker thread, never on the event loop.
`rogue_servers()` is pure: which answers are not the authority's own server.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any

from fabricd.authority.dnsmasq_plan import SERVING_HOST_OPTION
from fabricd.authority.netns_io import ETH_P_IP, packet_socket, require_interface

# Seconds to collect OFFERs after the DISCOVER. dnsmasq pings an address before it first offers it
# to a client and waits 3 s for an answer (measured: the first OFFER to the probe came after 3.02 s,
# later ones after about 10 ms), so a shorter window misses a newly started server's first answer.
PROBE_TIMEOUT = 3.5
SERVER_PORT, CLIENT_PORT = 67, 68
BOOTREPLY = 2
DHCPOFFER = 2
UDP = 17
PROBE_HOSTNAME = b"fabricd-probe"  # shows in a server's log what the DISCOVERs are


@dataclass(frozen=True, slots=True)
class ServerSeen:
    """One server that answered: its server identifier (option 54), source MAC and address.

    `offers` counts identical answers: more than one means several servers answer with one
    identity (two hosts serving with the floating MAC and address, in a split brain).
    """

    server_id: IPv4Address | None
    mac: str
    ip: IPv4Address
    offered: IPv4Address | None = None
    offers: int = 1
    after: float = 0.0  # seconds from the DISCOVER to the first such OFFER
    host: str | None = None  # the serving host, from fabricd's option 224; None from others

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return str(self.server_id), self.mac, str(self.ip), self.host or ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    at: float  # wall-clock time the DISCOVER was sent
    servers: tuple[ServerSeen, ...]
    error: str | None = None  # the probe could not run (or was cut short); `servers` is what it saw
    duration: float = 0.0  # seconds the probe took


def discover_frame(mac: str, xid: int) -> Any:
    """The probe's DISCOVER: broadcast, with the broadcast flag, from `mac`."""
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP
    from scapy.layers.inet import UDP as UDPLayer
    from scapy.layers.l2 import Ether

    raw_mac = bytes.fromhex(mac.replace(":", ""))
    options = [
        ("message-type", "discover"),
        ("client_id", b"\x01" + raw_mac),
        ("hostname", PROBE_HOSTNAME),
        ("param_req_list", [1, 3, 6, 15, 26, 54]),
        "end",
    ]
    return (
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")  # noqa: S104 - a DHCP client has no address yet
        / UDPLayer(sport=CLIENT_PORT, dport=SERVER_PORT)
        / BOOTP(op=1, chaddr=raw_mac, xid=xid, flags=0x8000)
        / DHCP(options=options)
    )


def _might_be_offer(frame: bytes) -> bool:
    """A cheap look at the raw bytes before scapy parses: IPv4, UDP, port 67 to port 68."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != UDP:
        return False
    udp = 14 + (frame[14] & 0x0F) * 4
    ports = frame[udp : udp + 4]
    return ports == SERVER_PORT.to_bytes(2, "big") + CLIENT_PORT.to_bytes(2, "big")


def parse_offer(frame: bytes, mac: str, xid: int) -> ServerSeen | None:
    """The server behind `frame` if it is an OFFER for this probe (`xid`, client `mac`), else None."""
    if not _might_be_offer(frame):
        return None
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    packet = Ether(frame)
    if BOOTP not in packet or DHCP not in packet:
        return None
    bootp = packet[BOOTP]
    ours = bytes(bootp.chaddr)[:6] == bytes.fromhex(mac.replace(":", ""))
    if bootp.op != BOOTREPLY or bootp.xid != xid or not ours:
        return None
    options = {o[0]: o[1] for o in packet[DHCP].options if isinstance(o, tuple) and len(o) >= 2}
    if options.get("message-type") != DHCPOFFER:
        return None
    server_id = options.get("server_id")
    return ServerSeen(
        server_id=IPv4Address(server_id) if server_id else None,
        mac=str(packet[Ether].src).lower(),
        ip=IPv4Address(packet[IP].src),
        offered=IPv4Address(bootp.yiaddr) if bootp.yiaddr != "0.0.0.0" else None,  # noqa: S104
        host=_serving_host(options.get(SERVING_HOST_OPTION)),
    )


def _serving_host(value: object) -> str | None:
    """Option 224 as fabricd's dnsmasq sends it: a short printable name, else nothing."""
    if not isinstance(value, bytes) or not 0 < len(value) <= 63:
        return None
    text = value.decode("ascii", errors="replace")
    return text if text.isprintable() and "\ufffd" not in text else None


def merge_answers(answers: Iterable[ServerSeen]) -> tuple[ServerSeen, ...]:
    """One entry per identity (server id, MAC, address), counting its offers, keeping the first."""
    merged: dict[tuple[str, str, str, str], ServerSeen] = {}
    for seen in answers:
        first = merged.get(seen.identity)
        merged[seen.identity] = seen if first is None else replace(first, offers=first.offers + seen.offers)
    return tuple(sorted(merged.values(), key=lambda s: s.identity))


def probe(
    interface: str, mac: str, *, timeout: float = PROBE_TIMEOUT, netns: str | None = None
) -> ProbeResult:
    """One DISCOVER on `interface`, then every OFFER for `timeout` seconds. Blocks.

    What the network does is reported in `error`, never raised; only a caller's mistake (no
    interface name) raises.
    """
    require_interface(interface)
    xid = secrets.randbits(32)
    frame = bytes(discover_frame(mac, xid))
    at, start = time.time(), time.monotonic()
    answers: list[ServerSeen] = []
    error: str | None = None
    try:
        with packet_socket(interface, ETH_P_IP, netns) as sock:
            sock.send(frame)
            deadline = start + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    received = sock.recv(65535)
                except TimeoutError:
                    break
                seen = parse_offer(received, mac, xid)
                if seen is not None:
                    answers.append(replace(seen, after=round(time.monotonic() - start, 4)))
    except OSError as failure:
        error = f"DHCP probe on {interface}: {failure.strerror or failure}"
    return ProbeResult(at, merge_answers(answers), error, round(time.monotonic() - start, 4))


def is_ours(seen: ServerSeen, our_server_mac: str, our_server_ip: IPv4Address) -> bool:
    """The authority's own server: the floating MAC and the floating address as server identifier."""
    server_id = seen.server_id if seen.server_id is not None else seen.ip
    return seen.mac == our_server_mac.lower() and server_id == our_server_ip


def rogue_servers(
    result: ProbeResult, our_server_mac: str, our_server_ip: IPv4Address
) -> tuple[ServerSeen, ...]:
    """Every answer in `result` that is not the authority's own server."""
    return tuple(s for s in result.servers if not is_ours(s, our_server_mac, our_server_ip))
