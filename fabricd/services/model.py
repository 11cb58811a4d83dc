"""Anycast services as the planner sees and answers them: plain frozen values, every list sorted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fabricd.config.model import ServiceConfig
from fabricd.frozen import FrozenMap
from fabricd.routes.model import IPAddress, IPNetwork, RoutePlan

GRACEFUL_SHUTDOWN = "65535:0"  # RFC 8326: receivers lower the route's preference

ServiceSource = Literal["config", "instances"]
AddressStateName = Literal["announced", "degraded", "draining", "withdrawn", "refused"]


def address_key(address: IPAddress) -> tuple[int, int]:
    """IPv4 first, then by value: one order across families (ipaddress refuses to compare them)."""
    return address.version, int(address)


def prefix_order(prefix: IPNetwork) -> tuple[int, int, int]:
    return prefix.version, int(prefix.network_address), prefix.prefixlen


@dataclass(frozen=True, slots=True, order=True)
class BackendId:
    """One instance backing one service; the key of the per-backend health state."""

    service: str
    project: str
    instance: str

    def __str__(self) -> str:
        return f"{self.service}:{self.project}/{self.instance}"


@dataclass(frozen=True, slots=True)
class Service:
    """A service in force: from fabricd's config or agreed on by the instances that define it."""

    config: ServiceConfig
    source: ServiceSource = "config"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def project(self) -> str:
        return self.config.backends.project


@dataclass(frozen=True, slots=True, order=True)
class ServiceProblem:
    """A definition or an instance fabricd refused for a service, with the reason for fabricctl."""

    service: str
    project: str
    instance: str  # "" when the whole service is refused
    reason: str


@dataclass(frozen=True, slots=True)
class NextHop:
    """A backend's address on the bridge the host route leaves by."""

    address: IPAddress
    device: str

    def key(self) -> tuple[int, int, str]:
        return (*address_key(self.address), self.device)


@dataclass(frozen=True, slots=True)
class HostRoute:
    """The kernel route that carries an anycast address to this host's backends (ECMP when
    several next hops). The applier reports the ones it installed back to the planner."""

    prefix: IPNetwork
    next_hops: tuple[NextHop, ...]  # sorted by NextHop.key

    def key(self) -> tuple[int, int, int]:
        return prefix_order(self.prefix)


@dataclass(frozen=True, slots=True)
class Backend:
    """A backend on this host: where to check it and where to route to it.

    `addresses` holds at most one address per family, on `device`; `problem` says why it cannot
    be routed to (no address yet, an OVN network...), in which case it is not checked either."""

    id: BackendId
    device: str = ""
    addresses: tuple[IPAddress, ...] = ()
    problem: str = ""

    def address(self, version: int) -> IPAddress | None:
        return next((a for a in self.addresses if a.version == version), None)


@dataclass(frozen=True, slots=True)
class BackendCheck:
    """What the health checker runs for one local backend (`target` None: exec, in the instance)."""

    id: BackendId
    target: IPAddress | None


@dataclass(frozen=True, slots=True)
class AddressState:
    """One anycast address on this host, for `fabricctl services`."""

    service: str
    address: IPAddress
    state: AddressStateName
    reason: str

    def key(self) -> tuple[str, int, int]:
        return (self.service, *address_key(self.address))


@dataclass(frozen=True, slots=True)
class DrainState:
    """What the operator drained, and since when (wall-clock seconds, kept across restarts)."""

    host: float | None = None  # the whole host
    services: FrozenMap[float] = field(default_factory=FrozenMap)

    def since(self, service: str) -> float | None:
        """When `service` began draining here: the earlier of the host's and its own drain."""
        times = [t for t in (self.host, self.services.get(service)) if t is not None]
        return min(times) if times else None


OWNED_FORWARD = "fabricd anycast service"  # the description of the forwards fabricd writes


@dataclass(frozen=True, slots=True, order=True)
class NetworkKey:
    project: str
    network: str


@dataclass(frozen=True, slots=True, order=True)
class ForwardStep:
    """One LXD call for an OVN service: create or update the forward `listen` on `network` with
    `target` as its default target, or delete it (services/ovn_forwards.py)."""

    network: NetworkKey
    listen: str
    action: Literal["create", "update", "delete"]
    target: str = ""


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """What this host should do for its anycast services.

    `routes` is a contribution to the route feature's plans (ROUTE_PLANS): announcements with
    this host as next hop, refusals and withheld addresses with reasons. `host_routes` are the
    kernel routes to install (and every other fabricd service route to remove, after the
    withdraw). `wake_at` is when the plan next changes by itself (a drain delay running out)."""

    services: tuple[Service, ...] = ()
    backends: tuple[Backend, ...] = ()
    checks: tuple[BackendCheck, ...] = ()
    host_routes: tuple[HostRoute, ...] = ()
    routes: RoutePlan = field(default_factory=RoutePlan)
    addresses: tuple[AddressState, ...] = ()
    problems: tuple[ServiceProblem, ...] = ()
    wake_at: float | None = None
    forward_steps: tuple[ForwardStep, ...] = ()  # only on the member that manages OVN forwards
