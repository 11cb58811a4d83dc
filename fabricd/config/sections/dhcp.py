"""The `dhcp` section: the server's own addresses, the pools it hands out and how the one
authority is elected."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from fabricd.config import converters as convert
from fabricd.config.model import DHCPConfig, HostConfig, OverlayConfig
from fabricd.config.reader import CheckedMapping, Invalid, Value, convert_all

_DHCP_KEYS = (
    "enabled",
    "domain",
    "server_address",
    "server_address6",
    "ranges",
    "lease_time",
    "ipv6_ra",
    "election",
    "priority",
    "probe_interval",
    "silent_probes",
)
ELECTIONS = ("lxd-cluster", "standalone")
# A probe listens 3.5 s for offers (dnsmasq pings an address 3 s before it first offers it).
MIN_PROBE_INTERVAL = 4.0


def parse_dhcp(value: Value, host: HostConfig | None, overlay: OverlayConfig | None) -> DHCPConfig:
    """`overlay` None: that section is invalid (and reported), so nothing is checked against it."""
    m = value.mapping(_DHCP_KEYS)
    default = DHCPConfig()
    enabled = m.get("enabled", convert.boolean, default.enabled)
    domain = m.get("domain", convert.hostname, default.domain)
    server = m.get("server_address", _server_interface, None)
    if enabled and not m.has("server_address"):
        m.missing("server_address", " (needed when DHCP is enabled)")
    server6 = m.get("server_address6", _server_interface6, None)
    ranges = m.get("ranges", lambda v: _dhcp_ranges(v, server), default.ranges)
    lease_time = m.get("lease_time", convert.integer(60, 2**31 - 1), default.lease_time)
    ipv6_ra = m.get("ipv6_ra", convert.boolean, default.ipv6_ra)
    cluster = overlay is not None and overlay.peers_from_lxd_cluster
    default_election = ELECTIONS[0] if cluster else ELECTIONS[1]
    election = m.get("election", convert.choice(ELECTIONS), default_election)
    priority = m.get("priority", _priority, ())
    probe_interval = m.get("probe_interval", _probe_interval, default.probe_interval)
    silent_probes = m.get("silent_probes", convert.integer(1, 100), default.silent_probes)
    if enabled and overlay is not None:
        _check_enabled(m, host, overlay, election, priority)
    if not m.clean():
        raise Invalid
    return DHCPConfig(
        enabled,
        domain,
        server,
        ranges,
        lease_time,
        ipv6_ra,
        election,
        priority,
        probe_interval,
        silent_probes,
        server6,
    )


def _check_enabled(
    m: CheckedMapping,
    host: HostConfig | None,
    overlay: OverlayConfig,
    election: str,
    priority: tuple[str, ...],
) -> None:
    """What an enabled authority needs from the rest of the config."""
    if not overlay.enabled:
        m.fail_at("enabled", "the authority serves the overlay: set overlay.enabled: true")
    if election == "lxd-cluster":
        if priority:
            m.fail_at("priority", "only used with election: standalone (the LXD cluster elects)")
        return
    if not priority:
        m.missing("priority", " (election: standalone needs the hosts that may serve, best first)")
        return
    if host is not None and host.name not in priority:
        m.fail_at("priority", f"this host ({host.name}) is not in the list, so it could never serve")
    if isinstance(overlay.peers, tuple) and host is not None:
        known = {p.name for p in overlay.peers} | {host.name}
        unknown = [name for name in priority if name not in known]
        if unknown:
            m.fail_at(
                "priority",
                f"{', '.join(unknown)} is no overlay peer name (overlay.peers[].name) nor host.name",
            )


def _priority(value: Value) -> tuple[str, ...]:
    names = convert.list_of(convert.hostname)(value)
    for i, name in enumerate(names):
        if name in names[:i]:
            first = f"{value.path}[{names.index(name)}]"
            raise value.items()[i].fail(f"duplicate host '{name}'; already at {first}")
    return names


def _probe_interval(value: Value) -> float:
    seconds = convert.positive_number(value)
    if seconds < MIN_PROBE_INTERVAL:
        raise value.expected(f"a number of seconds >= {MIN_PROBE_INTERVAL:g} (a probe listens 3.5 s)")
    return seconds


def _server_interface6(value: Value) -> IPv6Interface:
    text = value.text() or ""
    try:
        interface = IPv6Interface(text) if "/" in text else None
    except ValueError:
        interface = None
    if interface is None or interface.network.prefixlen > 126:
        raise value.expected("an IPv6 address with its prefix length, like fd00:200::1/64")
    if interface.ip.is_link_local or interface.ip.is_multicast or interface.ip.is_loopback:
        raise value.fail(f"{interface.ip} is no unicast address a client can reach; use a global or ULA one")
    return interface


def _server_interface(value: Value) -> IPv4Interface:
    text = value.text() or ""
    try:
        interface = IPv4Interface(text) if "/" in text else None
    except ValueError:
        interface = None
    if interface is None or interface.network.prefixlen > 30:
        raise value.expected("an IPv4 address with its prefix length (at most /30), like 10.200.0.1/24")
    network = interface.network
    if interface.ip in (network.network_address, network.broadcast_address):
        raise value.fail(
            f"{interface.ip} is the network or broadcast address of {network}; use a host address"
        )
    return interface


_Range = tuple[IPv4Address, IPv4Address]


def _dhcp_ranges(value: Value, server: IPv4Interface | None) -> tuple[_Range, ...]:
    items = value.items()
    pools = convert_all(items, lambda item: _dhcp_range(item, server))
    for i, (start, end) in enumerate(pools):
        for j in range(i):
            if start <= pools[j][1] and pools[j][0] <= end:
                raise items[i].fail(f"overlaps {value.path}[{j}]")
    return pools


def _dhcp_range(value: Value, server: IPv4Interface | None) -> _Range:
    start_text, _, end_text = (value.text() or "").partition("-")
    try:
        start, end = IPv4Address(start_text.strip()), IPv4Address(end_text.strip())
    except ValueError:
        raise value.expected("a range like 10.200.0.100-10.200.0.199") from None
    if start > end:
        raise value.fail(f"the range starts ({start}) after it ends ({end})")
    if server is None:
        return start, end
    network = server.network
    hosts = (network.network_address + 1, network.broadcast_address - 1)
    if not (hosts[0] <= start and end <= hosts[1]):
        raise value.fail(f"{start}-{end} is outside {network}'s host addresses (from dhcp.server_address)")
    if start <= server.ip <= end:
        raise value.fail(f"{start}-{end} includes the server's own address {server.ip}")
    return start, end
