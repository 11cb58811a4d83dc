"""Routes as ExaBGP API lines, and the per-peer difference between what is wanted and what is sent (pure).

ExaBGP 5 syntax (checked against 5.0.15, acked `done`; anything it cannot parse is acked `error`):
    neighbor 10.99.1.1 announce route 10.200.2.0/24 next-hop 10.99.1.11 med 10 local-preference 200
        community [65000:1 65000:2] large-community [65000:1:2]
    neighbor 10.99.1.1 withdraw route 10.200.2.0/24 next-hop 10.99.1.11
An announce for a prefix replaces the previous one for that prefix on that neighbor, so a changed
route is one announce and never a withdraw first (no gap at the peer).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fabricd.bgp.exabgp_config import peer_families
from fabricd.config.model import PeerConfig
from fabricd.routes.model import IPAddress, IPNetwork, Route

Action = Literal["announce", "withdraw"]

_U16 = r"(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4})"
_COMMUNITY = re.compile(rf"{_U16}:{_U16}")
_LARGE = re.compile(r"\d{1,10}:\d{1,10}:\d{1,10}")
_U32_MAX = 2**32 - 1


class RouteError(ValueError):
    """A route whose attributes cannot be put on the wire; the planner should have refused it."""


def _check_u32(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= _U32_MAX:
        raise RouteError(f"{name} {value} is not 0..{_U32_MAX}")


def _attributes(route: Route) -> str:
    attrs = route.attributes
    _check_u32("med", attrs.med)
    _check_u32("local-preference", attrs.local_pref)
    for community in attrs.communities:
        if not _COMMUNITY.fullmatch(community):
            raise RouteError(f"community {community!r} is not ASN:VALUE with 16-bit parts")
    for large in attrs.large_communities:
        if not _LARGE.fullmatch(large) or any(int(p) > _U32_MAX for p in large.split(":")):
            raise RouteError(f"large community {large!r} is not A:B:C with 32-bit parts")
    parts = []
    if attrs.med is not None:
        parts.append(f" med {attrs.med}")
    if attrs.local_pref is not None:
        parts.append(f" local-preference {attrs.local_pref}")
    if attrs.communities:
        parts.append(f" community [{' '.join(attrs.communities)}]")
    if attrs.large_communities:
        parts.append(f" large-community [{' '.join(attrs.large_communities)}]")
    return "".join(parts)


def prefix_key(prefix: IPNetwork) -> tuple[int, int, int]:
    return prefix.version, int(prefix.network_address), prefix.prefixlen


def route_key(route: Route) -> tuple[tuple[int, int, int], int, int, str, str]:
    """A total order over routes (Route's own order fails across families and on med=None)."""
    attrs = repr(route.attributes)
    return prefix_key(route.prefix), route.next_hop.version, int(route.next_hop), attrs, str(route.origin)


def _check_families(route: Route) -> None:
    if route.prefix.version != route.next_hop.version:
        raise RouteError(f"{route.prefix} has an IPv{route.next_hop.version} next hop {route.next_hop}")


def announce_line(peer: IPAddress, route: Route) -> str:
    _check_families(route)
    return f"neighbor {peer} announce route {route.prefix} next-hop {route.next_hop}{_attributes(route)}"


def withdraw_line(peer: IPAddress, route: Route) -> str:
    return f"neighbor {peer} withdraw route {route.prefix} next-hop {route.next_hop}"


def carries(peer: PeerConfig, route: Route) -> bool:
    """A session carries a route of its own address family only, and only if that family is on.

    IPv6 routes over an IPv4 session would need an IPv6 next hop that ExaBGP will not invent
    (`next-hop self` is refused), so they go over the IPv6 session instead; and the other way round.
    """
    family = "ipv4-unicast" if route.version == 4 else "ipv6-unicast"
    return peer.address.version == route.version and family in peer_families(peer)


@dataclass(frozen=True, slots=True)
class Desired:
    """One route per prefix, the peers each goes to, and what was set aside on the way."""

    routes: Mapping[IPNetwork, Route]
    by_peer: Mapping[IPAddress, Mapping[IPNetwork, Route]]
    duplicates: tuple[Route, ...] = ()  # same prefix as a kept route, different next hop/attributes
    aliases: tuple[Route, ...] = ()  # same announcement as a kept route, another origin: shares its fate
    invalid: tuple[tuple[Route, str], ...] = ()  # cannot be rendered, with the reason
    unreachable: tuple[Route, ...] = ()  # no peer carries its family


def plan(routes: Collection[Route], peers: Sequence[PeerConfig]) -> Desired:
    """Choose one route per prefix (the lowest, so the choice never depends on input order)."""
    chosen: dict[IPNetwork, Route] = {}
    duplicates: list[Route] = []
    aliases: list[Route] = []
    invalid: list[tuple[Route, str]] = []
    for route in sorted(set(routes), key=route_key):
        try:
            announce_line(route.next_hop, route)
        except RouteError as exc:
            invalid.append((route, str(exc)))
            continue
        kept = chosen.get(route.prefix)
        if kept is None:
            chosen[route.prefix] = route
        elif announce_line(kept.next_hop, kept) != announce_line(kept.next_hop, route):
            duplicates.append(route)
        else:
            aliases.append(route)  # equal on the wire, only the origin differs: no conflict
    by_peer: dict[IPAddress, dict[IPNetwork, Route]] = {peer.address: {} for peer in peers}
    unreachable = []
    for prefix, route in chosen.items():
        targets = [peer for peer in peers if carries(peer, route)]
        for peer in targets:
            by_peer[peer.address][prefix] = route
        if not targets:
            unreachable.append(route)
    return Desired(chosen, by_peer, tuple(duplicates), tuple(aliases), tuple(invalid), tuple(unreachable))


@dataclass(frozen=True, slots=True)
class Command:
    """One API line and what it does, so its ack can be applied to the right peer and prefix."""

    peer: IPAddress
    action: Action
    route: Route
    line: str


def diff(
    peer: IPAddress, desired: Mapping[IPNetwork, Route], sent: Mapping[IPNetwork, Route]
) -> list[Command]:
    """The commands that turn `sent` into `desired` for one peer: withdraws first, then announces.

    A route is unchanged when its announce line is the same, so a new origin alone sends nothing.
    """
    commands = [
        Command(peer, "withdraw", route, withdraw_line(peer, route))
        for prefix, route in sorted(sent.items(), key=lambda item: prefix_key(item[0]))
        if prefix not in desired
    ]
    for prefix, route in sorted(desired.items(), key=lambda item: prefix_key(item[0])):
        line = announce_line(peer, route)
        old = sent.get(prefix)
        if old is None or announce_line(peer, old) != line:
            commands.append(Command(peer, "announce", route, line))
    return commands


def full_announce(by_peer: Mapping[IPAddress, Mapping[IPNetwork, Route]]) -> Iterable[Command]:
    """Everything, as after a restart of ExaBGP when nothing is announced."""
    for peer, routes in sorted(by_peer.items(), key=lambda item: (item[0].version, item[0])):
        yield from diff(peer, routes, {})
