"""The `bgp` section: the local speaker, graceful restart and the peers."""

from __future__ import annotations

from ipaddress import IPv4Address

from fabricd.config import converters as convert
from fabricd.config.model import BGPConfig, GracefulRestartConfig, HostConfig, IPAddress, PeerConfig
from fabricd.config.reader import CheckedMapping, Invalid, Unique, Value, convert_all

BGP_HOLD_TIME = 9


_BGP_KEYS = ("local_asn", "router_id", "hold_time", "graceful_restart", "peers", "exabgp")
_PEER_KEYS = ("name", "address", "asn", "password", "hold_time", "families", "local_address")


def parse_bgp(value: Value, host: HostConfig | None) -> BGPConfig:
    m = value.mapping(_BGP_KEYS)
    local_asn = m.require("local_asn", convert.asn)
    router_id = _router_id(m, host)
    hold_time = m.get("hold_time", convert.hold_time, BGP_HOLD_TIME)
    graceful_restart = m.get("graceful_restart", _parse_graceful_restart, GracefulRestartConfig())
    peers = m.require("peers", _parse_bgp_peers)
    exabgp = m.get("exabgp", convert.absolute_path, None)
    if peers == ():
        m.fail_at("peers", "at least one peer is required")
    if not m.clean() or local_asn is None or router_id is None or peers is None:
        raise Invalid
    return BGPConfig(local_asn, router_id, hold_time, graceful_restart, peers, exabgp)


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


def _parse_bgp_peers(value: Value) -> tuple[PeerConfig, ...]:
    names, addresses = Unique("peer name"), Unique("peer address")
    return convert_all(value.items(), lambda item: _parse_bgp_peer(item, names, addresses))


def _parse_bgp_peer(value: Value, names: Unique, addresses: Unique) -> PeerConfig:
    m = value.mapping(_PEER_KEYS)
    name = m.get("name", convert.name, None)
    address = m.require("address", convert.any_ip)
    asn = m.require("asn", convert.asn)
    password = m.get("password", convert.password, None)
    hold_time = m.get("hold_time", convert.hold_time, None)
    families = m.get("families", convert.families, None)
    local_address = m.get("local_address", convert.any_ip, None)
    if address is not None and local_address is not None and local_address.version != address.version:
        v = address.version
        m.fail_at(
            "local_address", f"expected an IPv{v} address like the peer's {address}, got {local_address}"
        )
    name = check_peer_names(m, name, address, names, addresses)
    if not m.clean() or name is None or address is None or asn is None:
        raise Invalid
    families = families or (convert.family_of(address),)
    return PeerConfig(name, address, asn, password, hold_time, families, local_address)


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
