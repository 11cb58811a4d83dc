"""Plain LXD record and config builders for tests and benchmarks (no hypothesis import)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import TypeVar

from fabricd.config import FabricConfig, load_config_text
from fabricd.frozen import FrozenMap
from fabricd.lxd.records import (
    InstanceRecord,
    ListenerRecord,
    LXDSnapshot,
    NetworkRecord,
    NicRecord,
)

ME = "m1"
MEMBERS = ("m1", "m2")
UPLINK = "UPLINK"
HOST = "host:\n  name: m1\n  underlay_address: 192.0.2.11\n"
HOST6 = HOST + "  underlay_address6: 2001:db8::11\n"


def config(body: str = "", host: str = HOST6) -> FabricConfig:
    return load_config_text(host + body, "test.yaml")


# --- builders for hand-written cases --------------------------------------------------------------

Config = Mapping[str, str | None]  # None drops a default key

UPLINK_DEFAULTS: Config = {
    "ipv4.routes": "198.51.100.0/24",
    "ipv6.routes": "2001:db8:100::/48",
    "ipv4.ovn.ranges": "203.0.113.10-203.0.113.20",
}
OVN_DEFAULTS: Config = {
    "network": UPLINK,
    "ipv4.address": "198.51.100.1/26",
    "ipv4.nat": "false",
    "ipv6.address": "2001:db8:100:1::1/64",
    "ipv6.nat": "false",
    "volatile.network.ipv4.address": "203.0.113.11",
    "volatile.network.ipv6.address": "2001:db8:ff::11",
}
BRIDGE_DEFAULTS: Config = {"ipv4.address": "10.0.3.1/24", "ipv6.address": "2001:db8:300::1/64"}


def _merged(defaults: Config, config: Config | None) -> FrozenMap[str]:
    merged = {**defaults, **(config or {})}
    return FrozenMap({k: v for k, v in merged.items() if v is not None})


def uplink(config: Config | None = None, kind: str = "physical") -> NetworkRecord:
    return NetworkRecord("default", UPLINK, kind, True, _merged(UPLINK_DEFAULTS, config))


def ovn(
    name: str = "net1", config: Config | None = None, *, project: str = "default", chassis: str | None = ME
) -> NetworkRecord:
    return NetworkRecord(project, name, "ovn", True, _merged(OVN_DEFAULTS, config), chassis)


def bridge(name: str = "br0", config: Config | None = None) -> NetworkRecord:
    return NetworkRecord("default", name, "bridge", True, _merged(BRIDGE_DEFAULTS, config))


def nic(
    network: str, config: Config | None = None, device: str = "eth0", addresses: tuple[str, ...] = ()
) -> NicRecord:
    return NicRecord(device, _merged({"network": network}, config), addresses=addresses)


def instance(
    name: str,
    *nics: NicRecord,
    status: str = "Running",
    location: str = ME,
    config: Config | None = None,
    project: str = "default",
) -> InstanceRecord:
    return InstanceRecord(project, name, "container", status, location, nics, _merged({}, config))


Record = NetworkRecord | InstanceRecord | ListenerRecord
_R = TypeVar("_R", bound=Record)


def _of(kind: type[_R], records: tuple[Record, ...]) -> tuple[_R, ...]:
    return tuple(r for r in records if isinstance(r, kind))


def snapshot(*records: Record, member: str = ME, clustered: bool = True) -> LXDSnapshot:
    return LXDSnapshot(
        member,
        clustered,
        ("default",),
        _of(NetworkRecord, records),
        _of(InstanceRecord, records),
        tuple(r for r in _of(ListenerRecord, records) if r.kind == "forward"),
        tuple(r for r in _of(ListenerRecord, records) if r.kind == "load-balancer"),
    )


# --- a large deterministic snapshot for timing --------------------------------------------------


def large_snapshot(instances: int = 10_000, routes_each: int = 5, networks: int = 50) -> LXDSnapshot:
    """`networks` networks (an uplink, OVN networks and bridges), every instance running here."""
    uplink = NetworkRecord("default", UPLINK, "physical", True, FrozenMap({
        "ipv4.routes": "100.64.0.0/10,198.18.0.0/15", "bgp.ipv4.nexthop": "192.0.2.1",
    }))  # fmt: skip
    nets: list[NetworkRecord] = [uplink]
    for n in range(1, networks):
        if n % 2:
            config = {"network": UPLINK, "ipv4.address": f"198.18.{n}.1/24"}
            nets.append(NetworkRecord("default", f"ovn{n}", "ovn", True, FrozenMap(config), MEMBERS[n % 2]))
        else:
            config = {"ipv4.address": f"10.{n}.0.1/16"}
            nets.append(NetworkRecord("default", f"br{n}", "bridge", True, FrozenMap(config)))
    base = int(IPv4Address("100.64.0.0"))
    records = []
    for i in range(instances):
        net = nets[1 + i % (networks - 1)]
        routes = ",".join(str(IPv4Network((base + i * routes_each + r, 32))) for r in range(routes_each))
        nic = NicRecord("eth0", FrozenMap({"network": net.name, "ipv4.routes.external": routes}))
        records.append(InstanceRecord("default", f"c{i}", "container", "Running", ME, (nic,)))
    return LXDSnapshot(ME, True, ("default",), tuple(nets), tuple(records))


def large_config() -> FabricConfig:
    return config("routes:\n  allowed_ranges: [100.64.0.0/10]\n")


OVERLAY_BRIDGE = "fabric0"


def large_overlay_config() -> FabricConfig:
    """DHCP on a /16 overlay subnet, one pool of 14,335 addresses: 51,200 left for instances."""
    return config(
        "overlay:\n  enabled: true\n"
        "dhcp:\n  enabled: true\n  server_address: 10.200.0.1/16\n"
        "  ranges: [10.200.200.0-10.200.255.254]\n  election: lxd-cluster\n"
    )


def large_overlay_snapshot(instances: int = 10_000) -> LXDSnapshot:
    """Instances on the overlay bridge over three members, one NIC each, every third stopped: a
    quarter report a stable IPv4 (and an IPv6) address, a quarter a pool address, half none."""
    base, pool = int(IPv4Address("10.200.0.2")), int(IPv4Address("10.200.200.0"))
    records = []
    for i in range(instances):
        mac = "02:10:" + ":".join(f"{(i >> shift) & 255:02x}" for shift in (24, 16, 8, 0))
        addresses: tuple[str, ...] = ()
        if i % 4 == 0:
            addresses = (f"{IPv4Address(base + i)}/16", f"fd00:200::{i:x}/64")
        elif i % 4 == 1:
            addresses = (f"{IPv4Address(pool + i % 14_000)}/16",)
        nic = NicRecord("eth0", FrozenMap({"network": OVERLAY_BRIDGE}), mac, addresses=addresses)
        status = "Stopped" if i % 3 == 0 else "Running"
        records.append(InstanceRecord("default", f"c{i}", "container", status, f"m{1 + i % 3}", (nic,)))
    return LXDSnapshot(ME, True, ("default",), (), tuple(records))
