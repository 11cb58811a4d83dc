"""The agent's health as one verdict, for `fabricctl`'s exit code and the metrics endpoint.

Nagios-style codes: 0 healthy, 1 unreachable (decided by fabricctl, which could not ask), 3
degraded: the agent answers but something needs a look. Degraded is everything status lists as a
problem (LXD unreachable, a failing reconcile step, a second DHCP server, the authority not
serving...), an agent still starting (no reconcile pass yet), a configured BGP session that is not
established, and a refused route. Pure: a function of the status reply alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

HEALTHY = 0
UNREACHABLE = 1
DEGRADED = 3

State = Literal["healthy", "degraded"]


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int
    reasons: tuple[str, ...] = ()

    @property
    def state(self) -> State:
        return "healthy" if self.code == HEALTHY else "degraded"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "state": self.state, "reasons": list(self.reasons)}


def peer_reasons(peers: Any) -> list[str]:
    reasons = []
    for peer in peers or ():
        if not isinstance(peer, Mapping) or peer.get("state") == "established":
            continue
        why = f": {peer['last_error']}" if peer.get("last_error") else ""
        reasons.append(f"bgp peer {peer.get('name')} ({peer.get('address')}) is {peer.get('state')}{why}")
    return reasons


def refused_reasons(routes: Any) -> list[str]:
    refused = [r for r in routes or () if isinstance(r, Mapping) and r.get("state") == "refused"]
    if not refused:
        return []
    first = refused[0]
    more = f" (and {len(refused) - 1} more; see fabricctl routes)" if len(refused) > 1 else ""
    return [f"{len(refused)} route(s) refused: {first.get('prefix')}: {first.get('reason')}{more}"]


def verdict(status: Mapping[str, Any]) -> Verdict:
    """The verdict on one `fabricctl status --json` reply."""
    reasons = [str(p) for p in status.get("problems") or ()]
    reconcile = status.get("reconcile")
    if isinstance(reconcile, Mapping) and reconcile.get("passes") == 0:
        reasons.append("starting: no reconcile pass has finished yet")
    reasons += peer_reasons(status.get("bgp_peers"))
    reasons += refused_reasons(status.get("routes"))
    return Verdict(DEGRADED if reasons else HEALTHY, tuple(reasons))
