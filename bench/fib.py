"""r1's IPv4 kernel table (main), read from /proc/<pid>/net/route of a process in its namespace.

/proc/<pid>/net is the network namespace of that process, so reading the lab holder's file shows
exactly the router's FIB without entering the namespace, forking or parsing netlink: a read of a
small table costs tens of microseconds, so it can be polled every few milliseconds without
taking CPU from the processes being measured. With 50,000 routes a read is a few megabytes of
text; the scale run polls it every 0.25 s and only counts lines by gateway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_network
from pathlib import Path


def _hex(address: IPv4Address) -> str:
    """/proc/net/route prints each big-endian address as a host-order (little-endian) u32."""
    return f"{int.from_bytes(address.packed, 'little'):08X}"


def route_key(prefix: str) -> tuple[str, str]:
    network = ip_network(prefix)
    if not isinstance(network, IPv4Network):
        raise ValueError(f"{prefix}: /proc/net/route holds IPv4 only")
    return _hex(network.network_address), _hex(network.netmask)


class ProcFib:
    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/net/route")

    def read(self) -> bytes:
        return self.path.read_bytes()

    def present(self, prefixes: Iterable[str]) -> set[str]:
        """Which of these prefixes have a route in the table (byte searches: fast at 50,000 routes)."""
        data = self.read()
        found = set()
        for prefix in prefixes:
            dst, mask = route_key(prefix)
            needle = f"\t{dst}\t".encode()
            at = data.find(needle)
            while at >= 0:
                end = data.find(b"\n", at)
                fields = data[at : end if end >= 0 else len(data)].split()
                if len(fields) >= 7 and fields[6].decode() == mask:
                    found.add(prefix)
                    break
                at = data.find(needle, at + 1)
        return found

    def gateways(self, prefix: str) -> set[str]:
        """Gateways of the route for exactly this prefix (dotted); like fabric_lab.fib.routes_to."""
        dst, mask = route_key(prefix)
        found = set()
        for line in self.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 8 or fields[1].decode() != dst or fields[7].decode() != mask:
                continue
            if int(fields[2], 16):  # 0: a connected route, no gateway
                found.add(str(IPv4Address(int(fields[2], 16).to_bytes(4, "little"))))
        return found

    def trie_prefixes(self) -> int:
        """Prefixes in the main table's trie, from /proc/<pid>/net/fib_triestat.

        The kernel computes these statistics itself, so this costs about a millisecond even with
        50,000 routes, where a read of /proc/net/route formats megabytes of text. Without policy
        routing the local table shares the main trie, so count from a baseline.
        """
        text = Path(str(self.path).replace("/route", "/fib_triestat")).read_text()
        main = text.split("Main:", 1)[1]
        for line in main.splitlines():
            if line.strip().startswith("Prefixes:"):
                return int(line.split()[1])
        raise ValueError("no Prefixes line for the main table in fib_triestat")

    def count_via(self, gateways: Iterable[str]) -> int:
        """Routes whose gateway is one of these addresses (byte counts over the whole table)."""
        data = self.read()
        return sum(data.count(b"\t" + _hex(IPv4Address(g)).encode() + b"\t") for g in set(gateways))

    def v6_entries(self) -> int:
        """IPv6 route entries in every table: fib_rt_entries of /proc/<pid>/net/rt6_stats (a counter
        the kernel keeps, so a read costs the same at any table size; reading ipv6_route with 10,000
        routes takes a third of a second). Compare with a baseline."""
        return int(self.path.with_name("rt6_stats").read_text().split()[3], 16)

    def count_via6(self, gateways: Iterable[str]) -> int:
        """IPv6 routes whose next hop is one of these addresses."""
        wanted = {IPv6Address(g).packed.hex().encode() for g in gateways}
        lines = self.path.with_name("ipv6_route").read_bytes().splitlines()
        return sum(1 for line in lines if line[72:104] in wanted)


@dataclass
class Change:
    at: float  # time.monotonic() of the first read that showed it
    present: frozenset[str]  # the watched prefixes present from then on


@dataclass
class FibWatcher:
    """Polls the table in a thread and keeps every change of which watched prefixes are present."""

    fib: ProcFib
    prefixes: tuple[str, ...]
    interval: float = 0.002
    history: list[Change] = field(default_factory=list)
    reads: int = 0

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fib-watcher", daemon=True)

    def __enter__(self) -> FibWatcher:
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _record(self) -> None:
        present = frozenset(self.fib.present(self.prefixes))
        self.reads += 1
        with self._changed:
            if not self.history or self.history[-1].present != present:
                self.history.append(Change(time.monotonic(), present))
                self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def when(self, want: Iterable[str], present: bool, after: float, timeout: float) -> float | None:
        """The first moment from `after` on when every prefix of `want` is present (or all absent).

        Start the clock at a moment the condition was known false (the command that should change
        it was issued later), so the answer is the read that first saw it, even if that came before
        the event the latency is counted from. A state already in force at `after` answers `after`.
        None on timeout.
        """
        wanted = frozenset(want)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i, change in enumerate(self.history):
                    later = self.history[i + 1].at if i + 1 < len(self.history) else None
                    if later is not None and later <= after:
                        continue  # replaced before the clock started
                    if (wanted <= change.present) if present else not (wanted & change.present):
                        return max(change.at, after)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
