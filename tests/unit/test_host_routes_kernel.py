"""NetlinkRoutes against a real kernel, in a network namespace of its own (a forked child unshares
one; the machine's interfaces are never touched): an idle read reuses the last one, and any route
or link change is read again."""

from __future__ import annotations

import os
from ipaddress import ip_address, ip_network

import pytest
from pyroute2 import IPRoute

from fabricd.services.host_routes import NetlinkRoutes
from fabricd.services.model import HostRoute, NextHop
from tests.unit.own_netns import repr_in_own_netns


def in_own_netns() -> list[object]:
    seen: list[object] = []
    with IPRoute() as ipr:
        ipr.link("add", ifname="hr0", kind="veth", peer="hr0p")
        index = ipr.link_lookup(ifname="hr0")[0]
        ipr.link("set", index=ipr.link_lookup(ifname="hr0p")[0], state="up")
        ipr.link("set", index=index, state="up")
        ipr.addr("add", index=index, address="192.0.2.1", prefixlen=24)
        kernel = NetlinkRoutes()
        route = HostRoute(ip_network("198.51.100.53/32"), (NextHop(ip_address("192.0.2.10"), "hr0"),))
        seen.append(kernel.read())  # nothing of ours yet
        kernel.install(route)
        first = kernel.read()
        seen.append(first == (route,))
        seen.append(kernel.read() is first)  # nothing changed: the last read, no netlink dump
        # Someone else removes it (an operator, another tool): the next read sees that.
        ipr.route("del", dst="198.51.100.53/32", proto=kernel.proto)
        seen.append(kernel.read())
        kernel.install(route)
        seen.append(kernel.read() == (route,))
        ipr.link("set", index=index, ifname="hr1")  # a renamed device changes the next hop's name
        renamed = kernel.read()
        seen.append(tuple(h.device for r in renamed for h in r.next_hops))
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root")
def test_reads_are_reused_only_while_the_kernel_announces_nothing() -> None:
    assert repr_in_own_netns(in_own_netns) == repr([(), True, True, (), True, ("hr1",)])
