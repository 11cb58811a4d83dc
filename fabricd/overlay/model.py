"""The overlay as fabricd plans it: MTU, head-end replication list, static MAC entries, reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fabricd.config.model import IPAddress

PeerState = Literal["up", "offline", "self"]


@dataclass(frozen=True, slots=True)
class FloodEntry:
    """One all-zeros FDB entry: broadcast, multicast and unknown unicast are copied to `vtep`."""

    peer: str
    vtep: IPAddress


@dataclass(frozen=True, slots=True)
class MacEntry:
    """A static FDB entry: frames for `mac` (lower-case, colon form) go to `vtep` only."""

    mac: str
    vtep: IPAddress
    origin: str  # project/instance/device


@dataclass(frozen=True, slots=True)
class OverlayRefusal:
    """Something the planner will not install, with the reason an operator reads in fabricctl."""

    subject: str  # "mtu", "peer <name>", "member <name>", "nic <project/instance/device>"
    reason: str


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as fabricctl shows it. `address` is None only when it could not be worked out."""

    name: str
    address: IPAddress | None
    state: PeerState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class OverlayPlan:
    """The planner's answer, every part sorted, so equal inputs give equal plans."""

    mtu: int
    flood: tuple[FloodEntry, ...] = ()
    macs: tuple[MacEntry, ...] = ()
    refused: tuple[OverlayRefusal, ...] = ()
    peers: tuple[PeerView, ...] = ()
