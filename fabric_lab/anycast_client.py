"""The anycast lab's query client: a steady rate of UDP queries, each answer naming the backend's host.

Query n is "q <n>", sent at start + n / rate over one of `flows` sockets in turn (each its own source
port, so the router's ECMP hash spreads them over the paths). The echo answers "<host> q <n>". A
query not answered within `timeout` is lost; an answer after that counts as late, not answered.

One JSON line per second of sending is appended to the output file once every query of that second
is settled (answered or lost), so a reader sees final figures, `timeout` behind real time:

    {"second": 12, "start": <monotonic>, "sent": 1000, "answered": {"h1": 334, "h2": 333, "h3": 333},
     "lost": 0, "lost_at": [], "late": 0, "errors": 0}

`lost_at` holds the send times (CLOCK_MONOTONIC, the same clock as every process on the machine) of
the lost queries, so a reader can count losses around an event of its own. SIGTERM stops sending;
the last queries are settled and a final line {"done": true, ...totals} is written.

    python -m fabric_lab.anycast_client --target 10.250.0.53 --port 7 --rate 1000 --out FILE
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import IO, Any


@dataclass
class Second:
    """The queries sent in one second of the run."""

    index: int
    start: float
    sent: int = 0
    answered: Counter[str] = field(default_factory=Counter)
    lost_at: list[float] = field(default_factory=list)
    late: int = 0
    errors: int = 0

    def line(self) -> dict[str, Any]:
        return {
            "second": self.index,
            "start": round(self.start, 6),
            "sent": self.sent,
            "answered": dict(sorted(self.answered.items())),
            "lost": len(self.lost_at),
            "lost_at": [round(t, 6) for t in self.lost_at],
            "late": self.late,
            "errors": self.errors,
        }


def parse_answer(payload: bytes) -> tuple[str, int] | None:
    """(host, query number) of an answer "<host> q <n>", None for anything else."""
    parts = payload.split()
    if len(parts) != 3 or parts[1] != b"q" or not parts[2].isdigit():
        return None
    return parts[0].decode(errors="replace"), int(parts[2])


class QueryClient:
    def __init__(self, target: str, port: int, rate: float, flows: int, timeout: float, out: IO[str]):
        family = socket.AF_INET if ip_address(target).version == 4 else socket.AF_INET6
        self.sockets = []
        self.selector = selectors.DefaultSelector()
        for _ in range(flows):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.connect((target, port))
            sock.setblocking(False)
            self.sockets.append(sock)
            self.selector.register(sock, selectors.EVENT_READ)
        self.rate = rate
        self.timeout = timeout
        self.out = out
        self.stopping = False
        self.start = time.monotonic()
        self.next_query = 0
        self.pending: dict[int, float] = {}  # query number -> when it was sent
        self.seconds: dict[int, Second] = {}
        self.totals: Counter[str] = Counter()

    def second_of(self, query: int) -> Second:
        index = int(query // self.rate)
        if index not in self.seconds:
            self.seconds[index] = Second(index, self.start + index)
        return self.seconds[index]

    def send_due(self, now: float) -> None:
        while not self.stopping and self.start + self.next_query / self.rate <= now:
            query = self.next_query
            self.next_query += 1
            second = self.second_of(query)
            second.sent += 1
            try:
                self.sockets[query % len(self.sockets)].send(f"q {query}".encode())
            except OSError:
                second.errors += 1  # an ICMP error from an earlier send, reported on this one
            self.pending[query] = time.monotonic()

    def receive(self, wait: float) -> None:
        for key, _ in self.selector.select(max(0.0, wait)):
            sock = key.fileobj
            if not isinstance(sock, socket.socket):
                continue
            while True:
                try:
                    payload = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # port or host unreachable for an earlier query: it stays pending
                parsed = parse_answer(payload)
                if parsed is None:
                    continue
                host, query = parsed
                if query in self.pending:
                    del self.pending[query]
                    self.second_of(query).answered[host] += 1
                elif query < self.next_query:
                    self.second_of(query).late += 1

    def expire(self, now: float) -> None:
        for query, sent in list(self.pending.items()):
            if now - sent > self.timeout:
                del self.pending[query]
                self.second_of(query).lost_at.append(sent)

    def flush(self, now: float, everything: bool = False) -> None:
        """Write the seconds whose queries are all settled."""
        for index in sorted(self.seconds):
            second = self.seconds[index]
            settled = now > second.start + 1 + self.timeout
            if not (settled or everything):
                break
            line = second.line()
            self.totals["sent"] += second.sent
            self.totals["lost"] += len(second.lost_at)
            self.totals["late"] += second.late
            for host, count in second.answered.items():
                self.totals[f"answered.{host}"] += count
            self.out.write(json.dumps(line) + "\n")
            del self.seconds[index]
        self.out.flush()

    def run(self, seconds: float | None) -> None:
        last_housekeeping = 0.0
        while True:
            now = time.monotonic()
            if seconds is not None and now - self.start >= seconds:
                self.stopping = True
            if self.stopping and not self.pending:
                break
            self.send_due(now)
            self.receive(
                self.start + self.next_query / self.rate - time.monotonic() if not self.stopping else 0.05
            )
            now = time.monotonic()
            if now - last_housekeeping > 0.05:
                self.expire(now)
                self.flush(now)
                last_housekeeping = now
        self.flush(time.monotonic(), everything=True)
        answered = {
            k.split(".", 1)[1]: v for k, v in sorted(self.totals.items()) if k.startswith("answered.")
        }
        done = {"done": True, "sent": self.totals["sent"], "answered": answered, "lost": self.totals["lost"]}
        self.out.write(json.dumps(done | {"late": self.totals["late"]}) + "\n")
        self.out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fabric_lab.anycast_client", description=__doc__)
    parser.add_argument("--target", required=True, help="the anycast address")
    parser.add_argument("--port", type=int, default=7)
    parser.add_argument("--rate", type=float, default=1000.0, help="queries per second")
    parser.add_argument("--flows", type=int, default=64, help="source ports, used in turn")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds before a query is lost")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: SIGTERM)")
    parser.add_argument("--out", type=Path, required=True, help="file the per-second lines are appended to")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.flows <= 0 or args.timeout <= 0:
        parser.error("--rate, --flows and --timeout must be positive")
    with args.out.open("a") as out:
        client = QueryClient(args.target, args.port, args.rate, args.flows, args.timeout, out)

        def stop(*_: object) -> None:
            client.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        client.run(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
