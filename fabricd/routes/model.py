"""Routes as fabricd plans them: a prefix, its next hop, where it came from and its attributes."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
RouteState = Literal["announced", "refused", "pending"]


@dataclass(frozen=True, slots=True, order=True)
class Origin:
    """Which LXD object asked for a route: shown to operators and used to find duplicate owners."""

    kind: str  # ovn-subnet, nic-external-route, forward, load-balancer, instance-address, user-route, service
    project: str
    network: str
    instance: str = ""  # empty for network-level origins
    key: str = ""  # the config key or device, e.g. eth0/ipv4.routes.external

    def __str__(self) -> str:
        parts = [self.project, self.network] + ([self.instance] if self.instance else [])
        text = "/".join(parts)
        return f"{self.kind}:{text}" + (f"[{self.key}]" if self.key else "")


@dataclass(frozen=True, slots=True, order=True)
class RouteAttributes:
    communities: tuple[str, ...] = ()  # "65000:100"
    large_communities: tuple[str, ...] = ()  # "65000:1:2"
    med: int | None = None
    local_pref: int | None = None


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """One announcement. Equal routes are one announcement; a changed attribute is a new route."""

    prefix: IPNetwork
    next_hop: IPAddress
    origin: Origin
    attributes: RouteAttributes = RouteAttributes()

    @property
    def version(self) -> int:
        return self.prefix.version


@dataclass(frozen=True, slots=True, order=True)
class Refusal:
    """A route fabricd will not announce, with the reason an operator reads in fabricctl."""

    prefix: str  # as written in LXD, which may not even parse
    origin: Origin
    reason: str


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The planner's answer, every part sorted.

    `refused` breaks policy (outside the allowed ranges, default route, duplicate owner, bad value);
    `withheld` is valid but not this host's to announce (instance stopped or on another member,
    active chassis elsewhere). Both carry a reason for fabricctl.
    """

    routes: tuple[Route, ...] = ()
    refused: tuple[Refusal, ...] = ()
    withheld: tuple[Refusal, ...] = ()
