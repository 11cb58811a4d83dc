"""Routes as fabricd plans them: a prefix, its next hop, where it came from and its attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


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
    # Why the next hop is not the obvious one, for operators; never sent, never compared.
    note: str = field(default="", compare=False)

    @property
    def version(self) -> int:
        return self.prefix.version


PrefixKey = tuple[int, int, int]
RouteKey = tuple[int, int, int, int, int, str, str, str, str, str, tuple[str, ...], tuple[str, ...], int, int]


def prefix_key(prefix: IPNetwork) -> PrefixKey:
    """Prefixes IPv4 first, then by first address and length (the first fields of route_key)."""
    return prefix.version, int(prefix.network_address), prefix.prefixlen


def route_key(route: Route) -> RouteKey:
    """The one order of routes: prefix (IPv4 first), next hop, origin, attributes; as plain values.

    Every place that picks or lists routes sorts by it, so the outcome never depends on the order
    LXD, a snapshot or a set happened to hand the routes over:
    - which route wins a prefix claimed more than once (the lowest: conflicts, and the speaker if
      it is ever handed two), and which routes routes.max_prefixes keeps (the lowest N);
    - the order of the plan's route list, and so the order the speaker sends in.
    It is Route's own field order made total: Route's `<` fails across families and on a med or
    local preference of None (here None sorts first), and the next hop's family is a field of its
    own so a route whose next hop is of the other family (refused before the wire) never ties.
    """
    p, h, o, a = route.prefix, route.next_hop, route.origin, route.attributes
    return (
        p.version, int(p.network_address), p.prefixlen, h.version, int(h),
        o.kind, o.project, o.network, o.instance, o.key,
        a.communities, a.large_communities,
        -1 if a.med is None else a.med, -1 if a.local_pref is None else a.local_pref,
    )  # fmt: skip


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
