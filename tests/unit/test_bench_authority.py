"""The authority benchmark's hand-built DHCP messages, read back by scapy, and its reading of replies."""

from __future__ import annotations

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bench.authority_clients import (
    REQUEST,
    DnsReply,
    Records,
    dhcp_frame,
    dns_outage,
    first_ack,
    parse_dhcp_reply,
)

MAC = "02:ba:00:00:00:01"


def test_a_request_is_a_valid_broadcast_dhcp_message() -> None:
    frame = dhcp_frame(MAC, 0x1234ABCD, REQUEST, "192.168.100.150")
    packet = Ether(frame)
    assert packet[Ether].dst == "ff:ff:ff:ff:ff:ff" and packet[Ether].src == MAC
    ip = packet[IP]
    assert (ip.src, ip.dst) == ("0.0.0.0", "255.255.255.255")  # noqa: S104 - a client has no address
    recomputed = ip.copy()
    del recomputed.chksum  # scapy computes it again when it builds the bytes
    assert ip.chksum == IP(bytes(recomputed)).chksum
    assert (packet[UDP].sport, packet[UDP].dport) == (68, 67)
    bootp = packet[BOOTP]
    assert bootp.op == 1 and bootp.xid == 0x1234ABCD and bootp.flags == 0x8000
    assert bytes(bootp.chaddr)[:6] == bytes.fromhex(MAC.replace(":", ""))
    options = {o[0]: o[1] for o in packet[DHCP].options if isinstance(o, tuple)}
    assert options["message-type"] == 3 and options["requested_addr"] == "192.168.100.150"
    assert "server_id" not in options  # INIT-REBOOT: whichever server is the authority answers


def _reply(kind: str, xid: int, yiaddr: str, host: bytes | None, chaddr: str = MAC) -> bytes:
    options: list[object] = [("message-type", kind), ("server_id", "192.168.100.1")]
    if host is not None:
        options.append((224, host))
    options.append("end")
    raw = bytes.fromhex(chaddr.replace(":", ""))
    return bytes(
        Ether(src="02:fd:01:00:00:64", dst="ff:ff:ff:ff:ff:ff")
        / IP(src="192.168.100.1", dst="255.255.255.255")
        / UDP(sport=67, dport=68)
        / BOOTP(op=2, xid=xid, yiaddr=yiaddr, chaddr=raw)
        / DHCP(options=options)
    )


def test_replies_are_read_with_the_serving_host_and_others_are_ignored() -> None:
    reply = parse_dhcp_reply(_reply("ack", 7, "192.168.100.150", b"h2"), MAC, 1.0)
    assert reply is not None
    assert (reply.kind, reply.xid, reply.yiaddr, reply.server_id, reply.host) == (
        "ack", 7, "192.168.100.150", "192.168.100.1", "h2",
    )  # fmt: skip
    assert parse_dhcp_reply(_reply("ack", 7, "192.168.100.150", None, "02:ba:00:00:00:02"), MAC, 1.0) is None
    assert parse_dhcp_reply(dhcp_frame(MAC, 7, REQUEST, "192.168.100.150"), MAC, 1.0) is None  # a request
    nak = parse_dhcp_reply(_reply("nak", 8, "0.0.0.0", None), MAC, 1.0)  # noqa: S104 - no address
    assert nak is not None and nak.kind == "nak" and nak.host is None


def test_the_first_ack_counts_only_requests_sent_after_the_signal_and_not_from_the_old_host() -> None:
    records = Records(dhcp_sent={1: 9.9, 2: 10.05, 3: 10.10})
    for xid, at, host in ((1, 10.01, "h1"), (2, 10.06, "h1"), (3, 12.0, "h2")):
        reply = parse_dhcp_reply(_reply("ack", xid, "192.168.100.150", host.encode()), MAC, at)
        assert reply is not None
        records.dhcp.append(reply)
    found = first_ack(records, 10.0, 20.0, not_host="h1")
    assert found is not None and (found.xid, found.host) == (3, "h2")


def test_a_dns_outage_starts_at_the_first_query_that_went_unanswered() -> None:
    records = Records()
    for ident, sent in enumerate((10.00, 10.02, 10.04, 10.06, 10.08), 1):
        records.dns_sent[ident] = sent
        records.dns_sent_order.append((sent, ident))
    records.dns = [DnsReply(10.001, 1, 0, ("192.168.100.5",)), DnsReply(10.021, 2, 0, ("192.168.100.5",))]
    assert dns_outage(records, 10.0, 10.1) is None  # not silent for long enough yet
    assert dns_outage(records, 10.0, 12.0) == 10.04  # the old server answered the first two
