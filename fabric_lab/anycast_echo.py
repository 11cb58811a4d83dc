"""The anycast lab's service: a UDP echo that names its host, run in an instance's network namespace.

Every datagram to one of the bound addresses is answered with "<name> <payload>" from the address it
was sent to: one socket per address, so an answer to the anycast address comes from the anycast
address (a wildcard socket would answer from the instance's own address, which the client drops).
busybox's nc answers one peer at a time and from the wrong source, hence this small responder.

    nsenter --target <instance pid> --net -- python -m fabric_lab.anycast_echo NAME PORT ADDRESS...
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
from collections.abc import Sequence
from ipaddress import ip_address


def answer(name: str, payload: bytes) -> bytes:
    return name.encode() + b" " + payload


def bound_sockets(addresses: Sequence[str], port: int) -> list[socket.socket]:
    sockets = []
    for address in addresses:
        family = socket.AF_INET if ip_address(address).version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((address, port))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def serve(name: str, sockets: Sequence[socket.socket]) -> None:
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            ready = key.fileobj
            if not isinstance(ready, socket.socket):
                continue
            while True:
                try:
                    payload, peer = ready.recvfrom(2048)
                except BlockingIOError:
                    break
                try:
                    ready.sendto(answer(name, payload), peer)
                except OSError:
                    continue  # no route back right now: the client counts it lost


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fabric_lab.anycast_echo", description=__doc__)
    parser.add_argument("name", help="what every answer starts with (the host's name)")
    parser.add_argument("port", type=int)
    parser.add_argument("addresses", nargs="+", help="addresses to answer on (each must be local)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sockets = bound_sockets(args.addresses, args.port)
    except (OSError, ValueError) as exc:
        print(f"anycast_echo: cannot bind {args.addresses} port {args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"anycast_echo {args.name}: answering on port {args.port} of {' '.join(args.addresses)}", flush=True
    )
    serve(args.name, sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
