"""The overlay's kernel reads against this machine's own kernel, read-only: links that are absent,
and the loopback as an underlay."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from pyroute2 import IPRoute

from fabricd.overlay.netlink import UnderlayError, read_overlay, underlay_link


def test_absent_devices_read_as_none_with_no_fdb() -> None:
    with IPRoute() as ipr:
        kernel = read_overlay(ipr, "fdt-nobr0", "vx-fdt-nobr0")
    assert (kernel.bridge, kernel.vxlan, kernel.fdb) == (None, None, frozenset())


def test_a_present_link_is_read_by_name() -> None:
    with IPRoute() as ipr:
        kernel = read_overlay(ipr, "lo", "vx-fdt-nobr0")
    assert kernel.bridge is not None and kernel.bridge.index == 1 and kernel.bridge.kind == ""
    assert kernel.bridge.up and kernel.vxlan is None


def test_underlay_errors_name_the_interface_or_the_address() -> None:
    with IPRoute() as ipr:
        with pytest.raises(UnderlayError, match=r"host\.underlay_interface fdt-none0 does not exist"):
            underlay_link(ipr, ip_address("192.0.2.1"), "fdt-none0")
        with pytest.raises(UnderlayError, match=r"no interface has host\.underlay_address 192\.0\.2\.1"):
            underlay_link(ipr, ip_address("192.0.2.1"), None)
        with pytest.raises(UnderlayError, match="is on lo"):
            underlay_link(ipr, ip_address("127.0.0.1"), None)
        with pytest.raises(UnderlayError, match="is on lo"):
            underlay_link(ipr, ip_address("127.0.0.1"), "lo")
