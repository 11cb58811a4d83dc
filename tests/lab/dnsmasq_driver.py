"""A stand-in for the authority feature in lab tests: a DnsmasqServer driven over stdin, in the
server's namespace.

    python tests/lab/dnsmasq_driver.py DIRECTORY DNS_SERVER

One JSON command per stdin line, one JSON answer per stdout line:
- {"plan": {"conf", "hosts_dhcp", "hosts_dns"}, "expect": [NAME, ADDRESS]} serves the plan, then asks
  DNS_SERVER for NAME (type A) until it answers ADDRESS; answers {"action", "pid", "starts",
  "serve_s", "resolves_s"}: how long serve() took, and how long until the name resolved after it;
- {"stop": true} stops dnsmasq; answers {"pid": null}.
End of input stops dnsmasq and exits. Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from fabricd.log import configure_logging


def dns_query(name: str) -> tuple[int, bytes]:
    ident = secrets.randbelow(0x10000)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return ident, struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def a_records(ident: int, reply: bytes) -> list[str]:
    """The A records in a reply to our one question (names compressed or not; we skip them)."""
    got, _flags, questions, answers = struct.unpack("!HHHH", reply[:8])
    if got != ident:
        return []
    offset = 12
    for _ in range(questions):
        while reply[offset] != 0:
            offset += 1 + reply[offset]
        offset += 5
    found = []
    for _ in range(answers):
        if reply[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while reply[offset] != 0:
                offset += 1 + reply[offset]
            offset += 1
        kind, _cls, _ttl, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(str(IPv4Address(reply[offset : offset + 4])))
        offset += length
    return found


def resolves(server: str, name: str, address: str) -> bool:
    ident, query = dns_query(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.02)  # a local answer takes well under a millisecond
        try:
            sock.sendto(query, (server, 53))
            reply = sock.recv(4096)
        except OSError:
            return False
    return address in a_records(ident, reply)


async def wait_resolves(server: str, name: str, address: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not await asyncio.to_thread(resolves, server, name, address):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{name} did not resolve to {address} within {timeout:g}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def drive(directory: Path, dns_server: str) -> None:
    from fabricd.authority.dnsmasq import DnsmasqServer
    from fabricd.authority.dnsmasq_plan import DnsmasqPlan

    server = DnsmasqServer(directory, backoff_initial=0.2)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            answer: dict[str, Any]
            if "plan" in command:
                started = time.monotonic()
                action = await server.serve(DnsmasqPlan(**command["plan"]))
                served = time.monotonic() - started
                name, address = command["expect"]
                resolved = await wait_resolves(dns_server, name, address)
                answer = {"action": action, "pid": server.pid, "starts": server.starts}
                answer |= {"serve_s": served, "resolves_s": resolved}
            else:
                await server.stop()
                answer = {"pid": server.pid}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await server.stop()


def main() -> int:
    configure_logging("info", "json")
    asyncio.run(drive(Path(sys.argv[1]), sys.argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
