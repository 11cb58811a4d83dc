"""What fabricd observed in LXD: plain immutable records, the planners' only view of LXD.

Values are copied as LXD gives them (strings in config maps); interpreting them, and refusing bad
ones with a reason, is the planners' job, so one malformed key never hides a whole object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fabricd.frozen import FrozenMap

STANDALONE = "none"  # LXD's location for instances on a server that is not clustered


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    project: str
    name: str
    type: str  # bridge, ovn, physical, macvlan, sriov
    managed: bool
    config: FrozenMap[str] = field(default_factory=FrozenMap)
    # ovn only: hostname of the chassis that hosts the network's active gateway (GET .../state),
    # None when LXD could not say (ovn-controller down) or for other types.
    ovn_chassis: str | None = None


@dataclass(frozen=True, slots=True)
class NicRecord:
    """One NIC of an instance, from its expanded devices plus volatile and state data."""

    device: str  # device name, e.g. eth0
    config: FrozenMap[str]  # the expanded device config: network, nictype, parent, ipv4.routes.external...
    hwaddr: str | None = None  # volatile.<device>.hwaddr or the device's hwaddr
    host_name: str | None = None  # host-side interface (veth/tap) from the instance state, when running
    addresses: tuple[str, ...] = ()  # global addresses from the instance state, "addr/prefixlen"

    @property
    def network(self) -> str | None:
        return self.config.get("network")


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    project: str
    name: str
    type: str  # container or virtual-machine
    status: str  # Running, Stopped, Frozen, Error...
    location: str  # cluster member name, or "none" on a standalone server
    nics: tuple[NicRecord, ...] = ()
    config: FrozenMap[str] = field(default_factory=FrozenMap)  # the user.* keys of the expanded config

    @property
    def running(self) -> bool:
        return self.status == "Running"


ListenerKind = Literal["forward", "load-balancer"]


@dataclass(frozen=True, slots=True)
class ListenerRecord:
    """A network forward or load balancer: a listen address on a network, read alike for both."""

    kind: ListenerKind  # as LXD names the object (and fabricd the route's origin)
    project: str
    network: str
    listen_address: str
    location: str  # member for bridge-network forwards in a cluster, "" when not member-specific
    config: FrozenMap[str] = field(default_factory=FrozenMap)
    description: str = ""  # fabricd marks the forwards it writes for OVN services with it


@dataclass(frozen=True, slots=True)
class MemberRecord:
    name: str
    status: str  # Online, Offline, Evacuated
    url: str = ""


@dataclass(frozen=True, slots=True)
class RefusedObject:
    """An LXD object fabricd could not read, and why; shown in status, never fatal."""

    kind: str  # instance, network, forward, load-balancer, member
    project: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class LXDSnapshot:
    """Everything read in one pass. `member` is this server's own member name ("none" standalone)."""

    member: str
    clustered: bool
    projects: tuple[str, ...] = ()
    networks: tuple[NetworkRecord, ...] = ()
    instances: tuple[InstanceRecord, ...] = ()
    forwards: tuple[ListenerRecord, ...] = ()  # kind "forward"
    load_balancers: tuple[ListenerRecord, ...] = ()  # kind "load-balancer"
    members: tuple[MemberRecord, ...] = ()
    refused: tuple[RefusedObject, ...] = ()

    def network(self, project: str, name: str) -> NetworkRecord | None:
        for network in self.networks:
            if network.project == project and network.name == name:
                return network
        return None
