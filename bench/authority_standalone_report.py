"""The standalone-election part of the authority benchmark: its goals and figures (pure, no lab).

Goals are computed from the lab's own fabricd config (`dhcp.probe_interval`, `dhcp.silent_probes`,
`dhcp.priority`) with fabricd's own rules (`fabricd/authority/standalone.py`, docs/authority.md):

- takeover: the host ranked `r` (0 = best) takes over after N = max(silent_probes, busy_probes(I))
  + r x rank_probes(I) probes in a row go unanswered. The last probe the old server answered went
  out at the latest at the signal, so the N-th silent one goes out at most N x I after it and
  decides one probe window W later; serving then takes up to TAKEOVER_ALLOWANCE. Bound: N x I + W
  + A; the earliest: (N - 1) x I + W. The goal adds FAILOVER_SLACK_S for a loaded machine.
- take-back: a better-ranked host that starts again serves after hearing only worse-ranked hosts
  answer for silent_probes probes in a row: (silent_probes - 1) x I after its first probe, plus the
  window and the takeover; one more interval is allowed for fabricd's start until its first probe.
  Bound: silent_probes x I + W + A.
- two servers during a take-back: the old server yields at its next probe that hears the new one,
  within one probe interval and the window: I + W.

A round that times out is an infinite sample (`TIMED_OUT`): it stays in `n`, its worst is null and
its goal is missed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.stats import TIMED_OUT, Json, best_median_worst
from fabricd.authority.probe import PROBE_TIMEOUT
from fabricd.authority.standalone import TAKEOVER_ALLOWANCE, busy_probes, rank_probes
from fabricd.config.loader import load_config

# Scheduling on a loaded 2-CPU machine across a dozen probe periods (each probe runs in a worker
# thread, the next waits for it), the reconcile pass that claims the address and starts dnsmasq,
# and the next client REQUEST (every 50 ms).
FAILOVER_SLACK_S = 2.0


@dataclass(frozen=True, slots=True)
class StandaloneSettings:
    """The `dhcp` election settings every host of the lab shares."""

    probe_interval: float
    silent_probes: int
    priority: tuple[str, ...]

    @classmethod
    def from_configs(cls, paths: Iterable[Path]) -> StandaloneSettings:
        """Read from every host's fabricd.yaml; they must agree (the rules assume one setting)."""
        found = set()
        for path in paths:
            dhcp = load_config(path).dhcp
            if dhcp.election != "standalone":
                raise ValueError(f"{path}: dhcp.election is {dhcp.election}, not standalone")
            found.add(cls(dhcp.probe_interval, dhcp.silent_probes, tuple(dhcp.priority)))
        if len(found) != 1:
            raise ValueError(f"the hosts' dhcp settings differ or are missing: {sorted(map(str, found))}")
        return found.pop()

    def takeover_probes(self, host: str) -> int:
        """Unanswered probes in a row after which `host` takes over (fabricd's StandaloneElector)."""
        rank = self.priority.index(host)
        floor = max(self.silent_probes, busy_probes(self.probe_interval))
        return floor + rank * rank_probes(self.probe_interval)


@dataclass(frozen=True, slots=True)
class StandaloneGoals:
    settings: StandaloneSettings
    successor: str  # the host next in line after the best-ranked one
    takeover_probes: int
    failover_earliest_s: float
    failover_bound_s: float
    failover_goal_s: float
    takeback_goal_s: float
    two_servers_goal_s: float

    def json(self) -> Json:
        s = self.settings
        return {
            "settings": {
                "dhcp.probe_interval": s.probe_interval,
                "dhcp.silent_probes": s.silent_probes,
                "dhcp.priority": list(s.priority),
                "probe_window_s": PROBE_TIMEOUT,
                "busy_probes": busy_probes(s.probe_interval),
                "rank_probes": rank_probes(s.probe_interval),
                "takeover_allowance_s": TAKEOVER_ALLOWANCE,
            },
            "successor": self.successor,
            "takeover_probes": self.takeover_probes,
            "failover_earliest_s": self.failover_earliest_s,
            "failover_bound_s": self.failover_bound_s,
            "failover_slack_s": FAILOVER_SLACK_S,
            "failover_goal_s": self.failover_goal_s,
            "takeback_goal_s": self.takeback_goal_s,
            "two_servers_goal_s": self.two_servers_goal_s,
            "how": "takeover_probes N = max(silent_probes, busy_probes) + rank x rank_probes (rank of the "
            "successor, 0 = best); failover bound = N x probe_interval + probe window + takeover allowance, "
            "earliest (N - 1) x probe_interval + probe window, goal = bound + slack; take-back goal = "
            "silent_probes x probe_interval + probe window + takeover allowance (one interval of it for "
            "fabricd's start before its first probe); two servers during a take-back goal = probe_interval "
            "+ probe window",
        }


def standalone_goals(settings: StandaloneSettings, slack: float = FAILOVER_SLACK_S) -> StandaloneGoals:
    interval, window = settings.probe_interval, PROBE_TIMEOUT
    if len(settings.priority) < 2:
        raise ValueError("a failover needs at least two hosts in dhcp.priority")
    successor = settings.priority[1]
    probes = settings.takeover_probes(successor)
    bound = probes * interval + window + TAKEOVER_ALLOWANCE
    return StandaloneGoals(
        settings=settings,
        successor=successor,
        takeover_probes=probes,
        failover_earliest_s=round((probes - 1) * interval + window, 3),
        failover_bound_s=round(bound, 3),
        failover_goal_s=round(bound + slack, 3),
        takeback_goal_s=round(settings.silent_probes * interval + window + TAKEOVER_ALLOWANCE, 3),
        two_servers_goal_s=round(interval + window, 3),
    )


def goal_figure(samples: Sequence[float], goal_max: float | None, digits: int = 3) -> Json:
    """Best / median / worst over the rounds; with a goal, the worst must be at most `goal_max` (a
    timed-out round makes the worst null, which misses it)."""
    shown = best_median_worst(samples, "s", digits)
    if goal_max is not None:
        shown["goal"] = {"worst_max_s": goal_max}
        shown["meets_goal"] = bool(samples) and shown["worst"] is not None and shown["worst"] <= goal_max
    return shown


@dataclass(frozen=True, slots=True)
class Reply:
    """One DHCP reply a client or the offer counter heard: when (monotonic), to which transaction,
    from which serving host (option 224)."""

    at: float
    xid: int
    host: str


def two_servers_seconds(
    replies: Iterable[Reply], returning: str, leaving: str, observed_until: float, quiet: float
) -> float:
    """Seconds both hosts answered during a take-back: from the returning host's first reply to the
    leaving host's last one (0 when it stopped before). TIMED_OUT when the returning host never
    answered, or the leaving one still answered within `quiet` of the end of the observation."""
    ordered = sorted(replies, key=lambda r: r.at)
    first = next((r.at for r in ordered if r.host == returning), None)
    last = max((r.at for r in ordered if r.host == leaving), default=None)
    if first is None or (last is not None and last > observed_until - quiet):
        return TIMED_OUT
    return 0.0 if last is None else max(0.0, last - first)


def doubled_transactions(replies: Iterable[Reply]) -> dict[int, set[str]]:
    """Transactions (xids) that two or more hosts answered."""
    hosts: dict[int, set[str]] = {}
    for reply in replies:
        hosts.setdefault(reply.xid, set()).add(reply.host)
    return {xid: found for xid, found in hosts.items() if len(found) > 1}


def padded(samples: Sequence[float], rounds: int) -> list[float]:
    """The samples of the rounds asked for: a round that never ran (the part stopped early) is a
    timed-out one, never left out."""
    return [*samples, *[TIMED_OUT] * max(0, rounds - len(samples))]


def finite(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None
