"""The `overlay` section: the VXLAN bridge, its peers (a list, or the LXD cluster members), IPsec."""

from __future__ import annotations

from yaml.nodes import SequenceNode

from fabricd.config import converters as convert
from fabricd.config.model import (
    LXD_CLUSTER_PEERS,
    HostConfig,
    IPAddress,
    OverlayConfig,
    OverlayIPsecConfig,
    OverlayPeer,
)
from fabricd.config.reader import Invalid, Unique, Value, convert_all
from fabricd.config.sections.bgp import check_peer_names

_OVERLAY_KEYS = ("enabled", "bridge", "vni", "port", "mtu", "peers", "ipsec")
_MTU_WHAT = "an integer 1280..9000 (or no value, to follow the underlay)"


def parse_overlay(value: Value, host: HostConfig | None) -> OverlayConfig:
    m = value.mapping(_OVERLAY_KEYS)
    default = OverlayConfig()
    enabled = m.get("enabled", convert.boolean, default.enabled)
    bridge = m.get("bridge", convert.ifname, default.bridge)
    vni = m.get("vni", convert.integer(1, 2**24 - 1), default.vni)
    port = m.get("port", convert.port, default.port)
    mtu = m.get("mtu", convert.integer(1280, 9000, _MTU_WHAT), None)
    peers = m.get("peers", lambda v: _parse_overlay_peers(v, host), default.peers)
    ipsec = m.get("ipsec", _parse_overlay_ipsec, default.ipsec)
    if not m.clean():
        raise Invalid
    return OverlayConfig(enabled, bridge, vni, port, mtu, peers, ipsec)


def _parse_overlay_ipsec(value: Value) -> OverlayIPsecConfig:
    m = value.mapping(("enabled", "key_file"))
    default = OverlayIPsecConfig()
    enabled = m.get("enabled", convert.boolean, default.enabled)
    # Only the path is checked here: the key itself is read when the overlay is built.
    key_file = m.get("key_file", convert.absolute_path, default.key_file)
    if enabled and not m.has("key_file"):
        m.missing("key_file", " (required when overlay.ipsec.enabled is true)")
    if not m.clean():
        raise Invalid
    return OverlayIPsecConfig(enabled, key_file)


def _parse_overlay_peers(value: Value, host: HostConfig | None) -> str | tuple[OverlayPeer, ...]:
    if value.text() == LXD_CLUSTER_PEERS:
        return LXD_CLUSTER_PEERS
    if not isinstance(value.node, SequenceNode):
        raise value.expected(f"'{LXD_CLUSTER_PEERS}' or a list of peers")
    names, addresses = Unique("overlay peer name"), Unique("overlay peer address")
    return convert_all(value.items(), lambda item: _parse_overlay_peer(item, host, names, addresses))


def _parse_overlay_peer(
    value: Value, host: HostConfig | None, names: Unique, addresses: Unique
) -> OverlayPeer:
    m = value.mapping(("name", "address"))
    name = m.get("name", convert.name, None)
    address = m.require("address", convert.any_ip)
    if address is not None and host is not None and not _host_reaches(host, address):
        v = address.version
        m.fail_at("address", f"{address} is IPv{v} but this host has no IPv{v} underlay address")
    name = check_peer_names(m, name, address, names, addresses)
    if not m.clean() or name is None or address is None:
        raise Invalid
    return OverlayPeer(name, address)


def _host_reaches(host: HostConfig, address: IPAddress) -> bool:
    """VXLAN needs a local underlay address of the peer's family."""
    if address.version == host.underlay_address.version:
        return True
    return address.version == 6 and host.underlay_address6 is not None
