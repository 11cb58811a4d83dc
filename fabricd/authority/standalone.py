"""Who is the authority among standalone hosts: a configured priority list, liveness by DHCP probe.

Without a shared consistent store there is no safe lease, so this mode is honest about what it
can promise. The probe (`fabricd.authority.probe`) sends a DHCP DISCOVER on the overlay every
interval; the authority's dnsmasq names its host in a site-specific option, so every host sees
who answers.
- A standby takes over after `silent_probes` probes in a row with no answer, plus one probe per
  host ranked above it in the list, so the best-ranked standby goes first and the others then
  see it answering.
- A serving host yields as soon as it sees a better-ranked host answering.
- Partition: each side sees silence and one host per side serves; when the partition heals, the
  worse-ranked server yields within one probe interval. Two servers answer during the partition
  and for at most one probe interval after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fabricd.authority.probe import PROBE_TIMEOUT

# Seconds from deciding to take over until dnsmasq answers (claiming the address with its
# announcements, starting dnsmasq): about 0.3 s in the lab; allowed generously.
TAKEOVER_ALLOWANCE = 1.0


def rank_probes(probe_interval: float) -> int:
    """Probes a standby waits per host ranked above it: (n - 1) intervals cover the window and the
    takeover, whatever the phase of either host's probes."""
    return 1 + math.ceil((PROBE_TIMEOUT + TAKEOVER_ALLOWANCE) / probe_interval)


@dataclass(frozen=True, slots=True)
class StandaloneMemory:
    serving: bool = False
    silent: int = 0  # probes in a row that nobody answered
    reason: str = "no probe yet"


@dataclass(frozen=True, slots=True)
class StandaloneElector:
    me: str
    priority: tuple[str, ...]  # best first; this host must be in it
    silent_probes: int = 3
    rank_probes: int = 2  # probes per host ranked above this one; see rank_probes()

    def __post_init__(self) -> None:
        if self.me not in self.priority:
            raise ValueError(f"{self.me} is not in the priority list {list(self.priority)}")

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
            return StandaloneMemory(False, 0, f"standby: {others[0]} answers")
        silent = memory.silent + 1
        needed = self.silent_probes + mine * self.rank_probes
        if silent >= needed:
            return StandaloneMemory(True, 0, f"taking over: no authority answered {silent} probes")
        return StandaloneMemory(False, silent, f"no authority answered {silent} of {needed} probes")
