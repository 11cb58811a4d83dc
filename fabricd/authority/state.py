"""Who serves DHCP/DNS on the overlay, as the election sees it now: what planners and status read."""

from __future__ import annotations

from dataclasses import dataclass

from fabricd.agent.loop import Key


@dataclass(frozen=True, slots=True)
class AuthorityState:
    mode: str  # "lxd-cluster" or "standalone"
    me: str
    serving: bool  # this host may serve now
    holder: str  # the serving host as last seen; "" none, "?" unknown (unreadable record)
    reason: str
    since: float | None = None  # unix time this host started serving
    expires: float | None = None  # unix time this host stops serving unless it renews (cluster)
    epoch: int | None = None  # +1 on every change of holder (cluster)

    @property
    def known_holder(self) -> str | None:
        """The serving host, when one is known."""
        return self.holder if self.holder not in ("", "?") else None


AUTHORITY: Key[AuthorityState] = Key("authority")
