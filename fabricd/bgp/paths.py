"""Which way each BGP session leaves this host, read from the kernel: a next hop is only useful to a
peer if the peer can reach it, that is when it lies on a subnet of the interface the session uses
(or is the session's own local address).

Read by netlink in a worker thread each pass (one route lookup and one address list per peer).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface

from pyroute2 import IPRoute

from fabricd.agent.loop import Key
from fabricd.config.model import IPAddress, PeerConfig
from fabricd.kernel_watch import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    KernelWatch,
)
from fabricd.routes.model import IPNetwork


@dataclass(frozen=True, slots=True)
class SessionPath:
    peer: str  # the peer's name
    address: IPAddress
    interface: str | None = None
    local: IPAddress | None = None  # the source address the kernel uses towards the peer
    connected: tuple[IPNetwork, ...] = ()  # the interface's subnets of the peer's family
    error: str | None = None

    def reaches(self, next_hop: IPAddress) -> bool:
        return next_hop == self.local or any(next_hop in net for net in self.connected)


@dataclass(frozen=True, slots=True)
class SessionPaths:
    paths: tuple[SessionPath, ...] = ()

    def unusable_for(self, next_hop: IPAddress) -> tuple[SessionPath, ...]:
        """The peers of next_hop's family whose session cannot use it (unknown paths never count)."""
        return tuple(
            p
            for p in self.paths
            if p.address.version == next_hop.version and p.error is None and not p.reaches(next_hop)
        )


SESSION_PATHS: Key[SessionPaths] = Key("bgp-session-paths")


def read_session_paths(peers: Sequence[PeerConfig], netns: str | None = None) -> SessionPaths:
    from pyroute2 import NetNS

    paths = []
    with IPRoute() if netns is None else NetNS(netns) as ipr:
        for peer in peers:
            paths.append(_path(ipr, peer, in_own_namespace=netns is None))
    return SessionPaths(tuple(paths))


def _path(ipr: IPRoute, peer: PeerConfig, in_own_namespace: bool = True) -> SessionPath:
    family = socket.AF_INET if peer.address.version == 4 else socket.AF_INET6
    try:
        found = ipr.route("get", dst=str(peer.address), family=family)
    except Exception as exc:  # NetlinkError: no route to the peer
        return SessionPath(peer.name, peer.address, error=f"no route to {peer.address}: {exc}")
    if not found:
        return SessionPath(peer.name, peer.address, error=f"no route to {peer.address}")
    route = found[0]
    index = route.get_attr("RTA_OIF")
    source = route.get_attr("RTA_PREFSRC")
    name = _interface_name(ipr, index, in_own_namespace) if index is not None else None
    connected = tuple(
        ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network
        for a in ipr.get_addr(index=index, family=family)
    )
    local = peer.local_address or (ip_address(source) if source else None)
    return SessionPath(peer.name, peer.address, name, local, connected)


def _interface_name(ipr: IPRoute, index: int, in_own_namespace: bool) -> str | None:
    """In our own namespace, the C library's if_indextoname: decoding a whole netlink link message
    for its name cost more than the rest of the lookup, every pass."""
    try:
        if in_own_namespace:
            return socket.if_indextoname(index)
        links = ipr.get_links(index)
    except OSError:
        return None
    return str(links[0].get_attr("IFLA_IFNAME")) if links else None


class SessionPathObserver:
    """Reads the paths again only when the kernel announced a link, address or route change since
    the last read (or a minute passed), or the peers changed: an idle pass costs no netlink read."""

    key = SESSION_PATHS

    def __init__(self, peers: Sequence[PeerConfig]) -> None:
        self._peers = tuple(peers)
        self.last = SessionPaths()
        self._read_for: tuple[PeerConfig, ...] | None = None
        self._watch = KernelWatch(
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
        )

    def reconfigure(self, peers: Sequence[PeerConfig]) -> None:
        self._peers = tuple(peers)

    def _read(self) -> SessionPaths:
        peers = self._peers
        if not self._watch.changed() and peers == self._read_for:
            return self.last
        paths = read_session_paths(peers)
        self._watch.read()
        self._read_for = peers
        return paths

    async def observe(self) -> SessionPaths:
        self.last = await asyncio.to_thread(self._read)
        return self.last
