"""LXD API JSON into records. Pure: one bad object raises RecordError for that object only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabricd.frozen import FrozenMap
from fabricd.lxd.records import (
    STANDALONE,
    InstanceRecord,
    ListenerKind,
    ListenerRecord,
    MemberRecord,
    NetworkRecord,
    NicRecord,
)


class RecordError(ValueError):
    """This object from LXD is malformed; the message says which field and why."""


def _str(obj: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or (default is None and value == ""):
        raise RecordError(f"{key}: expected a non-empty string, got {type(value).__name__} {value!r:.60}")
    return value


def _config(obj: Mapping[str, Any], key: str, label: str | None = None) -> FrozenMap[str]:
    raw = _mapping(obj, key, label)
    bad = [k for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise RecordError(f"{label or key}: keys and values must be strings ({bad[0]!r:.60})")
    return FrozenMap(raw)


def _mapping(obj: Mapping[str, Any], key: str, label: str | None = None) -> Mapping[str, Any]:
    """obj[key] as a mapping; missing or null (Go's nil map) is empty, anything else is refused."""
    raw = obj.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RecordError(f"{label or key}: expected a mapping, got {type(raw).__name__}")
    return raw


def parse_network(raw: Mapping[str, Any], project: str, ovn_chassis: str | None = None) -> NetworkRecord:
    return NetworkRecord(
        project=project,
        name=_str(raw, "name"),
        type=_str(raw, "type"),
        managed=bool(raw.get("managed", False)),
        config=_config(raw, "config"),
        ovn_chassis=ovn_chassis,
    )


def ovn_chassis_of(state: Mapping[str, Any] | None) -> str | None:
    """The active chassis from GET /1.0/networks/NAME/state, when LXD can say."""
    if not isinstance(state, Mapping):
        return None
    ovn = state.get("ovn")
    chassis = ovn.get("chassis") if isinstance(ovn, Mapping) else None
    return chassis if isinstance(chassis, str) and chassis else None


def _global_addresses(iface_state: Mapping[str, Any], label: str) -> tuple[str, ...]:
    addresses = iface_state.get("addresses")
    if addresses is None:
        return ()
    if not isinstance(addresses, list):
        raise RecordError(f"{label}: expected a list, got {type(addresses).__name__}")
    found = []
    for entry in addresses:
        if not isinstance(entry, Mapping) or entry.get("scope") != "global":
            continue
        address, netmask = entry.get("address"), entry.get("netmask")
        mask_ok = (isinstance(netmask, str) and netmask != "") or type(netmask) is int  # not bool
        if isinstance(address, str) and address and mask_ok:
            found.append(f"{address}/{netmask}")
    return tuple(sorted(found))


def _by_hwaddr(interfaces: Mapping[str, Any], hwaddr: str, claimed: set[str]) -> tuple[str, Any]:
    """The state entry with this MAC. A VM's state comes from lxd-agent, keyed by the guest's own
    interface names (enp5s0), not by device names; LXD itself matches VM NICs by hwaddr.
    Entries another NIC claims by name are skipped."""
    for name in sorted(interfaces):
        iface = interfaces[name]
        if name in claimed:
            continue
        if isinstance(iface, Mapping) and str(iface.get("hwaddr", "")).lower() == hwaddr.lower():
            return name, iface
    return "", None


def _nics(raw: Mapping[str, Any], expanded_config: FrozenMap[str]) -> tuple[NicRecord, ...]:
    devices = _mapping(raw, "expanded_devices")
    state = raw.get("state") if isinstance(raw.get("state"), Mapping) else {}
    interfaces = _mapping(state, "network", "state.network") if state else {}
    nic_configs = {
        device: _config(devices, device, f"expanded_devices.{device}")
        for device, config in sorted(devices.items())
        if isinstance(config, Mapping) and config.get("type") == "nic"
    }
    claimed = {config.get("name", device) for device, config in nic_configs.items()}
    nics = []
    for device, nic_config in nic_configs.items():
        ifname = nic_config.get("name", device)
        hwaddr = expanded_config.get(f"volatile.{device}.hwaddr") or nic_config.get("hwaddr")
        iface = interfaces.get(ifname)
        if not isinstance(iface, Mapping) and hwaddr:
            ifname, iface = _by_hwaddr(interfaces, hwaddr, claimed)
        iface = iface if isinstance(iface, Mapping) else {}
        host_name = iface.get("host_name") if isinstance(iface.get("host_name"), str) else None
        addresses = _global_addresses(iface, f"state.network.{ifname}.addresses")
        nics.append(NicRecord(device, nic_config, hwaddr, host_name, addresses))
    return tuple(nics)


def parse_instance(raw: Mapping[str, Any], default_project: str = "default") -> InstanceRecord:
    expanded = _config(raw, "expanded_config")
    state = raw.get("state")
    status = (
        _str(state, "status") if isinstance(state, Mapping) and state.get("status") else _str(raw, "status")
    )
    return InstanceRecord(
        project=_str(raw, "project", default=default_project) or default_project,
        name=_str(raw, "name"),
        type=_str(raw, "type", default="container"),
        status=status,
        location=_str(raw, "location", default=STANDALONE) or STANDALONE,
        nics=_nics(raw, expanded),
        # Only user.* keys: volatile.* churns on every start and would make equal instances differ.
        config=FrozenMap({k: v for k, v in expanded.items() if k.startswith("user.")}),
    )


def parse_listener(raw: Mapping[str, Any], kind: ListenerKind, project: str, network: str) -> ListenerRecord:
    """A network forward or load balancer (LXD gives both the same fields)."""
    return ListenerRecord(
        kind=kind,
        project=project,
        network=network,
        listen_address=_str(raw, "listen_address"),
        location=_str(raw, "location", default=""),
        config=_config(raw, "config"),
        description=_str(raw, "description", default=""),
    )


def parse_member(raw: Mapping[str, Any]) -> MemberRecord:
    return MemberRecord(
        name=_str(raw, "server_name"), status=_str(raw, "status"), url=_str(raw, "url", default="")
    )


def object_name(raw: object) -> str:
    """A best-effort name for a refused object, for the status line."""
    if isinstance(raw, Mapping):
        for key in ("name", "listen_address", "server_name"):
            value = raw.get(key)
            if isinstance(value, str) and value:
                return value[:80]
    return "?"
