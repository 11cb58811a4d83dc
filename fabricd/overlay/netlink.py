"""Reading and changing the overlay's devices and FDB through netlink (pyroute2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from fabricd.config.model import IPAddress
from fabricd.overlay.kernel import (
    FLOOD_MAC,
    OWNED_ALIAS,
    DeviceSpec,
    FdbEntry,
    KernelChanges,
    KernelOverlay,
    LinkState,
)

NTF_SELF = 0x02
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
IFF_UP = 0x1
ENOENT = 2
ENODEV = 19


class UnderlayError(Exception):
    """The underlay interface or its MTU cannot be worked out."""


def underlay_link(ipr: IPRoute, address: IPAddress, interface: str | None) -> tuple[int, str, int]:
    """(index, name, MTU) of the configured underlay interface, or of the one holding `address`."""
    if interface is not None:
        link = _get_link(ipr, ifname=interface)
        if link is None:
            raise UnderlayError(f"host.underlay_interface {interface} does not exist")
    else:
        family = 2 if address.version == 4 else 10
        holders = [
            int(a["index"])
            for a in ipr.get_addr(family=family)
            if a.get_attr("IFA_ADDRESS") is not None and ip_address(a.get_attr("IFA_ADDRESS")) == address
        ]
        if not holders:
            raise UnderlayError(f"no interface has host.underlay_address {address}")
        link = _get_link(ipr, index=holders[0])
        if link is None:
            raise UnderlayError(f"the interface holding host.underlay_address {address} vanished")
    index = int(link["index"])
    name = str(link.get_attr("IFLA_IFNAME"))
    if name == "lo":
        raise UnderlayError(f"{address} is on lo: set host.underlay_interface (for the MTU) or overlay.mtu")
    return index, name, int(link.get_attr("IFLA_MTU"))


def read_overlay(ipr: IPRoute, bridge: str, vxlan: str) -> KernelOverlay:
    bridge_link = _link(ipr, bridge)
    vxlan_link = _link(ipr, vxlan)
    fdb: frozenset[FdbEntry] = frozenset()
    if vxlan_link is not None and vxlan_link.kind == "vxlan":
        fdb = frozenset(_fdb(ipr, vxlan_link.index))
    return KernelOverlay(bridge_link, vxlan_link, fdb)


def _get_link(ipr: IPRoute, **which: Any) -> Any:
    """One link by name or index (a single RTM_GETLINK: every pass reads a few, and each decoded
    link costs more than the syscall); None when there is no such link."""
    try:
        found = ipr.link("get", **which)
    except NetlinkError as exc:
        if exc.code == ENODEV:
            return None
        raise
    return found[0] if found else None


def _link(ipr: IPRoute, name: str) -> LinkState | None:
    link = _get_link(ipr, ifname=name)
    if link is None:
        return None
    info = link.get_attr("IFLA_LINKINFO")
    kind = str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
    state = LinkState(
        index=int(link["index"]),
        kind=kind,
        mtu=int(link.get_attr("IFLA_MTU")),
        up=bool(link["flags"] & IFF_UP),
        master=link.get_attr("IFLA_MASTER"),
    )
    if kind != "vxlan" or info is None:
        return state
    data = info.get_attr("IFLA_INFO_DATA")
    local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6")
    return dataclasses.replace(
        state,
        vni=data.get_attr("IFLA_VXLAN_ID"),
        port=data.get_attr("IFLA_VXLAN_PORT"),
        local=ip_address(local) if local else None,
        link_index=data.get_attr("IFLA_VXLAN_LINK") or None,
        learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
        udp_csum=bool(data.get_attr("IFLA_VXLAN_UDP_CSUM"))
        if local and ip_address(local).version == 4
        else None,
    )


def _fdb(ipr: IPRoute, index: int) -> Iterable[FdbEntry]:
    for entry in ipr.fdb("dump", ifindex=index):
        dst = entry.get_attr("NDA_DST")
        if entry["ifindex"] != index or not entry["flags"] & NTF_SELF or not dst:
            continue
        yield FdbEntry(str(entry.get_attr("NDA_LLADDR")).lower(), ip_address(dst))


def apply_changes(ipr: IPRoute, spec: DeviceSpec, changes: KernelChanges) -> None:
    """Make the changes in order; a failure raises NetlinkError and the next pass retries."""
    if changes.create_bridge:
        ipr.link("add", ifname=spec.bridge, kind="bridge")
        ipr.link("set", index=_index(ipr, spec.bridge), ifalias=OWNED_ALIAS)
    bridge = _index(ipr, spec.bridge)
    if changes.create_bridge or changes.bridge_settings:
        ipr.link("set", index=bridge, mtu=spec.mtu, state="up")
    if changes.delete_vxlan:
        ipr.link("del", index=_index(ipr, spec.vxlan))
    if changes.create_vxlan:
        vxlan_args: dict[str, Any] = {
            "vxlan_id": spec.vni,
            "vxlan_port": spec.port,
            "vxlan_learning": 0,
        }
        if spec.local.version == 4:
            vxlan_args["vxlan_udp_csum"] = int(spec.udp_csum)
        vxlan_args["vxlan_local" if spec.local.version == 4 else "vxlan_local6"] = str(spec.local)
        if spec.link_index is not None:
            vxlan_args["vxlan_link"] = spec.link_index
        ipr.link("add", ifname=spec.vxlan, kind="vxlan", **vxlan_args)
        ipr.link("set", index=_index(ipr, spec.vxlan), ifalias=OWNED_ALIAS)
    if changes.create_vxlan or changes.vxlan_settings:
        vxlan = _index(ipr, spec.vxlan)
        ipr.link("set", index=vxlan, master=bridge, mtu=spec.mtu)
        ipr.link("set", index=vxlan, state="up")
        # The bridge takes the smallest port MTU; set it again now that the port is in.
        ipr.link("set", index=bridge, mtu=spec.mtu)
    vxlan = _index(ipr, spec.vxlan)
    for entry in changes.fdb_remove:
        remove_fdb(ipr, vxlan, entry)
    for entry in changes.fdb_add:
        # Flood entries are a list per VTEP (append); a MAC has one VTEP (replace moves it).
        command = "append" if entry.mac == FLOOD_MAC else "replace"
        ipr.fdb(
            command,
            ifindex=vxlan,
            lladdr=entry.mac,
            dst=str(entry.dst),
            flags=NTF_SELF,
            state=NUD_PERMANENT | NUD_NOARP,
        )


def remove_fdb(ipr: IPRoute, vxlan: int, entry: FdbEntry) -> None:
    try:
        ipr.fdb("del", ifindex=vxlan, lladdr=entry.mac, dst=str(entry.dst), flags=NTF_SELF)
    except NetlinkError as exc:
        if exc.code not in (ENOENT, ENODEV):
            raise


def delete_link(ipr: IPRoute, name: str) -> bool:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return False
    ipr.link("del", index=found[0])
    return True


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise UnderlayError(f"{name} vanished while it was being configured")
    return int(found[0])
