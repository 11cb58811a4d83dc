"""The `dhcp` section: the server's own address and the address pools it hands out."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

from fabricd.config import converters as convert
from fabricd.config.model import DHCPConfig
from fabricd.config.reader import Invalid, Value, convert_all

_DHCP_KEYS = ("enabled", "domain", "server_address", "ranges", "lease_time", "ipv6_ra")


def parse_dhcp(value: Value) -> DHCPConfig:
    m = value.mapping(_DHCP_KEYS)
    default = DHCPConfig()
    enabled = m.get("enabled", convert.boolean, default.enabled)
    domain = m.get("domain", convert.hostname, default.domain)
    server = m.get("server_address", _server_interface, None)
    if enabled and not m.has("server_address"):
        m.missing("server_address", " (needed when DHCP is enabled)")
    ranges = m.get("ranges", lambda v: _dhcp_ranges(v, server), default.ranges)
    lease_time = m.get("lease_time", convert.integer(60, 2**31 - 1), default.lease_time)
    ipv6_ra = m.get("ipv6_ra", convert.boolean, default.ipv6_ra)
    if not m.clean():
        raise Invalid
    return DHCPConfig(enabled, domain, server, ranges, lease_time, ipv6_ra)


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
