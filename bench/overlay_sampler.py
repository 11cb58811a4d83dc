"""CPU and traffic counters for bench/overlay.py: the whole machine's busy jiffies and one lab link's bytes.

/proc/stat is not namespaced: it counts every CPU of the machine, whatever runs on it. The link's byte
counter comes from /proc/<pid>/net/dev of a process inside the node (its holder), so it is the node's
own namespace that is read, with no fork.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 0.02
# Above this rate a 20 ms sample counts as "the test is sending" (iperf3's control channel is far below).
MOVING_BYTES_PER_S = 50e6


def busy_jiffies() -> int:
    """user + nice + system + irq + softirq + steal of all CPUs (idle and iowait left out)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal


def tx_bytes(holder_pid: int, ifname: str) -> int:
    for line in Path(f"/proc/{holder_pid}/net/dev").read_text().splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() == ifname:
            return int(counters.split()[8])
    raise LookupError(f"no interface {ifname} in the namespace of pid {holder_pid}")


@dataclass(frozen=True, slots=True)
class Window:
    """The part of a run during which the link carried the test's data."""

    seconds: float
    cpu_s: float
    tx_bytes: int
    samples: int


class TrafficSampler:
    """Every 20 ms in a thread: (monotonic, busy jiffies, tx bytes of the link).

    A run's CPU is then taken over the samples where the link was moving data, which leaves out what
    starting the client costs (an `lxc exec` is ~0.2 CPU-s) and iperf3's connection set-up.
    """

    def __init__(self, holder_pid: int, ifname: str) -> None:
        self.holder_pid, self.ifname = holder_pid, ifname
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="overlay-sampler", daemon=True)

    def __enter__(self) -> TrafficSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(
                    (time.monotonic(), busy_jiffies(), tx_bytes(self.holder_pid, self.ifname))
                )
            except (OSError, LookupError):  # the node is gone: runs after this get no window
                return
            self._stop.wait(INTERVAL_S)

    def window(self, after: float, before: float) -> Window | None:
        """From the first to the last sample interval in [after, before] above MOVING_BYTES_PER_S."""
        picked = [s for s in list(self.samples) if after <= s[0] <= before]
        moving = [
            i
            for i in range(1, len(picked))
            if (picked[i][2] - picked[i - 1][2]) / max(picked[i][0] - picked[i - 1][0], 1e-6)
            > MOVING_BYTES_PER_S
        ]
        if not moving:
            return None
        first, last = picked[moving[0] - 1], picked[moving[-1]]
        return Window(
            seconds=last[0] - first[0],
            cpu_s=(last[1] - first[1]) / CLK_TCK,
            tx_bytes=last[2] - first[2],
            samples=moving[-1] - moving[0] + 2,
        )


PING_SUMMARY = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/mdev)? = ([\d.]+)/([\d.]+)/([\d.]+)")
PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


@dataclass(frozen=True, slots=True)
class PingResult:
    sent: int
    received: int
    min_ms: float
    avg_ms: float
    max_ms: float


def parse_ping(text: str) -> PingResult:
    """The summary of iputils ping (`rtt min/avg/max/mdev`) or busybox ping (`round-trip min/avg/max`)."""
    summary, counts = PING_SUMMARY.search(text), PING_COUNTS.search(text)
    if summary is None or counts is None:
        raise ValueError(f"no ping summary in: {text.strip()[-300:]!r}")
    low, avg, high = (float(x) for x in summary.groups())
    return PingResult(int(counts.group(1)), int(counts.group(2)), low, avg, high)
