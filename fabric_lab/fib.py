"""Watching a router's kernel table from outside its namespace, polled every 5 ms (lab tests, bench)."""

from __future__ import annotations

import time
from ipaddress import ip_address, ip_network

from pyroute2 import NetNS


def routes_to(ns_name: str, prefix: str) -> set[str]:
    """Gateways of the kernel routes for exactly this prefix (empty set when there is none)."""
    net = ip_network(prefix)
    family = 2 if net.version == 4 else 10
    gateways: set[str] = set()
    with NetNS(ns_name) as ns:
        for route in ns.get_routes(family=family, table=254):
            dst = route.get_attr("RTA_DST")
            if dst is None or route["dst_len"] != net.prefixlen or ip_address(dst) != net.network_address:
                continue
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                gateways.add(gateway)
            for hop in route.get_attr("RTA_MULTIPATH") or []:
                if hop.get_attr("RTA_GATEWAY"):
                    gateways.add(hop.get_attr("RTA_GATEWAY"))
    return gateways


def wait_for(ns_name: str, prefix: str, gateways: set[str] | None, timeout: float = 15.0) -> float:
    """Seconds until the prefix has exactly these gateways (None: until it is gone); raises on timeout."""
    started = time.monotonic()
    expected = gateways or set()
    seen: set[str] = set()
    while time.monotonic() - started < timeout:
        seen = routes_to(ns_name, prefix)
        if seen == expected:
            return time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"{prefix} at {ns_name}: want {sorted(expected) or 'absent'}, have {sorted(seen)}")
