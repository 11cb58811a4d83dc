"""A service's backends on this host, and where the host reaches each of them.

An instance backs a service when it is in the service's project and is named in
`backends.instances`, matches `backends.pattern`, or (with `backends.key`) joins or defines the
service with its keys; `user.fabric.anycast.<service>=false` takes it out whatever selects it.
Only instances whose `location` is this member are backends here.

The host routes an anycast address to a backend's address on a bridge: a managed LXD bridge
network (the address must lie in the bridge's subnet) or an unmanaged bridge a `bridged` NIC names
as `parent` (fabricd's overlay). The NIC is `backends.network`'s, else the first by device name
with an address. Per family the lowest global address is used, never one of the service's own
anycast addresses (a backend may carry those on its NIC). OVN and other network types cannot be
routed to from the host; such a backend gets a problem here, and OVN backends are planned by
ovn_forwards.py instead (an LXD network forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network

from fabricd.lxd.nics import nic_network
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord, NicRecord
from fabricd.routes.model import IPAddress, IPNetwork
from fabricd.routes.policy import parse_interface, shown
from fabricd.services.definitions import Definitions
from fabricd.services.instance_keys import EMPTY
from fabricd.services.model import Backend, BackendId, Service

OVN_UNROUTABLE = (
    "is on OVN network {network}: the host cannot route into OVN (OVN backends are served through an "
    "LXD network forward, see docs/services.md, OVN)"
)


def selected(service: Service, instance: InstanceRecord, definitions: Definitions) -> bool:
    selector = service.config.backends
    if instance.project != selector.project:
        return False
    keys = definitions.anycast.get((instance.project, instance.name), EMPTY)
    member = keys.member(service.name)
    if member is False:
        return False
    return (
        instance.name in selector.instances
        or (selector.pattern is not None and fnmatchcase(instance.name, selector.pattern))
        or (selector.key and member is True)
    )


def local_backends(
    service: Service, snapshot: LXDSnapshot, member: str, definitions: Definitions
) -> list[Backend]:
    """This member's backends of `service`, sorted; refused instances are left out (the
    definitions list why)."""
    found = []
    for instance in snapshot.instances:
        if instance.location != member or not selected(service, instance, definitions):
            continue
        if definitions.refusal(service.name, instance.project, instance.name) is not None:
            continue
        backend_id = BackendId(service.name, instance.project, instance.name)
        if not instance.running:
            found.append(
                Backend(backend_id, problem=f"instance is {shown(instance.status) or 'not running'}")
            )
            continue
        target = route_target(instance, service, snapshot)
        if isinstance(target, str):
            found.append(Backend(backend_id, problem=target))
        else:
            found.append(Backend(backend_id, target[0], target[1]))
    return sorted(set(found), key=lambda b: b.id)


def route_target(
    instance: InstanceRecord, service: Service, snapshot: LXDSnapshot
) -> tuple[str, tuple[IPAddress, ...]] | str:
    """(bridge device, one address per family) for a running instance, or why there is none."""
    wanted = service.config.backends.network
    reasons = []
    for nic in sorted(instance.nics, key=lambda n: n.device):
        name = nic_network(nic)
        if wanted is not None and name != wanted:
            continue
        subnets = _bridge_subnets(nic, name, instance.project, snapshot)
        if isinstance(subnets, str):
            reasons.append(f"{shown(nic.device)} {subnets}")
            continue
        addresses = _addresses(nic, subnets, set(service.config.addresses))
        if addresses:
            return name, addresses
        reasons.append(f"{shown(nic.device)} on {shown(name)} has no usable address yet")
    if not reasons:
        return f"no NIC on network {shown(wanted)}" if wanted else "no NIC"
    return "; ".join(reasons)


Subnets = dict[int, IPNetwork | None]  # per family: the bridge's subnet, None when any will do


def _bridge_subnets(nic: NicRecord, name: str, project: str, snapshot: LXDSnapshot) -> Subnets | str:
    if not name:
        return "is on no bridge (only bridged NICs can be routed to)"
    record = snapshot.network(project, name) or snapshot.network("default", name)
    if record is not None and record.managed:
        if record.type == "ovn":
            return OVN_UNROUTABLE.format(network=shown(name))
        if record.type != "bridge":
            return f"is on {shown(record.type)} network {shown(name)}: the host cannot route to it"
        return {4: _own_subnet(record, 4), 6: _own_subnet(record, 6)}
    if nic.config.get("nictype") == "bridged":
        return {4: None, 6: None}  # a bridge LXD does not manage (fabricd's overlay): any address
    return f"is on network {shown(name)}, which LXD does not list"


def _own_subnet(record: NetworkRecord, version: int) -> IPNetwork | None:
    interface = parse_interface(record.config.get(f"ipv{version}.address", ""))
    return interface.network if interface is not None and interface.version == version else None


def _addresses(nic: NicRecord, subnets: Subnets, anycast: set[IPAddress]) -> tuple[IPAddress, ...]:
    best: dict[int, IPAddress] = {}
    for text in nic.addresses:
        interface = parse_interface(text, need_length=False)
        if interface is None:
            continue
        address = interface.ip
        if address in anycast or address.is_link_local or address.is_loopback or address.is_multicast:
            continue
        subnet = subnets.get(address.version)
        if subnet is not None and not _inside(address, subnet):
            continue
        if address.version not in best or int(address) < int(best[address.version]):
            best[address.version] = address
    return tuple(best[v] for v in sorted(best))


def _inside(address: IPAddress, subnet: IPNetwork) -> bool:
    if isinstance(subnet, IPv4Network):
        return address.version == 4 and address in subnet
    return isinstance(subnet, IPv6Network) and address.version == 6 and address in subnet


def check_target(backend: Backend, service: Service) -> IPAddress | None:
    """The address the check goes to: IPv4 when the service has IPv4 addresses and the backend
    an IPv4 address, else IPv6. One check per backend, whatever the number of addresses."""
    versions: Sequence[int] = sorted({a.version for a in service.config.addresses})
    for version in versions:
        address = backend.address(version)
        if address is not None:
            return address
    return None
