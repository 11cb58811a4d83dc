"""What ExaBGP writes to its helper, parsed; and the BGP peers' state built from it.

With `exabgp.api.ack` on and `encoder json`, ExaBGP 5 writes one line per event:
- `done` / `error`: the ack of one command, in the order the commands were written;
- `{"type": "state", "neighbor": {"address": {"peer": ..}, "state": "connected"|"up"|"down",
  "reason": ..}, ...}` for every session change (`neighbor-changes`);
- `{"type": "notification", "notification": "shutdown"}` as it exits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from ipaddress import ip_address
from typing import Literal

from fabricd.config.model import IPAddress, PeerConfig

SessionState = Literal["idle", "connect", "established"]
# ExaBGP's word → ours: "connected" is TCP up with the OPEN exchange still going.
_STATES: dict[str, SessionState] = {"connected": "connect", "up": "established", "down": "idle"}


@dataclass(frozen=True, slots=True)
class Ack:
    ok: bool


@dataclass(frozen=True, slots=True)
class NeighborChange:
    peer: IPAddress
    state: SessionState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Shutdown:
    """ExaBGP is exiting; its sessions are closing."""


@dataclass(frozen=True, slots=True)
class Unknown:
    line: str


Message = Ack | NeighborChange | Shutdown | Unknown


def parse_line(line: str) -> Message:
    text = line.strip()
    if text in ("done", "error"):
        return Ack(text == "done")
    if text == "shutdown":
        return Shutdown()
    try:
        data = json.loads(text)
    except ValueError:
        return Unknown(text)
    if not isinstance(data, dict):
        return Unknown(text)
    if data.get("answer") in ("done", "error"):  # the JSON form of acks, should ExaBGP switch
        return Ack(data["answer"] == "done")
    kind = data.get("type")
    if kind == "notification" and data.get("notification") == "shutdown":
        return Shutdown()
    if kind == "state":
        return _neighbor_change(data, text)
    return Unknown(text)


def _neighbor_change(data: dict[str, object], text: str) -> Message:
    neighbor = data.get("neighbor")
    if not isinstance(neighbor, dict):
        return Unknown(text)
    address = neighbor.get("address")
    state = _STATES.get(str(neighbor.get("state")))
    if not isinstance(address, dict) or state is None:
        return Unknown(text)
    try:
        peer = ip_address(str(address.get("peer")))
    except ValueError:
        return Unknown(text)
    reason = neighbor.get("reason")
    return NeighborChange(peer, state, None if reason is None else str(reason))


@dataclass(frozen=True, slots=True)
class PeerStatus:
    name: str
    address: IPAddress
    asn: int
    state: SessionState = "idle"
    since: float = 0.0  # unix time of the last state change; uptime when established
    prefixes_sent: int = 0  # acked announcements, counted while established
    last_error: str | None = None  # why the session last went down
    flaps: int = 0  # times an established session went down since fabricd started

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "name": self.name,
            "address": str(self.address),
            "asn": self.asn,
            "state": self.state,
            "since": self.since,
            "uptime_seconds": round(max(0.0, now - self.since), 3) if self.state == "established" else None,
            "prefixes_sent": self.prefixes_sent,
            "last_error": self.last_error,
            "flaps": self.flaps,
        }


class PeerTable:
    """The configured peers' session states; only ever holds configured peers."""

    def __init__(self, peers: Iterable[PeerConfig], clock: Callable[[], float] = time.time) -> None:
        self._now = clock
        started = self._now()
        self._peers = {p.address: PeerStatus(p.name, p.address, p.asn, since=started) for p in peers}

    def apply(self, change: NeighborChange) -> PeerStatus | None:
        """Record a change; returns the new status, or None for an unknown peer or no change."""
        old = self._peers.get(change.peer)
        if old is None or (old.state == change.state and change.reason is None):
            return None
        error = change.reason if change.state == "idle" else old.last_error
        went_down = old.state == "established" and change.state != "established"
        flaps = old.flaps + 1 if went_down else old.flaps
        new = replace(old, state=change.state, since=self._now(), last_error=error, flaps=flaps)
        self._peers[change.peer] = new
        return new

    def reconfigure(self, peers: Iterable[PeerConfig], restarted: Collection[IPAddress]) -> None:
        """The peers after a config reload: a peer kept as it was keeps its state and uptime;
        a new or changed one starts idle (its session starts over)."""
        now, old = self._now(), self._peers
        self._peers = {
            p.address: old[p.address]
            if p.address in old and p.address not in restarted
            else PeerStatus(p.name, p.address, p.asn, since=now)
            for p in peers
        }

    def all_down(self, reason: str) -> None:
        """ExaBGP is gone: every session with it is gone too."""
        now = self._now()
        for address, status in self._peers.items():
            since = status.since if status.state == "idle" else now
            flaps = status.flaps + 1 if status.state == "established" else status.flaps
            self._peers[address] = replace(status, state="idle", since=since, last_error=reason, flaps=flaps)

    def state(self, address: IPAddress) -> SessionState | None:
        status = self._peers.get(address)
        return None if status is None else status.state

    def established(self, address: IPAddress) -> bool:
        status = self._peers.get(address)
        return status is not None and status.state == "established"

    def snapshot(self, sent_counts: dict[IPAddress, int]) -> tuple[PeerStatus, ...]:
        return tuple(
            replace(s, prefixes_sent=sent_counts.get(a, 0) if s.state == "established" else 0)
            for a, s in self._peers.items()
        )
