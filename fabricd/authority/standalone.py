"""Who is the authority among standalone hosts: a configured priority list, liveness by DHCP probe.

Without a shared consistent store there is no safe lease, so this mode is honest about what it
can promise. The probe (`fabricd.authority.probe`) sends a DHCP DISCOVER on the overlay every
interval; the authority's dnsmasq names its host in a site-specific option, so every host sees
who answers.
- A standby takes over after `silent_probes` probes in a row with no answer, plus `rank_probes`
  per host ranked above it in the list, so the best-ranked standby goes first and the others then
  see it answering. Hosts probe on their own clocks, up to one interval out of phase, and the host
  above decides one probe window after its last silent probe: the next host's deciding probe must
  go out more than one interval plus that later (`rank_probes()`). With one probe per rank both
  took over (lab test, and the timed simulation in the unit tests).
- Silence must outlast a busy authority: dnsmasq answers no DHCP while it ping-checks an address
  for a new client, so a healthy authority leaves probes unanswered when clients appear in numbers
  (lab: 12 new clients, 4 silent probes in a row at 4 s, and the standby ranked first took over
  beside the serving host). `silent_probes` is raised to `busy_probes()` when lower. A server that
  just took over is as likely to be busy (every client is new to it: the lab's 3 DISCOVER
  counters kept it from answering the next host in line, which took over too), so the spacing
  per rank covers a busy spell as well.
- A serving host yields as soon as it sees a better-ranked host answering.
- A better-ranked host that comes back (restarted, repaired) takes the authority back: as a
  standby that hears only worse-ranked hosts of the list answering, for `silent_probes` probes in
  a row (so it knows the overlay works both ways before it serves), it takes over, and the worse
  one yields at its next probe that hears it. Both answer for that long: up to one probe interval
  and the window (plus a busy spell of the returning dnsmasq, which keeps the old server serving
  meanwhile). An answer that names no host of the list ("?") is never taken over: nothing would
  make it yield. If the returning host hears the server but the server does not hear it (a one-way
  overlay), both keep serving; `fabricctl status` says so (two hosts answer).
- Partition: each side sees silence and one host per side serves; when the partition heals, the
  worse-ranked server yields within one probe interval of hearing the better-ranked one (whose
  dnsmasq may first be busy with clients new to it, up to 18 s). Two servers answer during the
  partition and for that long after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fabricd.authority.probe import PROBE_TIMEOUT

# Seconds from deciding to take over until dnsmasq answers (claiming the address with its
# announcements, starting dnsmasq): about 0.3 s in the lab; allowed generously.
TAKEOVER_ALLOWANCE = 1.0


# dnsmasq pings an address up to 3 s before offering it to a new client and serves no DHCP meanwhile;
# it pings at most 6 addresses per 30 s (its PING_WAIT, PING_CACHE_TIME), so it can be busy for 18 s.
DNSMASQ_BUSY = 18.0


def busy_probes(probe_interval: float) -> int:
    """The fewest silent probes that mean more than a busy dnsmasq: one more than a busy spell can
    leave unanswered (a probe sent during it is answered when it ends, too late after the window)."""
    return math.ceil(max(0.0, DNSMASQ_BUSY - PROBE_TIMEOUT) / probe_interval) + 1


def rank_probes(probe_interval: float) -> int:
    """Probes a standby waits per host ranked above it: (n - 1) intervals cover the window or a busy
    spell of the new server, whichever is longer, and the takeover, whatever the probes' phases."""
    return 1 + math.ceil((max(PROBE_TIMEOUT, DNSMASQ_BUSY) + TAKEOVER_ALLOWANCE) / probe_interval)


@dataclass(frozen=True, slots=True)
class StandaloneMemory:
    serving: bool = False
    silent: int = 0  # probes in a row that nobody answered
    reason: str = "no probe yet"
    outranked: int = 0  # probes in a row answered only by hosts ranked below this one


@dataclass(frozen=True, slots=True)
class StandaloneElector:
    me: str
    priority: tuple[str, ...]  # best first; this host must be in it
    silent_probes: int = 3
    rank_probes: int = 5  # probes per host ranked above this one; see rank_probes()
    busy_probes: int = 4  # the least silence that is no busy authority; see busy_probes()

    def __post_init__(self) -> None:
        if self.me not in self.priority:
            raise ValueError(f"{self.me} is not in the priority list {list(self.priority)}")

    @property
    def patience(self) -> int:
        """Silent probes that still mean "the authority is there": the best-ranked standby's wait."""
        return max(self.silent_probes, self.busy_probes)

    def rank(self, host: str) -> int:
        return self.priority.index(host) if host in self.priority else len(self.priority)

    def step(self, memory: StandaloneMemory, answering: tuple[str, ...]) -> StandaloneMemory:
        """After one probe: `answering` names the hosts whose authority answered (others than me)."""
        others = sorted((h for h in set(answering) if h != self.me), key=self.rank)
        mine = self.rank(self.me)
        if memory.serving:
            better = [h for h in others if self.rank(h) < mine]
            if better:
                return StandaloneMemory(False, 0, f"yielding to {better[0]}, ranked above this host")
            return replace(memory, silent=0, reason="serving")
        if others:
            if self.rank(others[0]) < mine or not set(others) <= set(self.priority):
                return StandaloneMemory(False, 0, f"standby: {others[0]} answers")
            outranked = memory.outranked + 1
            if outranked >= self.silent_probes:
                return StandaloneMemory(
                    True, 0, f"taking the authority back from {others[0]}, ranked below this host"
                )
            return StandaloneMemory(
                False,
                0,
                f"{others[0]}, ranked below this host, answers ({outranked} of {self.silent_probes})",
                outranked,
            )
        silent = memory.silent + 1
        needed = max(self.silent_probes, self.busy_probes) + mine * self.rank_probes
        if silent >= needed:
            return StandaloneMemory(True, 0, f"taking over: no authority answered {silent} probes")
        return StandaloneMemory(False, silent, f"no authority answered {silent} of {needed} probes")
