"""The `bgp` section: the local speaker, graceful restart, BFD and the peers."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from yaml.nodes import MappingNode, ScalarNode

from fabricd.config import converters as convert
from fabricd.config.model import (
    BFDConfig,
    BGPConfig,
    GracefulRestartConfig,
    HostConfig,
    IPAddress,
    PeerConfig,
)
from fabricd.config.reader import CheckedMapping, Invalid, Unique, Value, convert_all
from fabricd.yaml_lines import TAG_PREFIX

BGP_HOLD_TIME = 9


_BGP_KEYS = ("local_asn", "router_id", "hold_time", "graceful_restart", "bfd", "peers", "exabgp", "bird")
_PEER_KEYS = ("name", "address", "asn", "password", "hold_time", "families", "local_address", "bfd")
_BFD_KEYS = ("interval_ms", "multiplier", "multihop")
_BOOL_TAG = TAG_PREFIX + "bool"
_BFD_WHAT = "true, false or a mapping with interval_ms, multiplier, multihop"


def parse_bgp(value: Value, host: HostConfig | None) -> BGPConfig:
    m = value.mapping(_BGP_KEYS)
    local_asn = m.require("local_asn", convert.asn)
    router_id = _router_id(m, host)
    hold_time = m.get("hold_time", convert.hold_time, BGP_HOLD_TIME)
    graceful_restart = m.get("graceful_restart", _parse_graceful_restart, GracefulRestartConfig())
    # The section's bfd is every peer's default; a peer's own bfd (even false) wins.
    bfd_default = m.get("bfd", lambda v: parse_bfd(v, None), None)
    peers = m.require("peers", lambda v: _parse_bgp_peers(v, bfd_default))
    exabgp = m.get("exabgp", convert.absolute_path, None)
    bird = m.get("bird", convert.absolute_path, None)
    if peers == ():
        m.fail_at("peers", "at least one peer is required")
    if not m.clean() or local_asn is None or router_id is None or peers is None:
        raise Invalid
    return BGPConfig(local_asn, router_id, hold_time, graceful_restart, peers, exabgp, bird)


def parse_bfd(value: Value, default: BFDConfig | None) -> BFDConfig | None:
    """false: no BFD; true: the default timers; a mapping: its keys over the default's."""
    base = default or BFDConfig()
    node = value.node
    if isinstance(node, ScalarNode) and node.tag == _BOOL_TAG:
        return base if convert.boolean(value) else None
    if not isinstance(node, MappingNode):
        raise value.expected(_BFD_WHAT)
    m = value.mapping(_BFD_KEYS)
    interval = m.get("interval_ms", convert.integer(10, 10000), base.interval_ms)
    multiplier = m.get("multiplier", convert.integer(1, 255), base.multiplier)
    multihop = m.get("multihop", convert.boolean, base.multihop)
    if not m.clean():
        raise Invalid
    return BFDConfig(interval, multiplier, multihop)


@dataclass
class _BFDTimers:
    """BIRD 2 keeps one set of BFD timers for all single-hop sessions and one for all multihop
    sessions: peers of one kind must agree."""

    first: dict[bool, tuple[str, BFDConfig]] = field(default_factory=dict)

    def check(self, m: CheckedMapping, bfd: BFDConfig | None) -> None:
        if bfd is None:
            return
        seen = self.first.setdefault(bfd.multihop, (m.path, bfd))
        if seen[1].timers() != bfd.timers():
            kind = "multihop" if bfd.multihop else "single-hop"
            m.fail_at(
                "bfd",
                f"every {kind} BFD session must use the same timers (BIRD 2 keeps one set per kind): "
                f"{seen[0]} has {_timers(seen[1])}, this peer {_timers(bfd)}",
            )


def _timers(bfd: BFDConfig) -> str:
    return f"interval_ms {bfd.interval_ms}, multiplier {bfd.multiplier}"


def _router_id(m: CheckedMapping, host: HostConfig | None) -> IPv4Address | None:
    if m.has("router_id"):
        return m.get("router_id", convert.ipv4, None)
    if host is None:  # the host section is broken and already reported
        return None
    if isinstance(host.underlay_address, IPv4Address):
        return host.underlay_address
    m.missing("router_id", " (host.underlay_address is IPv6, so it cannot be the router ID)")
    return None


def _parse_graceful_restart(value: Value) -> GracefulRestartConfig:
    m = value.mapping(("enabled", "restart_time"))
    default = GracefulRestartConfig()
    enabled = m.get("enabled", convert.boolean, default.enabled)
    restart_time = m.get("restart_time", convert.integer(1, 4095), default.restart_time)
    if not m.clean():
        raise Invalid
    return GracefulRestartConfig(enabled, restart_time)


def _parse_bgp_peers(value: Value, bfd_default: BFDConfig | None) -> tuple[PeerConfig, ...]:
    names, addresses, timers = Unique("peer name"), Unique("peer address"), _BFDTimers()
    return convert_all(
        value.items(), lambda item: _parse_bgp_peer(item, names, addresses, timers, bfd_default)
    )


def _parse_bgp_peer(
    value: Value, names: Unique, addresses: Unique, timers: _BFDTimers, bfd_default: BFDConfig | None
) -> PeerConfig:
    m = value.mapping(_PEER_KEYS)
    name = m.get("name", convert.name, None)
    address = m.require("address", convert.any_ip)
    asn = m.require("asn", convert.asn)
    password = m.get("password", convert.password, None)
    hold_time = m.get("hold_time", convert.hold_time, None)
    families = m.get("families", convert.families, None)
    local_address = m.get("local_address", convert.any_ip, None)
    bfd = m.get("bfd", lambda v: parse_bfd(v, bfd_default), bfd_default)
    timers.check(m, bfd)
    if address is not None and local_address is not None and local_address.version != address.version:
        v = address.version
        m.fail_at(
            "local_address", f"expected an IPv{v} address like the peer's {address}, got {local_address}"
        )
    name = check_peer_names(m, name, address, names, addresses)
    if not m.clean() or name is None or address is None or asn is None:
        raise Invalid
    families = families or (convert.family_of(address),)
    return PeerConfig(name, address, asn, password, hold_time, families, local_address, bfd)


def check_peer_names(
    m: CheckedMapping, name: str | None, address: IPAddress | None, names: Unique, addresses: Unique
) -> str | None:
    """Peers are unique by address and by name; an unnamed peer is named after its address."""
    fresh_address = address is not None and addresses.check(m, "address", address)
    if name is not None:
        names.check(m, "name", name)
        return name
    if address is None:
        return None
    if fresh_address:  # a repeated address is already reported; its default name would repeat too
        names.check(m, "name", str(address))
    return str(address)
