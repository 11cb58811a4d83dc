"""Route candidates per LXD object, each judged on its own: policy, locality and next hop.

Conflicts between objects (the same prefix claimed twice, a prefix inside another network's) are
settled afterwards in `fabricd.routes.conflicts`, so an object's answer depends only on the object,
the networks it names and the plan context; that is what lets the incremental planner redo just
the objects that changed.

Rules, `me` being the snapshot's member:
1. an OVN network's subnets (ipvX.address, unless ipvX.nat is on), via the OVN next hop;
2. a running instance's NIC `ipvX.routes.external`, via the next hop of the NIC's network;
3. forwards and load balancers: listen address as a host route, via the network's next hop;
   those with a `location` belong to that member alone;
4. opt-in: instance addresses inside their bridge's subnet, as host routes via this host;
5. an instance's `user.fabric.routes`, via this host, if it has a NIC on a bridge network.
Instance routes are announced only by the member running the instance; OVN network routes, in
active-chassis mode, only by the member hosting the active gateway chassis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fabricd.lxd.nics import nic_network
from fabricd.lxd.records import InstanceRecord, ListenerRecord, NicRecord
from fabricd.routes.model import IPNetwork, Origin, Refusal, Route
from fabricd.routes.networks import UPLINK_PROJECT, NetworkInfo, NetworkKey, PlanContext
from fabricd.routes.policy import (
    MAX_ENTRIES_PER_KEY,
    check_prefix,
    host_prefix,
    parse_address,
    parse_interface,
    parse_prefix,
    shown,
    span,
    split_list,
)

USER_ROUTES = "user.fabric.routes"
Lookup = Callable[[NetworkKey], NetworkInfo | None]


@dataclass(frozen=True, slots=True)
class Claim:
    """A prefix an object asks for that passed policy; conflicts with other claims come later."""

    prefix: IPNetwork
    origin: Origin
    network: NetworkKey  # the network the route belongs to: overlaps across networks are refused
    live: bool  # its owner is active somewhere in the cluster, so it blocks duplicates
    route: Route | None  # what this host announces unless another claim conflicts
    reason: str = ""  # why not, when route is None
    withheld: bool = False  # the reason is "not this host's to announce", not a refusal

    @property
    def owner(self) -> tuple[str, str, str]:
        return (self.origin.project, self.origin.network, self.origin.instance)


@dataclass(frozen=True, slots=True)
class ObjectRoutes:
    claims: tuple[Claim, ...] = ()
    refused: tuple[Refusal, ...] = ()  # settled without looking at other objects
    withheld: tuple[Refusal, ...] = ()


class _Collector:
    def __init__(self, ctx: PlanContext) -> None:
        self.ctx = ctx
        self.claims: list[Claim] = []
        self.refused: list[Refusal] = []
        self.withheld: list[Refusal] = []

    def result(self) -> ObjectRoutes:
        return ObjectRoutes(tuple(self.claims), tuple(self.refused), tuple(self.withheld))

    def refuse(self, text: str, origin: Origin, reason: str) -> None:
        self.refused.append(Refusal(text, origin, reason))

    def entries(self, text: str, origin: Origin) -> list[str]:
        entries = split_list(text)
        if len(entries) > MAX_ENTRIES_PER_KEY:
            reason = f"{origin.key} lists {len(entries)} prefixes, more than {MAX_ENTRIES_PER_KEY}"
            self.refuse(f"{len(entries)} prefixes", origin, reason)
            return []
        return entries

    def offer(
        self,
        text: str,
        version: int | None,
        origin: Origin,
        info: NetworkInfo,
        live: bool,
        withhold: str | None,
    ) -> None:
        prefix = parse_prefix(text, version)
        if isinstance(prefix, str):
            self.refuse(shown(text), origin, prefix)
        else:
            self.offer_prefix(prefix, origin, info, live, withhold)

    def offer_prefix(
        self, prefix: IPNetwork, origin: Origin, info: NetworkInfo, live: bool, withhold: str | None
    ) -> None:
        family = info.family(prefix.version)
        problem = check_prefix(prefix, self.ctx.routes, family.allowed, info.range_owner)
        if problem is not None:
            self.refuse(str(prefix), origin, problem)
            return
        route: Route | None = None
        reason = ""
        withhold = withhold or family.withhold
        if withhold is not None:
            reason = withhold
        elif info.attribute_problem is not None:
            reason = info.attribute_problem
        elif family.next_hop is None:
            reason = family.next_hop_problem
        elif family.next_hop.version != prefix.version:  # networks.py sees to it; never announce one
            reason = f"next hop {family.next_hop} is the wrong family"
        else:
            route = Route(prefix, family.next_hop, origin, info.attributes, family.next_hop_note)
        self.claims.append(Claim(prefix, origin, info.key, live, route, reason, withhold is not None))


def _network_problem(name: str, info: NetworkInfo | None) -> str | None:
    if not name:
        return "not on a managed network"
    if info is None:
        return f"network {shown(name)} not found"
    return info.problem


def instance_dependencies(instance: InstanceRecord) -> set[NetworkKey]:
    """The network keys an instance's routes may read: its project's, else the default project's."""
    names = {nic_network(nic) for nic in instance.nics} - {""}
    return {(p, n) for n in names for p in (instance.project, UPLINK_PROJECT)}


def _find(lookup: Lookup, project: str, name: str) -> NetworkInfo | None:
    if not name:
        return None
    return lookup((project, name)) or lookup((UPLINK_PROJECT, name))


def instance_routes(instance: InstanceRecord, ctx: PlanContext, lookup: Lookup) -> ObjectRoutes:
    out = _Collector(ctx)
    live = instance.running
    withhold: str | None = None
    if not live:
        withhold = f"instance is {shown(instance.status) or 'not running'}"
    elif instance.location != ctx.member:
        withhold = f"instance runs on member {shown(instance.location)}"
    bridges: list[tuple[str, NetworkInfo]] = []
    for nic in instance.nics:
        name = nic_network(nic)
        info = _find(lookup, instance.project, name)
        problem = _network_problem(name, info)
        if info is not None and problem is None and info.type == "bridge":
            bridges.append((nic.device, info))
        for version in (4, 6):
            key = f"ipv{version}.routes.external"
            text = nic.config.get(key)
            if text is None:
                continue
            where = f"{nic.device}/{key}"
            origin = Origin("nic-external-route", instance.project, name, instance.name, where)
            entries = out.entries(text, origin)
            if info is None or problem is not None:
                for entry in entries:
                    out.refuse(shown(entry), origin, problem or "")
                continue
            nic_withhold = withhold or (info.withhold if info.type == "ovn" else None)
            for entry in entries:
                out.offer(entry, version, origin, info, live, nic_withhold)
        if info is not None and problem is None and info.type == "bridge" and info.announce_addresses:
            _instance_addresses(out, instance, nic, info, live, withhold)
    text = instance.config.get(USER_ROUTES)
    if text is not None:
        _user_routes(out, instance, text, sorted(bridges, key=lambda b: b[0]), live, withhold)
    return out.result()


def _instance_addresses(
    out: _Collector,
    instance: InstanceRecord,
    nic: NicRecord,
    info: NetworkInfo,
    live: bool,
    withhold: str | None,
) -> None:
    origin = Origin("instance-address", instance.project, info.name, instance.name, f"{nic.device}/addresses")
    for text in nic.addresses[:MAX_ENTRIES_PER_KEY]:
        interface = parse_interface(text, need_length=False)
        if interface is None:
            out.refuse(shown(text), origin, f"'{shown(text)}' is not an address")
            continue
        if interface.ip.is_link_local:  # never global, whatever the state says
            continue
        prefix = host_prefix(interface.ip)
        subnet = info.family(prefix.version).subnet
        if subnet is None or not span(subnet)[0] <= int(interface.ip) <= span(subnet)[1]:
            out.refuse(str(prefix), origin, f"{interface.ip} is outside the subnet of bridge {info.name}")
            continue
        out.offer_prefix(prefix, origin, info, live, withhold)


def _user_routes(
    out: _Collector,
    instance: InstanceRecord,
    text: str,
    bridges: list[tuple[str, NetworkInfo]],
    live: bool,
    withhold: str | None,
) -> None:
    origin = Origin("user-route", instance.project, "", instance.name, USER_ROUTES)
    for entry in out.entries(text, origin):
        prefix = parse_prefix(entry)
        if isinstance(prefix, str):
            out.refuse(shown(entry), origin, prefix)
            continue
        if not bridges:
            out.refuse(str(prefix), origin, "user.fabric.routes needs a NIC on a bridge network")
            continue
        # The bridge whose ranges allow the prefix carries it; else the first, to say why not.
        infos = [info for _, info in bridges]
        first, last = span(prefix)
        info = next((i for i in infos if i.family(prefix.version).allowed.covers(first, last)), infos[0])
        bridge_origin = Origin("user-route", instance.project, info.name, instance.name, USER_ROUTES)
        out.offer_prefix(prefix, bridge_origin, info, live, withhold)


def network_routes(info: NetworkInfo, ctx: PlanContext) -> ObjectRoutes:
    """Rule 1: an OVN network's own subnets."""
    out = _Collector(ctx)
    if info.type != "ovn" or info.problem is not None:
        return out.result()
    for version in (4, 6):
        family = info.family(version)
        if not family.address_text:
            continue
        origin = Origin("ovn-subnet", info.project, info.name, "", f"ipv{version}.address")
        if family.nat:
            shown_prefix = str(family.subnet) if family.subnet else shown(family.address_text)
            out.withheld.append(Refusal(shown_prefix, origin, f"ipv{version}.nat is on"))
        elif family.subnet is None:
            text = shown(family.address_text)
            out.refuse(text, origin, f"'{text}' is not a prefix")
        else:
            out.offer_prefix(family.subnet, origin, info, True, info.withhold)
    return out.result()


def listener_routes(listener: ListenerRecord, ctx: PlanContext, lookup: Lookup) -> ObjectRoutes:
    """Rule 3: a forward's or load balancer's listen address."""
    out = _Collector(ctx)
    kind = listener.kind
    address = parse_address(listener.listen_address)
    if address is None:
        text = shown(listener.listen_address)
        bad_origin = Origin(kind, listener.project, listener.network, "", text)
        out.refuse(text, bad_origin, f"'{text}' is not an address")
        return out.result()
    origin = Origin(kind, listener.project, listener.network, "", str(address))
    prefix = host_prefix(address)
    info = lookup((listener.project, listener.network))
    problem = _network_problem(listener.network, info)
    if info is None or problem is not None:
        out.refuse(str(prefix), origin, problem or "")
        return out.result()
    location = listener.location.strip()
    withhold = info.withhold if info.type == "ovn" else None
    if location and location != ctx.member:
        withhold = f"{kind.replace('-', ' ')} belongs to member {shown(location)}"
    out.offer_prefix(prefix, origin, info, True, withhold)
    return out.result()
