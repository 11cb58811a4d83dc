"""Anycast services with backends on an OVN network, through LXD network forwards: the pure part.

docs/services.md, "OVN". LXD 5.0 has no network load balancers, so
the most LXD allows is a forward whose default target is one backend: failover, not spreading.
- The OVN network: a service's backends are the selected running instances on an OVN network, on
  any member (OVN networks are cluster-wide). LXD refuses one listen address on two OVN networks of
  an uplink, so a service uses one: the lowest (project, name) its backends are on; backends on
  any other are listed with that reason.
- The manager: one member checks the backends and writes the forwards, the lowest-named member LXD
  lists as online (the server itself when standalone). Every member reaches the same answer from
  the same snapshot; none when no member is online. The others show the backends as checked
  elsewhere and the address as LXD lists its forward.
- Per anycast address, the forward's target is the address of that family of the lowest-named
  serving backend; with none serving, no forward.
- The manager deletes the forwards it wrote (description OWNED_FORWARD) that no service wants any
  more: a service removed, its address changed, its backends gone.
- The announcement is the route planner's (kind `forward`, the OVN router's uplink address as
  next hop), so it exists only while LXD lists the forward: an address counts as announced only
  when the forward LXD lists has the wanted target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address

from fabricd.lxd.nics import nic_network
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord
from fabricd.routes.model import IPAddress
from fabricd.routes.policy import parse_interface
from fabricd.services.backends import check_target, selected
from fabricd.services.definitions import Definitions
from fabricd.services.health import BackendHealth
from fabricd.services.model import (
    OWNED_FORWARD,
    AddressState,
    Backend,
    BackendCheck,
    BackendId,
    ForwardStep,
    NetworkKey,
    Service,
    address_key,
)


@dataclass(frozen=True, slots=True)
class OvnBackend:
    backend: Backend  # device holds the OVN network's name; problem says why it cannot serve
    network: NetworkKey | None


@dataclass(frozen=True, slots=True)
class OvnForwardPlan:
    manager: str | None
    backends: tuple[Backend, ...] = ()
    checks: tuple[BackendCheck, ...] = ()  # empty unless this member is the manager
    steps: tuple[ForwardStep, ...] = ()  # empty unless this member is the manager
    addresses: tuple[AddressState, ...] = ()


def managing_member(snapshot: LXDSnapshot) -> str | None:
    if not snapshot.clustered:
        return snapshot.member
    online = sorted(m.name for m in snapshot.members if m.status == "Online")
    return online[0] if online else None


def ovn_backends(service: Service, snapshot: LXDSnapshot, definitions: Definitions) -> list[OvnBackend]:
    """The service's backends on OVN networks, any member; the ones on a second network refused."""
    found = []
    for instance in snapshot.instances:
        if not selected(service, instance, definitions):
            continue
        if definitions.refusal(service.name, instance.project, instance.name) is not None:
            continue
        found.extend(_on_ovn(service, instance, snapshot))
    networks = sorted({b.network for b in found if b.network is not None})
    chosen = networks[0] if networks else None
    out = []
    for item in found:
        if item.network is not None and item.network != chosen and chosen is not None:
            problem = (
                f"is on OVN network {item.network.network}; the service uses {chosen.network} "
                "(LXD refuses one listen address on two OVN networks of an uplink)"
            )
            item = OvnBackend(Backend(item.backend.id, problem=problem), None)
        out.append(item)
    return sorted(out, key=lambda b: b.backend.id)


def _on_ovn(service: Service, instance: InstanceRecord, snapshot: LXDSnapshot) -> list[OvnBackend]:
    backend_id = BackendId(service.name, instance.project, instance.name)
    anycast = set(service.config.addresses)
    for nic in sorted(instance.nics, key=lambda n: n.device):
        name = nic_network(nic)
        record = snapshot.network(instance.project, name) or snapshot.network("default", name)
        if record is None or not record.managed or record.type != "ovn":
            continue
        key = NetworkKey(record.project, record.name)
        if not instance.running:
            return [OvnBackend(Backend(backend_id, name, problem=f"instance is {instance.status}"), key)]
        addresses = _subnet_addresses(nic.addresses, record, anycast)
        if not addresses:
            problem = f"{nic.device} on {name} has no usable address yet"
            return [OvnBackend(Backend(backend_id, name, problem=problem), key)]
        return [OvnBackend(Backend(backend_id, name, addresses), key)]
    return []


def _subnet_addresses(
    texts: Iterable[str], network: NetworkRecord, anycast: set[IPAddress]
) -> tuple[IPAddress, ...]:
    best: dict[int, IPAddress] = {}
    for text in texts:
        interface = parse_interface(text, need_length=False)
        if interface is None or interface.ip in anycast:
            continue
        own = parse_interface(network.config.get(f"ipv{interface.version}.address", ""))
        if own is None or own.version != interface.version or interface.ip not in own.network:
            continue
        if interface.version not in best or int(interface.ip) < int(best[interface.version]):
            best[interface.version] = interface.ip
    return tuple(best[v] for v in sorted(best))


def plan_ovn_forwards(
    services: Iterable[Service],
    snapshot: LXDSnapshot,
    definitions: Definitions,
    health: Mapping[BackendId, BackendHealth],
    refusal: Callable[[Service, IPAddress], str | None] = lambda service, address: None,
) -> OvnForwardPlan:
    """`refusal` is the services' address policy: a refused address gets no forward."""
    manager = managing_member(snapshot)
    managing = manager is not None and manager == snapshot.member
    by = "this server" if not snapshot.clustered else f"member {manager}"
    listed = {(NetworkKey(f.project, f.network), _host(f.listen_address)): f for f in snapshot.forwards}
    backends: list[Backend] = []
    checks: list[BackendCheck] = []
    steps: list[ForwardStep] = []
    addresses: list[AddressState] = []
    wanted: set[tuple[NetworkKey, IPAddress]] = set()
    for service in services:
        found = ovn_backends(service, snapshot, definitions)
        if not found:
            continue
        usable = [item for item in found if not item.backend.problem and item.network is not None]
        if managing:
            backends += [item.backend for item in found]
        else:  # health is the manager's: shown here as excluded, with who checks
            elsewhere = f"checked by member {manager}, which manages the service's forward"
            backends += [
                Backend(i.backend.id, i.backend.device, i.backend.addresses, i.backend.problem or elsewhere)
                for i in found
            ]
        if managing and service.config.check is not None:
            exec_check = service.config.check.type == "exec"
            checks += [
                BackendCheck(i.backend.id, None if exec_check else check_target(i.backend, service))
                for i in usable
            ]
        network = next((i.network for i in found if i.network is not None), None)
        for address in sorted(service.config.addresses, key=address_key):
            refused = refusal(service, address)
            if refused is not None:
                addresses.append(AddressState(service.name, address, "refused", refused))
                continue
            serving = [
                i.backend
                for i in usable
                if _serving(service, i.backend.id, health) and i.backend.address(address.version)
            ]
            target = str(serving[0].address(address.version)) if serving else ""
            current = listed.get((network, address)) if network is not None else None
            current_target = current.config.get("target_address", "") if current is not None else ""
            if network is not None and target:
                wanted.add((network, address))
            if managing and network is not None:
                if target and current is None:
                    steps.append(ForwardStep(network, str(address), "create", target))
                elif target and current_target != target:
                    steps.append(ForwardStep(network, str(address), "update", target))
                elif not target and current is not None:
                    steps.append(ForwardStep(network, str(address), "delete"))
            if managing or manager is None:
                state = _state(service, address, target, current_target, manager, by, found, health)
            elif current_target:
                state = AddressState(
                    service.name, address, "announced", f"forward to {current_target} (managed by {by})"
                )
            else:
                state = AddressState(
                    service.name, address, "withdrawn", f"no forward listed (managed by {by})"
                )
            addresses.append(state)
    if managing:  # forwards fabricd wrote for a service, address or network no longer planned
        deleting = {(s.network, s.listen) for s in steps}
        for key, listed_forward in sorted(listed.items(), key=lambda item: (item[0][0], str(item[0][1]))):
            network_key, listen = key
            if listed_forward.description != OWNED_FORWARD or listen is None or key in wanted:
                continue
            if (network_key, str(listen)) not in deleting:
                steps.append(ForwardStep(network_key, str(listen), "delete"))
    return OvnForwardPlan(
        manager,
        tuple(sorted(backends, key=lambda b: b.id)),
        tuple(sorted(checks, key=lambda c: c.id)),
        tuple(sorted(steps)),
        tuple(sorted(addresses, key=AddressState.key)),
    )


def _host(text: str) -> IPAddress | None:
    try:
        return ip_address(text.split("/", 1)[0])
    except ValueError:
        return None


def _state(
    service: Service,
    address: IPAddress,
    target: str,
    current_target: str,
    manager: str | None,
    by: str,
    found: list[OvnBackend],
    health: Mapping[BackendId, BackendHealth],
) -> AddressState:
    if manager is None:
        return AddressState(
            service.name, address, "withdrawn", "no cluster member online to manage the forward"
        )
    if target and current_target == target:
        return AddressState(service.name, address, "announced", f"forward to {target} (managed by {by})")
    if target:
        return AddressState(
            service.name, address, "withdrawn", f"waiting for LXD to list the forward to {target}"
        )
    states = "; ".join(
        f"{i.backend.id.instance} {i.backend.problem or _shown(health, i.backend.id)}" for i in found
    )
    return AddressState(service.name, address, "withdrawn", f"no serving backend on OVN ({states})")


def _shown(health: Mapping[BackendId, BackendHealth], backend: BackendId) -> str:
    state = health.get(backend)
    return "not checked yet" if state is None else f"{state.state}: {state.reason}"


def _serving(service: Service, backend: BackendId, health: Mapping[BackendId, BackendHealth]) -> bool:
    if service.config.check is None:
        return True  # no check: a running backend with an address serves
    state = health.get(backend)
    return state is not None and state.serving
