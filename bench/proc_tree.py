"""CPU seconds of a process tree from /proc: every descendant of one root, sampled over a window.

Each process is keyed by (pid, start time), so a reused pid is a new process. Over a window:
- a process alive at the end counts its own utime + stime since the window began (since its birth
  if it was born inside the window);
- a process that ended inside the window counts through its parent: the kernel adds a reaped
  child's whole CPU time to the parent's cutime + cstime, whose growth over the window is counted
  for every process of the tree (so a helper that lives between two samples is not missed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")

# Needles in /proc/<pid>/cmdline, most specific first.
ROLES: tuple[tuple[bytes, str], ...] = (
    (b"fabricd.bgp.relay", "relay"),
    (b"exabgp", "exabgp"),
    (b"dnsmasq", "dnsmasq"),
    (b"bfdd", "bfd"),
    (b"bench.agent_driver", "fabricd"),
    (b"fabricd", "fabricd"),
)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    started: int  # clock ticks after boot (stat field 22)
    role: str
    cpu: int  # utime + stime, ticks, every thread
    reaped: int  # cutime + cstime: children waited for, ticks
    switches: int  # voluntary + involuntary context switches, every thread

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.started)


def role_of(cmdline: bytes, comm: str) -> str:
    for needle, role in ROLES:
        if needle in cmdline:
            return role
    return comm or "?"


def parse_stat(text: str) -> tuple[str, int, int, int, int]:
    """comm, ppid, utime + stime, cutime + cstime, start time from one /proc/<pid>/stat line."""
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is stat field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17, starttime 22
    ppid, started = int(fields[1]), int(fields[19])
    return comm, ppid, int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]), started


def _switches(pid: int) -> int:
    total = 0
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def read_proc(pid: int) -> Proc | None:
    try:
        comm, ppid, cpu, reaped, started = parse_stat((PROC / str(pid) / "stat").read_text())
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return Proc(pid, ppid, started, role_of(cmdline, comm), cpu, reaped, _switches(pid))


def _children(pid: int) -> list[int]:
    """Children of every thread of pid (a child started by a worker thread is listed under it)."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree(root: int) -> dict[tuple[int, int], Proc]:
    """The root and every descendant alive now."""
    found: dict[tuple[int, int], Proc] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        proc = read_proc(pid)
        if proc is None:
            continue
        found[proc.key] = proc
        todo += _children(pid)
    return found


def boot_ticks_now() -> int:
    """Clock ticks since boot now, on the clock of stat's start time."""
    return int(float((PROC / "uptime").read_text().split()[0]) * TICKS)


@dataclass(frozen=True)
class ProcessUse:
    role: str
    pid: int
    cpu_ticks: int  # its own, over the window
    reaped_ticks: int  # of its children that ended in the window
    switches: int
    whole_window: bool  # alive from the start to the end


@dataclass(frozen=True)
class WindowUse:
    processes: tuple[ProcessUse, ...]
    ended: tuple[tuple[int, str], ...]  # (pid, role) seen and gone before the end

    @property
    def total_ticks(self) -> int:
        return sum(p.cpu_ticks + p.reaped_ticks for p in self.processes)


def window_use(
    samples: Sequence[Mapping[tuple[int, int], Proc]], window_began: int | None = None
) -> WindowUse:
    """What the tree used between the first and the last sample (pure: samples are tree() results).

    window_began: boot ticks at the first sample; a process not in the first sample that started
    before it (it joined the tree later, e.g. reparented) counts from its first sample instead."""
    if not samples:
        return WindowUse((), ())
    first, last = samples[0], samples[-1]
    first_seen: dict[tuple[int, int], Proc] = {}
    for sample in samples:
        for key, proc in sample.items():
            first_seen.setdefault(key, proc)
    uses: list[ProcessUse] = []
    for key, end in last.items():
        start = first.get(key)
        base = start if start is not None else first_seen[key]
        if start is not None or (window_began is not None and end.started < window_began):
            cpu, reaped, switches = end.cpu - base.cpu, end.reaped - base.reaped, end.switches - base.switches
        else:
            cpu, reaped, switches = end.cpu, end.reaped, end.switches
        uses.append(ProcessUse(end.role, end.pid, cpu, reaped, switches, start is not None))
    ended = tuple(sorted((p.pid, p.role) for key, p in first_seen.items() if key not in last))
    return WindowUse(tuple(sorted(uses, key=lambda u: (u.role, u.pid))), ended)


def by_role(uses: Iterable[ProcessUse]) -> dict[str, int]:
    """Ticks per role; children that ended in the window count under `<role>:ended children`."""
    found: dict[str, int] = {}
    for use in uses:
        found[use.role] = found.get(use.role, 0) + use.cpu_ticks
        if use.reaped_ticks:
            name = f"{use.role}:ended children"
            found[name] = found.get(name, 0) + use.reaped_ticks
    return found
