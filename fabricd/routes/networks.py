"""What each LXD network means for routes: its allowed ranges, next hops, attributes and locality.

Read once per network (and its uplink) so the thousands of instances on it share the answers.
Next hops:
- OVN network: the uplink's `bgp.ipvX.nexthop` if set, else the network's own router address on
  the uplink (`volatile.network.ipvX.address`); the uplink is the network named by the OVN
  network's `network` key, in project "default". The router address is only useful to a peer that
  can reach it. When the uplink is a bridge local to this host (no `bridge.external_interfaces`,
  so no router can sit on it) and the address is not on a subnet the session to a peer of that
  family leaves through, this host's underlay address is used instead (next-hop self: the host
  forwards into the uplink), or, with the uplink's `unusable_next_hop: withhold`, the routes are
  withheld. A physical uplink, or a bridge with external interfaces, is a segment beyond this
  host where the router may sit (the shared-L2 design): its addresses are kept.
- bridge network: this host's underlay address of the family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from fabricd.bgp.paths import SessionPaths
from fabricd.config.model import FabricConfig, LXDConfig, RoutesConfig
from fabricd.lxd.booleans import lxd_bool
from fabricd.lxd.records import LXDSnapshot, NetworkRecord
from fabricd.routes.attributes import network_attributes
from fabricd.routes.model import IPAddress, IPNetwork, RouteAttributes
from fabricd.routes.policy import (
    Ranges,
    next_hop_problem,
    parse_address,
    parse_interface,
    prefixes_from_address_ranges,
    prefixes_from_list,
    shown,
)

NetworkKey = tuple[str, str]  # (project, name)
UPLINK_PROJECT = "default"  # LXD keeps OVN uplinks in the default project
ROUTED_TYPES = ("ovn", "bridge")


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Everything besides LXD objects a plan depends on; fixed for an IncrementalPlanner's state."""

    member: str
    clustered: bool
    routes: RoutesConfig
    lxd: LXDConfig
    host_next_hops: tuple[IPAddress | str, IPAddress | str]  # v4, v6: an address or why none
    paths: SessionPaths | None = None  # how the BGP sessions leave; None: not known, not checked

    @classmethod
    def of(
        cls, snapshot: LXDSnapshot, config: FabricConfig, paths: SessionPaths | None = None
    ) -> PlanContext:
        host = config.host
        v4: IPAddress | str = "no IPv4 next hop: host.underlay_address is IPv6"
        if host.underlay_address.version == 4:
            v4 = _host_next_hop(host.underlay_address, 4, "host.underlay_address")
        v6: IPAddress | str = "no IPv6 next hop: set host.underlay_address6"
        if host.underlay_address6 is not None:
            v6 = _host_next_hop(host.underlay_address6, 6, "host.underlay_address6")
        elif host.underlay_address.version == 6:
            v6 = _host_next_hop(host.underlay_address, 6, "host.underlay_address")
        return cls(snapshot.member, snapshot.clustered, config.routes, config.lxd, (v4, v6), paths)

    def host_next_hop(self, version: int) -> IPAddress | str:
        return self.host_next_hops[0 if version == 4 else 1]

    def config_ranges(self, version: int) -> list[IPNetwork]:
        return [r for r in self.routes.allowed_ranges if r.version == version]


def _host_next_hop(address: IPAddress, version: int, source: str) -> IPAddress | str:
    return next_hop_problem(address, version, source) or address


@dataclass(frozen=True, slots=True)
class FamilyInfo:
    allowed: Ranges = field(default_factory=Ranges)
    next_hop: IPAddress | None = None
    next_hop_problem: str = ""  # why next_hop is None
    next_hop_note: str = ""  # why next_hop is not the obvious one (next-hop self)
    withhold: str | None = None  # why this family's routes are not announced, though valid
    address_text: str = ""  # ipvX.address as written; "" when unset or "none"
    subnet: IPNetwork | None = None  # network form of ipvX.address, when readable
    nat: bool = False


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    project: str
    name: str
    type: str
    problem: str | None = None  # the network carries no routes at all, and why
    attributes: RouteAttributes = field(default_factory=RouteAttributes)
    attribute_problem: str | None = None
    announce_addresses: bool = False
    uplink: str = ""  # ovn only
    range_owner: str = ""  # "uplink U" or "bridge B", for refusal reasons
    withhold: str | None = None  # ovn: why network-level routes are not this member's
    v4: FamilyInfo = field(default_factory=FamilyInfo)
    v6: FamilyInfo = field(default_factory=FamilyInfo)

    @property
    def key(self) -> NetworkKey:
        return (self.project, self.name)

    def family(self, version: int) -> FamilyInfo:
        return self.v4 if version == 4 else self.v6


def _own_address(config: Mapping[str, str], version: int) -> tuple[str, IPNetwork | None]:
    text = config.get(f"ipv{version}.address", "").strip()
    if text.lower() in ("", "none"):
        return "", None
    interface = parse_interface(text)
    if interface is None or interface.version != version:
        return text, None
    return text, interface.network


def _bridge(record: NetworkRecord, ctx: PlanContext) -> NetworkInfo:
    families = []
    for version in (4, 6):
        text, subnet = _own_address(record.config, version)
        own = [subnet] if subnet is not None else []
        # ipvX.routes are prefixes LXD routes to this bridge: space for routes on it.
        own += prefixes_from_list(record.config.get(f"ipv{version}.routes"), version)
        hop = ctx.host_next_hop(version)
        families.append(
            FamilyInfo(
                allowed=Ranges.of(ctx.config_ranges(version) + own),
                next_hop=None if isinstance(hop, str) else hop,
                next_hop_problem=hop if isinstance(hop, str) else "",
                address_text=text,
                subnet=subnet,
            )
        )
    return NetworkInfo(record.project, record.name, "bridge", range_owner=f"bridge {record.name}",
                       v4=families[0], v6=families[1])  # fmt: skip


def _ovn_next_hop(
    record: NetworkRecord, uplink: NetworkRecord | str, version: int
) -> tuple[IPAddress | None, str, bool]:
    """(next hop, why none, whether the uplink chose it): an uplink's bgp.ipvX.nexthop is the
    operator's explicit choice and is taken as it is."""
    if isinstance(uplink, str):
        return None, uplink, False
    key = f"bgp.ipv{version}.nexthop"
    text = uplink.config.get(key, "").strip()
    if text:
        address = parse_address(text)
        if address is None:
            return None, f"{key} '{shown(text)}' of uplink {uplink.name} is not an address", True
        return (*_checked(address, version, f"bgp.ipv{version}.nexthop of uplink {uplink.name}"), True)
    key = f"volatile.network.ipv{version}.address"
    text = record.config.get(key, "").strip()
    if not text:
        return None, f"no uplink address yet ({key} unset)", False
    address = parse_address(text.partition("/")[0])
    if address is None:
        return None, f"{key} '{shown(text)}' is not an address", False
    return (*_checked(address, version, key), False)


def _host_local(uplink: NetworkRecord | str) -> bool:
    """An uplink no router can be on: a bridge of this host with no port to a wider segment."""
    if isinstance(uplink, str) or uplink.type != "bridge":
        return False
    return not uplink.config.get("bridge.external_interfaces", "").strip()


def _usable(
    family: FamilyInfo, uplink: NetworkRecord | str, uplink_name: str, version: int, ctx: PlanContext
) -> FamilyInfo:
    """Keep an OVN router address on a host-local uplink only if every peer of its family reaches
    it through its session's own subnet."""
    hop = family.next_hop
    if hop is None or ctx.paths is None or not _host_local(uplink):
        return family
    unusable = ctx.paths.unusable_for(hop)
    if not unusable:
        return family
    where = ", ".join(f"{p.peer} leaves by {p.interface or '?'}" for p in unusable)
    why = (
        f"OVN router address {hop} is on host-local uplink {shown(uplink_name)}, "
        f"not on a subnet the BGP session uses ({where})"
    )
    if ctx.routes.unusable_next_hop(uplink_name) == "withhold":
        key = f"bgp.ipv{version}.nexthop"
        return replace(family, withhold=f"{why}; set {key} on uplink {shown(uplink_name)} to announce it")
    self_hop = ctx.host_next_hop(version)
    if isinstance(self_hop, str):
        return replace(family, next_hop=None, next_hop_problem=f"{why}, and {self_hop}")
    return replace(family, next_hop=self_hop, next_hop_note=f"next-hop self: {why}")


def _checked(address: IPAddress, version: int, source: str) -> tuple[IPAddress | None, str]:
    problem = next_hop_problem(address, version, source)
    return (None, problem) if problem is not None else (address, "")


def _ovn_withhold(record: NetworkRecord, uplink_name: str, ctx: PlanContext) -> str | None:
    if not ctx.clustered or ctx.routes.ovn_mode(uplink_name) != "active-chassis":
        return None
    if record.ovn_chassis is None:
        return "active chassis unknown"
    member = ctx.lxd.member_for_chassis(record.ovn_chassis)
    return None if member == ctx.member else f"active chassis is on member {shown(member)}"


def _ovn(record: NetworkRecord, uplink: NetworkRecord | str, ctx: PlanContext) -> NetworkInfo:
    uplink_name = record.config.get("network", "").strip()
    families = []
    for version in (4, 6):
        text, subnet = _own_address(record.config, version)
        granted: list[IPNetwork] = []
        if not isinstance(uplink, str):
            granted += prefixes_from_list(uplink.config.get(f"ipv{version}.routes"), version)
            granted += prefixes_from_address_ranges(uplink.config.get(f"ipv{version}.ovn.ranges"), version)
        next_hop, problem, chosen = _ovn_next_hop(record, uplink, version)
        family = FamilyInfo(
            allowed=Ranges.of(ctx.config_ranges(version) + granted),
            next_hop=next_hop,
            next_hop_problem=problem,
            address_text=text,
            subnet=subnet,
            nat=lxd_bool(record.config.get(f"ipv{version}.nat")) is True,
        )
        families.append(family if chosen else _usable(family, uplink, uplink_name, version, ctx))
    owner = f"uplink {shown(uplink_name)}" + (f" ({uplink})" if isinstance(uplink, str) else "")
    return NetworkInfo(
        record.project, record.name, "ovn", uplink=uplink_name, range_owner=owner,
        withhold=_ovn_withhold(record, uplink_name, ctx), v4=families[0], v6=families[1],
    )  # fmt: skip


def network_info(record: NetworkRecord, uplink: NetworkRecord | str, ctx: PlanContext) -> NetworkInfo:
    """`uplink` is the OVN network's uplink record, or why there is none."""
    if not record.managed:
        return NetworkInfo(record.project, record.name, record.type, f"network {record.name} is not managed")
    if record.type not in ROUTED_TYPES:
        kind = shown(record.type)
        problem = f"network {record.name} is of type {kind}; only ovn and bridge networks announce routes"
        return NetworkInfo(record.project, record.name, record.type, problem)
    read = network_attributes(record.config, ctx.routes)
    info = _ovn(record, uplink, ctx) if record.type == "ovn" else _bridge(record, ctx)
    announce = read.announce_addresses
    if announce is None:
        announce = ctx.routes.announce_instance_addresses
    return replace(
        info, attributes=read.attributes, attribute_problem=read.problem, announce_addresses=announce
    )


def _grouped(networks: Iterable[NetworkRecord]) -> dict[NetworkKey, list[NetworkRecord]]:
    """Records by key; equal duplicates collapse, unequal ones stay to be refused."""
    groups: dict[NetworkKey, list[NetworkRecord]] = {}
    for record in networks:
        group = groups.setdefault((record.project, record.name), [])
        if record not in group:
            group.append(record)
    return groups


InfoMemo = dict[tuple[NetworkRecord, NetworkRecord | str], NetworkInfo]


def network_infos(
    networks: Iterable[NetworkRecord], ctx: PlanContext, memo: InfoMemo | None = None
) -> tuple[dict[NetworkKey, NetworkInfo], InfoMemo]:
    """Every network's info, and the memo to pass next time so unchanged networks keep theirs."""
    old_memo = memo or {}
    new_memo: InfoMemo = {}
    infos: dict[NetworkKey, NetworkInfo] = {}
    groups = _grouped(networks)
    for key, group in groups.items():
        if len(group) > 1:
            problem = f"LXD reported network {key[0]}/{key[1]} {len(group)} times, differently"
            infos[key] = NetworkInfo(key[0], key[1], "", problem)
            continue
        record = group[0]
        uplink: NetworkRecord | str = ""
        if record.type == "ovn":
            uplink = _uplink(record, groups)
        memo_key = (record, uplink)
        info = old_memo.get(memo_key) or network_info(record, uplink, ctx)
        new_memo[memo_key] = infos[key] = info
    return infos, new_memo


def _uplink(record: NetworkRecord, groups: Mapping[NetworkKey, list[NetworkRecord]]) -> NetworkRecord | str:
    name = record.config.get("network", "").strip()
    if not name:
        return "OVN network has no uplink (network key unset)"
    group = groups.get((UPLINK_PROJECT, name), [])
    if not group:
        return f"uplink {shown(name)} not found in project {UPLINK_PROJECT}"
    if len(group) > 1:
        return f"uplink {shown(name)} reported {len(group)} times, differently"
    return group[0]
