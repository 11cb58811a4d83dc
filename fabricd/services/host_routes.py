"""Host routes to local backends: taking the kernel from what is in place to the plan, in order.

`apply_route_steps` runs the route steps of `ordered_steps` against a `RouteKernel`; the BGP steps
are the route applier's, which runs earlier in the same pass, so a `bgp.withdraw` still listed
here means that withdraw has not happened yet and the `route.remove` that requires it is skipped
(and retried next pass). `NetlinkRoutes` is the kernel through pyroute2: blocking, run in a
worker thread. Every route it installs carries `RTPROT_FABRICD_SERVICES`, so fabricd finds and
removes only its own routes, stale ones from an earlier run included.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any, Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from fabricd.kernel_watch import RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE, RTMGRP_LINK, KernelWatch
from fabricd.routes.model import IPNetwork
from fabricd.services.model import HostRoute, NextHop
from fabricd.services.ordering import OrderedSteps, StepKind

# The route protocol number of fabricd's service host routes (`ip route show proto 251`): outside
# the numbers iproute2 and the routing daemons use (bird 12, zebra 11, bgp 186, ospf 188...).
RTPROT_FABRICD_SERVICES = 251
MAIN_TABLE = 254
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_REMOVE_ROUNDS = 64  # an IPv6 multipath route may go one next hop at a time on old kernels
RT_SCOPE_NOWHERE = 255  # in a delete: any scope (a stale route may be a link-scope device route)


class RouteKernel(Protocol):
    def install(self, route: HostRoute) -> None: ...

    def replace(self, route: HostRoute) -> None: ...

    def remove(self, prefix: IPNetwork) -> None: ...


@dataclass(slots=True)
class RouteOutcome:
    done: list[tuple[StepKind, IPNetwork]] = field(default_factory=list)
    skipped: list[tuple[StepKind, IPNetwork, str]] = field(default_factory=list)
    failed: list[tuple[StepKind, IPNetwork, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.done)


def apply_route_steps(steps: OrderedSteps, kernel: RouteKernel) -> RouteOutcome:
    """Run the route steps in order; a step whose required step did not succeed is skipped."""
    outcome = RouteOutcome()
    succeeded: set[tuple[StepKind, IPNetwork]] = set()
    for step in steps.steps:
        if step.kind in ("bgp.withdraw", "bgp.announce"):
            continue  # the route applier's; still listed means not done (yet)
        if step.requires is not None and (step.requires, step.prefix) not in succeeded:
            outcome.skipped.append((step.kind, step.prefix, f"waits for {step.requires}"))
            continue
        try:
            if step.kind == "route.install" and step.route is not None:
                kernel.install(step.route)
            elif step.kind == "route.replace" and step.route is not None:
                kernel.replace(step.route)
            elif step.kind == "route.remove":
                kernel.remove(step.prefix)
            else:
                continue
        except Exception as exc:  # one route failing must not stop the others
            outcome.failed.append((step.kind, step.prefix, f"{type(exc).__name__}: {exc}"))
            continue
        succeeded.add((step.kind, step.prefix))
        outcome.done.append((step.kind, step.prefix))
    return outcome


class NetlinkRoutes:
    """fabricd's service host routes in the main table, through pyroute2 (blocking)."""

    def __init__(self, proto: int = RTPROT_FABRICD_SERVICES, table: int = MAIN_TABLE) -> None:
        self.proto = proto
        self.table = table
        # Link and route notifications since the last read: without any, an idle pass reuses it.
        self._watch = KernelWatch(RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
        self._last: tuple[HostRoute, ...] | None = None

    @contextmanager
    def _ipr(self) -> Iterator[IPRoute]:
        ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()

    def read(self) -> tuple[HostRoute, ...]:
        """Every route in the table with fabricd's protocol number, next hops by device name; the
        last read's when the kernel announced no link or route change since (or a minute passed)."""
        if not self._watch.changed() and self._last is not None:
            return self._last
        found: dict[IPNetwork, set[NextHop]] = {}
        with self._ipr() as ipr:
            names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
            for family in _FAMILIES:
                for msg in ipr.get_routes(family=family, table=self.table, proto=self.proto):
                    if msg["proto"] != self.proto or msg.get_attr("RTA_TABLE") not in (None, self.table):
                        continue
                    dst = msg.get_attr("RTA_DST")
                    if dst is None:
                        continue
                    prefix = ip_network(f"{dst}/{msg['dst_len']}", strict=False)
                    found.setdefault(prefix, set()).update(_next_hops(msg, names))
        self._last = tuple(
            sorted(
                (HostRoute(p, tuple(sorted(h, key=NextHop.key))) for p, h in found.items()),
                key=HostRoute.key,
            )
        )
        self._watch.read()
        return self._last

    def install(self, route: HostRoute) -> None:
        with self._ipr() as ipr:
            ipr.route("add", **self._spec(ipr, route))

    def replace(self, route: HostRoute) -> None:
        with self._ipr() as ipr:
            ipr.route("replace", **self._spec(ipr, route))

    def remove(self, prefix: IPNetwork) -> None:
        with self._ipr() as ipr:
            for _ in range(_REMOVE_ROUNDS):
                try:
                    ipr.route(
                        "del",
                        dst=str(prefix),
                        family=_family(prefix),
                        table=self.table,
                        proto=self.proto,
                        scope=RT_SCOPE_NOWHERE,
                    )
                except NetlinkError as exc:
                    if exc.code == errno.ESRCH:
                        return  # gone (or never there): what was wanted
                    raise

    def _spec(self, ipr: IPRoute, route: HostRoute) -> dict[str, Any]:
        hops = [{"gateway": str(h.address), "oif": _index(ipr, h.device)} for h in route.next_hops]
        if not hops:
            raise ValueError(f"host route to {route.prefix} has no next hop")
        spec: dict[str, Any] = {
            "dst": str(route.prefix),
            "family": _family(route.prefix),
            "table": self.table,
            "proto": self.proto,
        }
        if len(hops) == 1:
            spec.update(hops[0])
        else:
            spec["multipath"] = hops
        return spec


def _family(prefix: IPNetwork) -> int:
    return socket.AF_INET if prefix.version == 4 else socket.AF_INET6


def _index(ipr: IPRoute, device: str) -> int:
    found = ipr.link_lookup(ifname=device)
    if not found:
        raise ValueError(f"device {device} does not exist")
    return int(found[0])


def _next_hops(msg: Any, names: dict[int, str]) -> set[NextHop]:
    hops = set()
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        for hop in multipath:
            gateway = hop.get_attr("RTA_GATEWAY")
            if gateway is not None:
                hops.add(NextHop(ip_address(gateway), names.get(int(hop["oif"]), str(hop["oif"]))))
        return hops
    gateway = msg.get_attr("RTA_GATEWAY")
    oif = msg.get_attr("RTA_OIF")
    if gateway is not None and oif is not None:
        hops.add(NextHop(ip_address(gateway), names.get(int(oif), str(oif))))
    return hops
