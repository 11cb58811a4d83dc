"""Plan the VXLAN overlay (unicast mode, head-end replication) from config and the LXD snapshot.

Pure: no I/O. The rules, in the order they apply:

MTU
  `overlay.mtu` when set, else the underlay MTU minus the VXLAN overhead for the family of
  `host.underlay_address` (50 bytes over IPv4, 70 over IPv6). The result must be at least the
  minimum MTU: 1280 when IPv6 is in use (IPv6 underlay, or `host.underlay_address6` set, since
  IPv6 links need 1280), else 576 (the IPv4 minimum datagram). Below that the planner refuses the
  value (subject "mtu") and uses the minimum instead: the bridge still comes up, and the refusal
  tells the operator the underlay needs a larger MTU (or jumbo frames).

Peers and flood list
  From `overlay.peers`, or from the LXD cluster members when it is "lxd-cluster" (no snapshot
  yet: no peers, refused with subject "peers"). A member's address is the host of
  `MemberRecord.url`; a member that is not
  Online (Offline, Evacuated...) is shown offline and never flooded to. This host (by name, by
  LXD member name, or by one of its underlay addresses) is shown as "self" and never flooded to.
  A peer whose address does not parse or is of the other family than `host.underlay_address` is
  refused. Duplicates, decided in sorted (name, address) order: an identical (name, address) pair
  counts once; a name seen again with another address is refused (the first address wins);
  several names on one address share one flood entry, named after the first.

Static MAC entries
  For every Running instance located on another up peer, every NIC on the overlay bridge
  (`network` is the bridge, or `nictype` bridged with `parent` the bridge) gets MAC -> that
  peer's address. Local instances get none (the local bridge learns them); stopped ones neither.
  Refused, never installed: a missing, malformed, multicast/broadcast or all-zeros MAC; a
  location that is no known peer, or an offline one; a MAC claimed by two running NICs (local
  ones included), where every claim is refused, as any one entry would misdeliver the other's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import urlsplit

from fabricd.config.model import FabricConfig, IPAddress
from fabricd.lxd.nics import normalize_mac, on_bridge
from fabricd.lxd.records import STANDALONE, InstanceRecord, LXDSnapshot, MemberRecord
from fabricd.overlay.model import FloodEntry, MacEntry, OverlayPlan, OverlayRefusal, PeerView

VXLAN_OVERHEAD_V4 = 50
VXLAN_OVERHEAD_V6 = 70
MIN_MTU_V4 = 576
MIN_MTU_V6 = 1280
ONLINE = "online"


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A peer before self-exclusion and deduplication; address None: the member URL did not parse."""

    name: str
    address: IPAddress | None
    online: bool
    status: str = "Online"
    url: str = ""


def _address_key(address: IPAddress | None) -> tuple[int, int]:
    return (0, 0) if address is None else (address.version, int(address))


def plan_overlay(
    config: FabricConfig,
    snapshot: LXDSnapshot | None,
    underlay_mtu: int,
    authority: tuple[str, str] | None = None,
) -> OverlayPlan:
    """`authority`: (the DHCP/DNS server's fixed MAC, the peer that serves it now), so frames to
    the server go straight to that host instead of being flooded, and follow it on failover."""
    refused: list[OverlayRefusal] = []
    mtu = _plan_mtu(config, underlay_mtu, refused)
    peers, flood, vteps = _plan_peers(config, snapshot, refused)
    macs = _plan_macs(config, snapshot, peers, vteps, refused)
    if authority is not None:
        macs += _authority_mac(authority, peers, vteps, {m.mac for m in macs}, refused)
    return OverlayPlan(
        mtu=mtu,
        flood=tuple(sorted(flood, key=lambda f: (_address_key(f.vtep), f.peer))),
        macs=tuple(sorted(macs, key=lambda m: (m.mac, m.origin))),
        refused=tuple(sorted(set(refused), key=lambda r: (r.subject, r.reason))),
        peers=tuple(sorted(peers, key=lambda p: (p.name, _address_key(p.address), p.state))),
    )


# --- MTU -----------------------------------------------------------------------------------------


def _plan_mtu(config: FabricConfig, underlay_mtu: int, refused: list[OverlayRefusal]) -> int:
    host = config.host
    v6_underlay = host.underlay_address.version == 6
    if config.overlay.mtu is not None:
        mtu, source = config.overlay.mtu, "overlay.mtu"
    else:
        overhead = VXLAN_OVERHEAD_V6 if v6_underlay else VXLAN_OVERHEAD_V4
        mtu, source = underlay_mtu - overhead, f"underlay MTU {underlay_mtu} - {overhead} (VXLAN overhead)"
    ipv6_in_use = v6_underlay or host.underlay_address6 is not None
    minimum = MIN_MTU_V6 if ipv6_in_use else MIN_MTU_V4
    if mtu < minimum:
        why = "IPv6 is in use" if ipv6_in_use else "the IPv4 minimum"
        refused.append(OverlayRefusal("mtu", f"{source} = {mtu} is below {minimum} ({why}); using {minimum}"))
        return minimum
    return mtu


# --- peers ---------------------------------------------------------------------------------------


def _plan_peers(
    config: FabricConfig,
    snapshot: LXDSnapshot | None,
    refused: list[OverlayRefusal],
) -> tuple[list[PeerView], list[FloodEntry], dict[str, IPAddress]]:
    """Peer views, flood entries, and the VTEP of every up peer by name."""
    host = config.host
    overlay = config.overlay
    self_names = {host.name} | ({snapshot.member} if snapshot is not None else set())
    self_addresses: set[IPAddress] = {host.underlay_address}
    if host.underlay_address6 is not None:
        self_addresses.add(host.underlay_address6)

    if overlay.peers_from_lxd_cluster:
        if snapshot is None:
            refused.append(OverlayRefusal("peers", "overlay.peers is lxd-cluster and LXD is not read yet"))
            candidates: list[_Candidate] = []
        else:
            candidates = list(_member_candidates(snapshot.members))
    elif isinstance(overlay.peers, str):
        refused.append(OverlayRefusal("peers", f"unknown overlay.peers value {overlay.peers!r}"))
        candidates = []
    else:
        candidates = [_Candidate(p.name, p.address, True) for p in overlay.peers]

    views: list[PeerView] = []
    flood: list[FloodEntry] = []
    vteps: dict[str, IPAddress] = {}
    seen_names: dict[str, IPAddress | None] = {}
    flood_by_address: dict[IPAddress, str] = {}
    family = host.underlay_address.version
    for cand in sorted(set(candidates), key=_candidate_order):
        if cand.name in seen_names:
            if seen_names[cand.name] != cand.address:
                refused.append(
                    OverlayRefusal(
                        f"peer {cand.name}",
                        f"address {cand.address} ignored: "
                        f"the name is already used with {seen_names[cand.name]}",
                    )
                )
            continue
        seen_names[cand.name] = cand.address
        if cand.name in self_names or cand.address in self_addresses:
            views.append(PeerView(cand.name, cand.address, "self", "this host"))
            continue
        if not cand.online:
            views.append(PeerView(cand.name, cand.address, "offline", f"member is {cand.status}"))
            continue
        if cand.address is None:
            refused.append(
                OverlayRefusal(f"member {cand.name}", f"no address: cannot parse URL {cand.url!r}")
            )
            continue
        if cand.address.version != family:
            refused.append(
                OverlayRefusal(
                    f"peer {cand.name}",
                    f"address {cand.address} is IPv{cand.address.version}, "
                    f"the underlay ({host.underlay_address}) is IPv{family}",
                )
            )
            continue
        first = flood_by_address.get(cand.address)
        if first is None:
            flood_by_address[cand.address] = cand.name
            flood.append(FloodEntry(cand.name, cand.address))
            views.append(PeerView(cand.name, cand.address, "up"))
        else:
            views.append(PeerView(cand.name, cand.address, "up", f"same address as {first}"))
        vteps[cand.name] = cand.address
    return views, flood, vteps


def _candidate_order(c: _Candidate) -> tuple[object, ...]:
    # Every field: LXD listing one member twice, differently, must not make the plan order-dependent.
    return (c.name, _address_key(c.address), not c.online, c.status, c.url)


def _member_candidates(members: Iterable[MemberRecord]) -> Iterable[_Candidate]:
    for member in members:
        online = member.status.lower() == ONLINE
        yield _Candidate(member.name, _address_from_url(member.url), online, member.status, member.url)


def _address_from_url(url: str) -> IPAddress | None:
    try:
        host = urlsplit(url).hostname
        return ip_address(host) if host else None
    except ValueError:
        return None


# --- MAC entries ---------------------------------------------------------------------------------


def _authority_mac(
    authority: tuple[str, str],
    peers: list[PeerView],
    vteps: Mapping[str, IPAddress],
    taken: set[str],
    refused: list[OverlayRefusal],
) -> list[MacEntry]:
    mac, holder = authority
    origin = f"dhcp-authority/{holder}"
    if any(p.name == holder and p.state == "self" for p in peers):
        return []  # served here: the bridge knows its own port
    if mac in taken:
        refused.append(OverlayRefusal(f"authority {holder}", f"MAC {mac} is also claimed by an instance"))
        return []
    vtep = vteps.get(holder)
    if vtep is None:
        refused.append(OverlayRefusal(f"authority {holder}", "the serving host is no up overlay peer"))
        return []
    return [MacEntry(mac, vtep, origin)]


def _plan_macs(
    config: FabricConfig,
    snapshot: LXDSnapshot | None,
    peers: list[PeerView],
    vteps: Mapping[str, IPAddress],
    refused: list[OverlayRefusal],
) -> list[MacEntry]:
    if snapshot is None:
        return []
    local = {config.host.name, snapshot.member, STANDALONE} | {p.name for p in peers if p.state == "self"}
    offline = {p.name: p.reason for p in peers if p.state == "offline"}
    bridge = config.overlay.bridge

    # Every running claim on the bridge first, local ones included, to find shared MACs.
    claims: dict[str, list[tuple[str, InstanceRecord]]] = {}
    for inst in snapshot.instances:
        if not inst.running:
            continue
        for nic in inst.nics:
            if not on_bridge(nic, bridge):
                continue
            origin = f"{inst.project}/{inst.name}/{nic.device}"
            mac, reason = normalize_mac(nic.hwaddr)
            if mac is None:
                if inst.location not in local:
                    refused.append(OverlayRefusal(f"nic {origin}", reason))
                continue
            claims.setdefault(mac, []).append((origin, inst))

    entries: list[MacEntry] = []
    for mac, owners in claims.items():
        origins = sorted({origin for origin, _ in owners})
        if len(origins) > 1:
            for origin in origins:
                others = ", ".join(o for o in origins if o != origin)
                refused.append(OverlayRefusal(f"nic {origin}", f"MAC {mac} is also claimed by {others}"))
            continue
        origin, inst = owners[0]
        if inst.location in local:
            continue
        vtep = vteps.get(inst.location)
        if vtep is not None:
            entries.append(MacEntry(mac, vtep, origin))
        elif inst.location in offline:
            refused.append(
                OverlayRefusal(
                    f"nic {origin}", f"member {inst.location} is offline ({offline[inst.location]})"
                )
            )
        else:
            refused.append(OverlayRefusal(f"nic {origin}", f"location {inst.location!r} is no overlay peer"))
    return entries
