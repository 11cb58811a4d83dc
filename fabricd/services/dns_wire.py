"""The few bytes of DNS a health check needs: one query out, the header and question of the reply in.

Pure, standard library only (RFC 1035 §4.1). The check asks one question with recursion desired
and judges the reply by its ID, the QR bit, the question echoed back, the response code and the
number of answer records; nothing past the question is parsed, since no answer's content decides
whether the server serves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fabricd.config.model import DNSRcode, DNSType

QTYPES: dict[DNSType, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
}  # fmt: skip
RCODES: dict[int, DNSRcode] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}
CLASS_IN = 1
_HEADER = struct.Struct("!HHHHHH")
_RD = 0x0100
_QR = 0x8000
_TC = 0x0200


class BadName(ValueError):
    """A name that does not fit in a DNS question."""


def encode_name(name: str) -> bytes:
    """`dns.fabric.internal` as length-prefixed labels, ending with the root's zero byte."""
    stripped = name[:-1] if name.endswith(".") else name
    labels = stripped.split(".") if stripped else []
    out = bytearray()
    for label in labels:
        try:
            raw = label.encode("ascii")
        except UnicodeEncodeError as exc:
            raise BadName(f"label {label!r} is not ASCII") from exc
        if not 1 <= len(raw) <= 63:
            raise BadName(f"label {label!r} is not 1..63 bytes")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > 255:
        raise BadName("name longer than 255 bytes")
    return bytes(out)


def question(name: str, qtype: DNSType) -> bytes:
    return encode_name(name) + struct.pack("!HH", QTYPES[qtype], CLASS_IN)


def query(query_id: int, name: str, qtype: DNSType) -> bytes:
    """One standard query, recursion desired."""
    return _HEADER.pack(query_id, _RD, 1, 0, 0, 0) + question(name, qtype)


@dataclass(frozen=True, slots=True)
class Reply:
    rcode: int
    answers: int
    truncated: bool

    @property
    def rcode_name(self) -> str:
        return RCODES.get(self.rcode, f"RCODE{self.rcode}")


def read_reply(data: bytes, query_id: int, name: str, qtype: DNSType) -> Reply | str:
    """The reply's verdict fields, or why the datagram is not the answer to our query."""
    if len(data) < _HEADER.size:
        return f"reply of {len(data)} bytes is shorter than a DNS header"
    reply_id, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data)
    if reply_id != query_id:
        return f"reply ID {reply_id} is not the query's ({query_id})"
    if not flags & _QR:
        return "datagram is a query, not a response"
    asked = question(name, qtype)
    echoed = data[_HEADER.size : _HEADER.size + len(asked)]
    if qdcount > 1 or (qdcount == 1 and echoed.lower() != asked.lower()):  # an error may omit it
        return "reply does not carry the question asked"
    return Reply(flags & 0x000F, ancount, bool(flags & _TC))
