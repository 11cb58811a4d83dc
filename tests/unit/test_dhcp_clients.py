"""The lab's DHCP/DNS client toolkit: its parsers and the offer log's verdicts (no lab needed)."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from fabric_lab.dhcp_clients import (
    DnsSample,
    OfferLog,
    _bootp_ids,
    dns_query,
    longest_silence,
    lxc_read,
    nslookup,
    parse_dns_answer,
    parse_events,
    parse_nslookup,
    reverse_name,
)
from fabric_lab.node import LabError


class ExecNode:
    """Records `lxc exec` argv and answers from a script of replies."""

    name = "h1"

    def __init__(self, *replies: str | int | Exception) -> None:
        self.replies = list(replies)  # the last one repeats; an int is a failed exit code
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, command: Sequence[str], *, input_text: str | None = None, **_: Any) -> Any:
        self.calls.append((list(command), input_text))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, int):
            return subprocess.CompletedProcess(list(command), reply, "", "no such device")
        return subprocess.CompletedProcess(list(command), 0, reply, "")


def test_events_are_parsed_with_wall_times() -> None:
    text = (
        "bound up=100.50 ip=192.168.100.7 mask=24 mtu=1450 hostname=c1 dns=192.168.100.1,10.0.0.1 "
        "domain=fabric.internal router= serverid=192.168.100.1 lease=600\n"
        "deconfig up=101.00 ip= mask= mtu= hostname= dns= domain= router= serverid= lease=\n"
    )
    bound, deconfig = parse_events(text, offset=1000.0)
    assert (bound.event, bound.ip, bound.hostname, bound.dns, bound.at) == (
        "bound", "192.168.100.7", "c1", "192.168.100.1,10.0.0.1", 1100.5,
    )  # fmt: skip
    assert bound.got_address and not deconfig.got_address and deconfig.at == 1101.0


def test_nslookup_forward_reverse_and_failures() -> None:
    forward = parse_nslookup(
        "c1",
        "Server:\t\t192.168.100.1\nAddress:\t192.168.100.1:53\n\nName:\tc1.fabric.internal\n"
        "Address: 192.168.100.7\n",
    )
    assert forward.ok and forward.addresses == ("192.168.100.7",)  # the server's own line is not one
    reverse = parse_nslookup("192.168.100.7", "7.100.168.192.in-addr.arpa\tname = c1.fabric.internal\n")
    assert reverse.names == ("c1.fabric.internal",)
    missing = parse_nslookup("x", "** server can't find x.fabric.internal: NXDOMAIN\n")
    assert missing.error == "NXDOMAIN" and not missing.ok
    assert parse_nslookup("x", ";; connection timed out; no servers could be reached\n").error is not None
    assert parse_nslookup("x", "").error == "no answer"


def _answer(ident: int, question: bytes, rtype: int, rdata: bytes, rcode: int = 0) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return header + question + record


def test_dns_answers_are_matched_by_id_and_decoded() -> None:
    query = dns_query("c1.fabric.internal", "A", 7)
    question = query[12:]
    assert parse_dns_answer(_answer(7, question, 1, bytes([192, 168, 100, 7])), 7) is not None
    answer = parse_dns_answer(_answer(7, question, 1, bytes([192, 168, 100, 7])), 7)
    assert answer is not None and answer.answers == ("192.168.100.7",) and answer.rcode == 0
    assert parse_dns_answer(_answer(8, question, 1, bytes(4)), 7) is None  # someone else's answer
    assert parse_dns_answer(query, 7) is None  # a query, not a response
    ptr_question = dns_query(reverse_name("192.168.100.7"), "PTR", 9)[12:]
    name = b"\x02c1\x06fabric\x08internal\x00"
    ptr = parse_dns_answer(_answer(9, ptr_question, 12, name), 9)
    assert ptr is not None and ptr.answers == ("c1.fabric.internal",)
    nx = parse_dns_answer(struct.pack("!HHHHHH", 5, 0x8183, 1, 0, 0, 0) + question, 5)
    assert nx is not None and nx.rcode == 3 and nx.answers == ()
    assert parse_dns_answer(_answer(7, question, 1, bytes(4))[:-3], 7) is None  # cut short


def test_offer_log_finds_a_discover_answered_by_two_hosts() -> None:
    records = [
        {"kind": "probe", "xid": 1, "at": 10.0},
        {"kind": "probe", "xid": 2, "at": 10.5},
        {"kind": "offer", "xid": 1, "at": 10.01, "host": "h1", "server_id": "s", "mac": "m", "offered": "a",
         "own": True},
        {"kind": "offer", "xid": 2, "at": 10.51, "host": "h1", "server_id": "s", "mac": "m", "offered": "a",
         "own": True},
    ]  # fmt: skip
    seen_elsewhere = [
        {"kind": "offer", "xid": 2, "at": 10.52, "host": "h2", "server_id": "s", "mac": "m", "offered": "a",
         "own": False},
        {"kind": "offer", "xid": 1, "at": 10.02, "host": "h1", "server_id": "s", "mac": "m", "offered": "a",
         "own": False},
    ]  # fmt: skip
    one = OfferLog.from_records("h1", records)
    assert one.doubled() == {} and one.per_host() == {"h1": 2}
    both = OfferLog.merged([one, OfferLog.from_records("h3", seen_elsewhere)])
    assert both.doubled() == {2: {"h1", "h2"}}
    assert both.per_host() == {"h1": 2, "h2": 1}  # the same answer seen on two bridges counts once
    assert both.answered_probes(10.2) == {2: {"h1", "h2"}}
    assert [o.seen_on for o in both.from_host("h1")] == ["h1", "h3", "h1"]


def test_longest_silence_counts_only_unanswered_queries() -> None:
    def sample(at: float, answered: bool, rcode: int = 0) -> DnsSample:
        return DnsSample(at, ("x",) if answered else None, rcode if answered else None, 0.001)

    samples = [
        sample(0, True),
        sample(1, False),
        sample(2, False),
        sample(3, True, rcode=3),
        sample(4, False),
    ]
    assert longest_silence(samples) == (1, 3)  # NXDOMAIN is an answer: the server is back
    assert longest_silence(samples, since=3.5) is None  # still silent at the end: no gap closed
    assert longest_silence([sample(0, True)]) is None


def test_bootp_ids_come_from_the_frame() -> None:
    frame = bytearray(14 + 20 + 8 + 240)
    frame[14] = 0x45
    bootp = 14 + 20 + 8
    frame[bootp + 4 : bootp + 8] = (0xDEADBEEF).to_bytes(4, "big")
    frame[bootp + 28 : bootp + 34] = bytes.fromhex("02ac0c000001")
    assert _bootp_ids(bytes(frame)) == (0xDEADBEEF, "02:ac:0c:00:00:01")
    assert _bootp_ids(bytes(frame[:50])) is None


def test_nslookup_runs_without_terminal_or_stdin_and_parses_the_answer() -> None:
    node = ExecNode("Server:\t\t192.168.100.1\n\nName:\tc1.fabric.internal\nAddress: 192.168.100.7\n")
    found = nslookup(node, "c1", "c1.fabric.internal", "192.168.100.1", kind="a")  # type: ignore[arg-type]
    assert found.ok and found.addresses == ("192.168.100.7",)
    ((argv, stdin),) = node.calls
    assert argv[:5] == ["lxc", "exec", "-T", "-n", "c1"] and stdin is None
    assert argv[argv.index("--") + 1 :] == [
        "timeout", "10", "nslookup", "-type=a", "c1.fabric.internal", "192.168.100.1",
    ]  # fmt: skip


def test_an_lxc_exec_that_never_returns_is_no_answer_with_the_reason() -> None:
    node = ExecNode(LabError("node h1: lxc exec c1 ... timed out after 30s"))
    found = nslookup(node, "c1", "192.168.100.7", "192.168.100.1")  # type: ignore[arg-type]
    assert not found.ok and "Server:" not in found.text
    assert (
        found.error is not None and "did not return" in found.error and "timed out after 30s" in found.error
    )


def test_a_read_is_run_once_more_after_a_hang_and_never_a_third_time() -> None:
    hang = LabError("node h1: lxc exec c1 ... timed out after 30s")
    node = ExecNode(hang, "inet 192.168.100.7/24\n")
    assert lxc_read(node, "c1", ["ip", "addr"]) == "inet 192.168.100.7/24\n"  # type: ignore[arg-type]
    assert len(node.calls) == 2
    failing = ExecNode(hang, 1, "never asked")
    with pytest.raises(LabError, match="failed twice, last: exited 1: no such device"):
        lxc_read(failing, "c1", ["ip", "addr"])  # type: ignore[arg-type]
    assert len(failing.calls) == 2
