"""The DHCP probe's pure parts on hand-built packets: the DISCOVER, reading OFFERs, rogue servers."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from fabricd.authority.macs import probe_mac, server_mac
from fabricd.authority.probe import (
    ProbeResult,
    ServerSeen,
    discover_frame,
    merge_answers,
    parse_offer,
    probe,
    rogue_servers,
)

PROBE = probe_mac(100)
OURS = server_mac(100)
OUR_IP = IPv4Address("10.200.0.1")
XID = 0x1234ABCD


def reply(
    src_mac: str = OURS,
    src_ip: str = "10.200.0.1",
    *,
    xid: int = XID,
    chaddr: str = PROBE,
    kind: str = "offer",
    server_id: str | None = "10.200.0.1",
    op: int = 2,
    yiaddr: str = "10.200.0.150",
) -> bytes:
    options: list[Any] = [("message-type", kind)]
    if server_id is not None:
        options.append(("server_id", server_id))
    options += [("lease_time", 3600), "end"]
    packet = (
        Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=src_ip, dst="255.255.255.255")
        / UDP(sport=67, dport=68)
        / BOOTP(op=op, xid=xid, yiaddr=yiaddr, chaddr=bytes.fromhex(chaddr.replace(":", "")), flags=0x8000)
        / DHCP(options=options)
    )
    return bytes(packet)


def test_discover_is_a_broadcast_dhcp_discover_from_the_probe_mac() -> None:
    parsed = Ether(bytes(discover_frame(PROBE, XID)))
    assert (parsed.src, parsed.dst) == (PROBE, "ff:ff:ff:ff:ff:ff")
    assert (parsed[IP].src, parsed[IP].dst) == ("0.0.0.0", "255.255.255.255")  # noqa: S104
    assert (parsed[UDP].sport, parsed[UDP].dport) == (68, 67)
    bootp = parsed[BOOTP]
    # The broadcast flag: every server broadcasts its offer.
    assert (bootp.op, bootp.xid, bootp.flags) == (1, XID, 0x8000)
    assert bytes(bootp.chaddr)[:6] == bytes.fromhex(PROBE.replace(":", ""))
    options = dict(o for o in parsed[DHCP].options if isinstance(o, tuple))
    assert options["message-type"] == 1


def test_an_offer_for_this_probe_names_its_server() -> None:
    seen = parse_offer(reply(), PROBE, XID)
    assert seen == ServerSeen(OUR_IP, OURS, OUR_IP, IPv4Address("10.200.0.150"))


def test_an_offer_without_server_identifier_still_counts() -> None:
    seen = parse_offer(reply("02:00:00:00:00:99", "10.200.0.77", server_id=None), PROBE, XID)
    assert seen is not None and seen.server_id is None and seen.ip == IPv4Address("10.200.0.77")


@pytest.mark.parametrize(
    "frame",
    [
        reply(xid=XID + 1),  # someone else's transaction
        reply(chaddr="02:00:00:00:00:01"),  # another client
        reply(kind="ack"),
        reply(kind="nak"),
        reply(op=1),  # a request, not a reply
        reply()[:40],  # cut short
        bytes(Ether() / IP(src="10.200.0.1") / TCP(sport=67, dport=68)),
        bytes(Ether() / IP(src="10.200.0.1") / UDP(sport=68, dport=67) / BOOTP(op=2, xid=XID)),
        bytes(Ether(type=0x0806) / (b"\x00" * 40)),
    ],
)
def test_anything_else_is_not_an_offer(frame: bytes) -> None:
    assert parse_offer(frame, PROBE, XID) is None


def test_identical_answers_are_merged_and_counted() -> None:
    ours = ServerSeen(OUR_IP, OURS, OUR_IP, after=0.01)
    rogue = ServerSeen(IPv4Address("10.200.0.9"), "02:00:00:00:00:09", IPv4Address("10.200.0.9"), after=0.02)
    merged = merge_answers([ours, rogue, ServerSeen(OUR_IP, OURS, OUR_IP, after=0.5)])
    assert merged == (ServerSeen(OUR_IP, OURS, OUR_IP, offers=2, after=0.01), rogue)


def test_rogue_servers_are_the_answers_that_are_not_ours() -> None:
    ours = ServerSeen(OUR_IP, OURS, OUR_IP)
    other = ServerSeen(IPv4Address("10.200.0.9"), "02:00:00:00:00:09", IPv4Address("10.200.0.9"))
    our_ip_other_mac = ServerSeen(OUR_IP, "02:00:00:00:00:0a", OUR_IP)
    our_mac_other_id = ServerSeen(IPv4Address("10.200.0.2"), OURS, OUR_IP)
    no_id_but_ours = ServerSeen(None, OURS, OUR_IP)
    result = ProbeResult(0.0, (ours, other, our_ip_other_mac, our_mac_other_id, no_id_but_ours))
    assert rogue_servers(result, OURS.upper(), OUR_IP) == (other, our_ip_other_mac, our_mac_other_id)
    assert rogue_servers(ProbeResult(0.0, ()), OURS, OUR_IP) == ()


def test_probe_refuses_an_empty_interface() -> None:
    with pytest.raises(ValueError, match="interface name"):
        probe("", PROBE)


def test_a_probe_that_cannot_run_reports_an_error() -> None:
    # A namespace that does not exist: nothing is sent anywhere, and nothing is created.
    result = probe("fl-absent0", PROBE, timeout=0.1, netns="fabricd-test-absent-namespace")
    assert result.servers == () and result.error is not None and "fl-absent0" in result.error


def test_an_offer_from_fabricds_dnsmasq_names_the_serving_host() -> None:
    frame = Ether(reply())
    frame[DHCP].options = [("message-type", "offer"), ("server_id", "10.200.0.1"), (224, b"h2"), "end"]
    seen = parse_offer(bytes(frame), PROBE, XID)
    assert seen is not None and seen.host == "h2"
    frame[DHCP].options = [("message-type", "offer"), (224, b"\xff\x00bad"), "end"]
    hostile = parse_offer(bytes(frame), PROBE, XID)
    assert hostile is not None and hostile.host is None
