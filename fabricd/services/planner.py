"""The service planner: services, LXD, health, drain and the installed host routes → a ServicePlan.

Pure and deterministic: no I/O and no clock (`now` is passed in, wall-clock seconds, the clock
drain times are kept in), every list sorted, the same answer for any order of the snapshot.

Per anycast address of every service, on this member:
1. policy: the address of a config service is allowed by being configured; one defined on
   instances must lie inside routes.allowed_ranges. Either way the route limits of `routes:`
   (prefix lengths, special-purpose space) apply. A failing address is refused.
2. next hops of the host route: the local backends that are healthy (up or falling), on an address
   of the family; with `on_failure: degrade` and none healthy, every local backend that has been
   checked (degraded). No next hop: no host route, no announcement.
3. the announcement, with this host's underlay address of the family as next hop (as the route
   planner does for bridge networks), only once the applier reports a host route for the address
   installed with at least one of those next hops: never announce what the host cannot deliver.
4. attributes: the service's med and communities (else routes.med / routes.communities); when
   degraded, degraded_med and degraded_communities added; while draining (drain_delay seconds from
   the drain), drain_med and GRACEFUL_SHUTDOWN 65535:0; after that, withdrawn.
The host route stays while its backends are healthy, drained or not: traffic still arriving for a
withdrawn address is delivered. Every address not announced is withheld (or refused) with a reason.

A service whose backends are on an OVN network is planned by `ovn_forwards.py` instead: an LXD
forward to one serving backend, written by the managing member, announced by the route planner.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from fabricd.config.model import FabricConfig, ServiceConfig
from fabricd.lxd.records import LXDSnapshot
from fabricd.routes.conflicts import refusal_key
from fabricd.routes.model import (
    IPAddress,
    IPNetwork,
    Origin,
    Refusal,
    Route,
    RouteAttributes,
    RoutePlan,
    route_key,
)
from fabricd.routes.networks import PlanContext
from fabricd.routes.policy import Ranges, check_prefix, host_prefix
from fabricd.services.backends import check_target, local_backends
from fabricd.services.definitions import resolve_services
from fabricd.services.health import BackendHealth
from fabricd.services.model import (
    GRACEFUL_SHUTDOWN,
    AddressState,
    AddressStateName,
    Backend,
    BackendCheck,
    BackendId,
    DrainState,
    HostRoute,
    NextHop,
    Service,
    ServicePlan,
)
from fabricd.services.ovn_forwards import plan_ovn_forwards


@dataclass(frozen=True, slots=True)
class ServiceInputs:
    config: FabricConfig
    snapshot: LXDSnapshot
    member: str  # this host's member name ("none" standalone), as LXD gives instance locations
    health: Mapping[BackendId, BackendHealth]
    drains: DrainState
    installed: Collection[HostRoute]  # what the applier reports as in the kernel
    now: float


def plan_services(inputs: ServiceInputs) -> ServicePlan:
    definitions = resolve_services(inputs.config.services, inputs.snapshot.instances)
    ctx = PlanContext.of(inputs.snapshot, inputs.config)
    installed = {route.prefix: set(route.next_hops) for route in inputs.installed}
    out = _Plan()
    ovn = plan_ovn_forwards(
        definitions.services,
        inputs.snapshot,
        definitions,
        inputs.health,
        lambda service, address: _policy_problem(service, host_prefix(address), inputs.config),
    )
    on_ovn = {b.id for b in ovn.backends}
    ovn_services = {b.id.service for b in ovn.backends}
    out.backends += ovn.backends
    out.checks += ovn.checks
    out.addresses += ovn.addresses
    for service in definitions.services:
        backends = local_backends(service, inputs.snapshot, inputs.member, definitions)
        backends = [_family_checked(b, service) for b in backends if b.id not in on_ovn]
        out.backends += backends
        out.checks += _checks(service, backends)
        if service.name in ovn_services and not backends:
            continue  # an OVN service: LXD's forward carries it, the route planner announces that
        for address in service.config.addresses:
            _plan_address(out, service, address, backends, inputs, ctx, installed)
    return ServicePlan(
        services=definitions.services,
        backends=tuple(sorted(out.backends, key=lambda b: b.id)),
        checks=tuple(sorted(out.checks, key=lambda c: c.id)),
        host_routes=tuple(sorted(out.host_routes, key=HostRoute.key)),
        routes=RoutePlan(
            tuple(sorted(out.routes, key=route_key)),
            tuple(sorted(out.refused, key=refusal_key)),
            tuple(sorted(out.withheld, key=refusal_key)),
        ),
        addresses=tuple(sorted(out.addresses, key=AddressState.key)),
        problems=definitions.problems,
        wake_at=min(out.wake, default=None),
        forward_steps=ovn.steps,
    )


class _Plan:
    def __init__(self) -> None:
        self.backends: list[Backend] = []
        self.checks: list[BackendCheck] = []
        self.host_routes: list[HostRoute] = []
        self.routes: list[Route] = []
        self.refused: list[Refusal] = []
        self.withheld: list[Refusal] = []
        self.addresses: list[AddressState] = []
        self.wake: list[float] = []

    def hold(self, service: Service, address: IPAddress, state: AddressStateName, reason: str) -> None:
        refusal = Refusal(str(host_prefix(address)), _origin(service), reason)
        (self.refused if state == "refused" else self.withheld).append(refusal)
        self.addresses.append(AddressState(service.name, address, state, reason))


def _origin(service: Service) -> Origin:
    """For a service route the network field names the service ("service:default/dns")."""
    return Origin("service", service.project, service.name, "", "addresses")


def _family_checked(backend: Backend, service: Service) -> Backend:
    """A backend with addresses of none of the service's families cannot serve it."""
    if backend.problem or any(backend.address(a.version) for a in service.config.addresses):
        return backend
    families = " or ".join(sorted({f"IPv{a.version}" for a in service.config.addresses}))
    return Backend(
        backend.id, backend.device, backend.addresses, f"no {families} address on {backend.device}"
    )


def _checks(service: Service, backends: Iterable[Backend]) -> list[BackendCheck]:
    check = service.config.check
    if check is None:
        return []
    return [
        BackendCheck(b.id, None if check.type == "exec" else check_target(b, service))
        for b in backends
        if not b.problem
    ]


def _healthy(service: Service, backend: Backend, health: Mapping[BackendId, BackendHealth]) -> bool:
    if backend.problem:
        return False
    if service.config.check is None:
        return True  # no check: a running, routable backend serves
    state = health.get(backend.id)
    return state is not None and state.healthy


def _checked(backend: Backend, health: Mapping[BackendId, BackendHealth]) -> bool:
    state = health.get(backend.id)
    return not backend.problem and state is not None and state.checked


def _plan_address(
    out: _Plan,
    service: Service,
    address: IPAddress,
    backends: Sequence[Backend],
    inputs: ServiceInputs,
    ctx: PlanContext,
    installed: Mapping[IPNetwork, set[NextHop]],
) -> None:
    prefix = host_prefix(address)
    problem = _policy_problem(service, prefix, inputs.config)
    if problem is not None:
        out.hold(service, address, "refused", problem)
        return
    version = address.version
    usable = [b for b in backends if b.address(version) is not None and not b.problem]
    healthy = [b for b in usable if _healthy(service, b, inputs.health)]
    degraded = False
    if not healthy and service.config.on_failure == "degrade":
        healthy = [b for b in usable if _checked(b, inputs.health)]
        degraded = bool(healthy)
    if not healthy:
        out.hold(service, address, "withdrawn", _why_no_backend(service, version, backends, inputs.health))
        return
    hops = tuple(sorted((NextHop(a, b.device) for b in healthy if (a := b.address(version)) is not None),
                        key=NextHop.key))  # fmt: skip
    out.host_routes.append(HostRoute(prefix, hops))
    next_hop = ctx.host_next_hop(version)
    if isinstance(next_hop, str):
        out.hold(service, address, "withdrawn", next_hop)
        return
    drained_at = inputs.drains.since(service.name)
    draining = drained_at is not None
    if drained_at is not None:
        ends = drained_at + service.config.drain_delay
        if inputs.now >= ends:
            out.hold(
                service,
                address,
                "withdrawn",
                f"drained (withdrawn {service.config.drain_delay:g} s after the drain)",
            )
            return
        out.wake.append(ends)
    if not installed.get(prefix, set()) & set(hops):
        out.hold(service, address, "withdrawn", f"waiting for the host route to {prefix} via {_hops(hops)}")
        return
    attributes = _attributes(service.config, inputs.config, degraded=degraded, draining=draining)
    note = "draining" if draining else ("degraded: no healthy local backend" if degraded else "")
    out.routes.append(Route(prefix, next_hop, _origin(service), attributes, note))
    state: AddressStateName = "draining" if draining else ("degraded" if degraded else "announced")
    out.addresses.append(AddressState(service.name, address, state, _announced_reason(state, healthy)))


def _policy_problem(service: Service, prefix: IPNetwork, config: FabricConfig) -> str | None:
    routes = config.routes
    allowed = [r for r in routes.allowed_ranges if r.version == prefix.version]
    if service.source == "config":
        return check_prefix(prefix, routes, Ranges.of([*allowed, prefix]), f"service {service.name}")
    return check_prefix(
        prefix, routes, Ranges.of(allowed), "routes.allowed_ranges (instance-defined service)"
    )


def _attributes(
    service: ServiceConfig, config: FabricConfig, *, degraded: bool, draining: bool
) -> RouteAttributes:
    routes = config.routes
    med = routes.med if service.med is None else service.med
    communities = list(routes.communities if service.communities is None else service.communities)
    if degraded:
        med = service.degraded_med if service.degraded_med is not None else med
        communities += service.degraded_communities
    if draining:
        med = service.drain_med
        communities.append(GRACEFUL_SHUTDOWN)
    return RouteAttributes(tuple(sorted(set(communities))), routes.large_communities, med, routes.local_pref)


def _why_no_backend(
    service: Service, version: int, backends: Sequence[Backend], health: Mapping[BackendId, BackendHealth]
) -> str:
    if not backends:
        return "no backend on this host"
    details = []
    for backend in backends:
        if backend.problem:
            why = backend.problem
        elif backend.address(version) is None:
            why = f"no IPv{version} address"
        else:
            state = health.get(backend.id)
            why = "not checked yet" if state is None else f"{state.state}: {state.reason}"
        details.append(f"{backend.id.instance} {why}")
    return "no healthy backend here (" + "; ".join(details) + ")"


def _hops(hops: Sequence[NextHop]) -> str:
    return ", ".join(f"{h.address} dev {h.device}" for h in hops)


def _announced_reason(state: AddressStateName, backends: Sequence[Backend]) -> str:
    names = ", ".join(b.id.instance for b in backends)
    if state == "degraded":
        return f"no healthy backend; degraded via {names}"
    if state == "draining":
        return f"draining: GRACEFUL_SHUTDOWN until the drain delay ends; via {names}"
    return f"healthy: {names}"
