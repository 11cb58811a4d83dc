"""The DNS check's wire code, read back by scapy (an implementation independent of ours)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from fabricd.services import dns_wire
from fabricd.services.dns_wire import QTYPES, BadName, Reply, encode_name, query, read_reply

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
qtypes = st.sampled_from(sorted(QTYPES))
ids = st.integers(0, 65535)


@settings(max_examples=300, deadline=None)
@given(ids, names, qtypes)
def test_the_query_is_what_scapy_reads(query_id: int, name: str, qtype: str) -> None:
    parsed = DNS(query(query_id, name, qtype))
    assert parsed.id == query_id and parsed.qr == 0 and parsed.rd == 1 and parsed.qdcount == 1
    assert parsed.qd[0].qname == name.encode() + b"."
    assert parsed.qd[0].qtype == QTYPES[qtype]
    assert parsed.qd[0].qclass == 1


@settings(max_examples=300, deadline=None)
@given(ids, names, qtypes, st.integers(0, 5), st.integers(0, 3), st.booleans())
def test_a_scapy_reply_is_read(
    query_id: int, name: str, qtype: str, rcode: int, answers: int, case: bool
) -> None:
    asked = name.upper() if case else name  # servers may echo the question in another case
    reply = DNS(
        id=query_id, qr=1, rd=1, ra=1, rcode=rcode, qd=[DNSQR(qname=asked, qtype=QTYPES[qtype])],
        an=[DNSRR(rrname=name, type="A", rdata="192.0.2.1") for _ in range(answers)],
    )  # fmt: skip
    assert read_reply(bytes(reply), query_id, name, qtype) == Reply(rcode, answers, False)


@given(ids, names)
def test_a_reply_to_another_id_or_question_is_not_ours(query_id: int, name: str) -> None:
    ours = bytes(DNS(id=query_id, qr=1, qd=[DNSQR(qname=name, qtype="A")]))
    assert read_reply(ours, (query_id + 1) % 65536, name, "A") == (
        f"reply ID {query_id} is not the query's ({(query_id + 1) % 65536})"
    )
    assert read_reply(ours, query_id, name, "AAAA") == "reply does not carry the question asked"
    assert read_reply(ours, query_id, name + "x", "A") == "reply does not carry the question asked"
    as_query = bytes(DNS(id=query_id, qr=0, qd=[DNSQR(qname=name, qtype="A")]))
    assert read_reply(as_query, query_id, name, "A") == "datagram is a query, not a response"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), ids, names)
def test_any_datagram_is_read_without_raising(data: bytes, query_id: int, name: str) -> None:
    verdict = read_reply(data, query_id, name, "A")
    assert isinstance(verdict, (Reply, str))
    if isinstance(verdict, Reply):
        assert struct.unpack_from("!H", data)[0] == query_id


def test_an_error_reply_may_omit_the_question() -> None:
    reply = bytes(DNS(id=7, qr=1, rcode=1, qd=[]))
    assert read_reply(reply, 7, "a.test", "A") == Reply(1, 0, False)
    assert Reply(1, 0, False).rcode_name == "FORMERR" and Reply(9, 0, False).rcode_name == "RCODE9"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a..b", "label '' is not 1..63 bytes"),
        ("x" * 64 + ".test", f"label '{'x' * 64}' is not 1..63 bytes"),
        ("ä.test", "label 'ä' is not ASCII"),
        (".".join(["x" * 63] * 4), "name longer than 255 bytes"),
    ],
)
def test_names_that_do_not_fit_a_question_are_refused(name: str, message: str) -> None:
    with pytest.raises(BadName, match=message):
        encode_name(name)


def test_the_root_and_a_trailing_dot() -> None:
    assert encode_name(".") == b"\0"
    assert encode_name("a.test.") == encode_name("a.test") == b"\1a\4test\0"
    assert dns_wire.question("a.test", "AAAA") == b"\1a\4test\0\0\x1c\0\1"
