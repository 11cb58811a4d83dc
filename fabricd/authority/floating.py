"""The floating server address: the DHCP/DNS server's identity on the overlay bridge.

The authority's dnsmasq listens on a device of its own, attached to the bridge, that carries the
server address (`dhcp.server_address`, optionally an IPv6 address too) and a fixed MAC derived
from the VNI. The host that holds the authority claims it; the one that gives it up releases it.
Clients so see one server identifier and one MAC whichever host serves, and a takeover needs only
a gratuitous ARP and an unsolicited NA to move the MAC in every bridge's forwarding table.

Why a veth pair and not a macvlan: a macvlan on a bridge puts the bridge in promiscuous mode and
the bridge never learns the macvlan's MAC, so every frame to the server is flooded to all ports,
over VXLAN to every host (checked on this kernel: echo requests to the macvlan showed up on an
unrelated port). One end of a veth pair is an ordinary bridge port, so the bridge learns the
server MAC there and nothing is flooded.

Two ARP details the pair needs:
- Linux answers ARP for any local address on any interface (`arp_ignore=0`), so the bridge itself
  would answer for the server address with the bridge's own MAC, and usually first. `arp_ignore=1`
  on the bridge (and on the device) makes each answer only for its own addresses.
- The port end gets no IPv6 addresses (`addr_gen_mode none`) and a MAC above any vendor's, so it
  never speaks and never becomes the bridge's MAC. The device gets no automatic link-local
  address either; with IPv6 it carries the EUI-64 link-local of the server MAC, added without
  DAD like the other addresses, so it is the same on every host and usable at once.

`claim()` and `release()` are idempotent and cheap when nothing is to be done, so every reconcile
pass may call them; they return what they changed. They block (netlink, and the announcements'
spacing), so the agent calls them from a worker thread.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import Any, Literal

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from fabricd.authority.macs import link_local, port_mac, server_mac
from fabricd.authority.netns_io import packet_socket, require_interface, write_sysctl
from fabricd.config.model import FabricConfig

Address = IPv4Interface | IPv6Interface
OWNED_ALIAS = "fabricd floating server address"
ANNOUNCE_COUNT = 3  # rounds of gratuitous ARP / unsolicited NA
ANNOUNCE_INTERVAL = 0.1  # seconds between rounds
IFF_UP = 0x1
IFA_F_NODAD = 0x02
ADDR_GEN_MODE_NONE = 1
EAFNOSUPPORT = 97
_STEM_MAX = 11  # "fdp-" + 11 = 15, the kernel's limit for an interface name


def device_names(bridge: str) -> tuple[str, str]:
    """(the device carrying the address, its bridge port) for `bridge`: `fd-<bridge>`, `fdp-<bridge>`.

    A bridge name too long for that is shortened to six characters and a checksum of the whole
    name, so two long bridge names never share a device.
    """
    require_interface(bridge)
    stem = bridge if len(bridge) <= _STEM_MAX else f"{bridge[:6]}-{zlib.crc32(bridge.encode()) & 0xFFFF:04x}"
    device, port = f"fd-{stem}", f"fdp-{stem}"
    if len(port) > 15:  # pragma: no cover - the stem's length rules it out
        raise ValueError(f"{port} is longer than an interface name may be")
    return device, port


@dataclass(frozen=True, slots=True)
class FloatingSpec:
    """What the server's identity on the bridge should be."""

    bridge: str
    vni: int
    address: IPv4Interface
    address6: IPv6Interface | None = None

    def __post_init__(self) -> None:
        device_names(self.bridge)  # checks the bridge name
        server_mac(self.vni)  # checks the VNI
        if self.address6 is not None and self.address6.ip.is_link_local:
            raise ValueError(f"{self.address6} is link-local; the server's link-local address is derived")

    @classmethod
    def from_config(cls, config: FabricConfig, address6: IPv6Interface | None = None) -> FloatingSpec:
        if config.dhcp.server_address is None:
            raise ValueError("dhcp.server_address is not set")
        return cls(config.overlay.bridge, config.overlay.vni, config.dhcp.server_address, address6)

    @property
    def device(self) -> str:
        return device_names(self.bridge)[0]

    @property
    def port(self) -> str:
        return device_names(self.bridge)[1]

    @property
    def mac(self) -> str:
        return server_mac(self.vni)

    @property
    def port_mac(self) -> str:
        return port_mac(self.vni)

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every address the device carries: the server address, and with IPv6 its link-local too."""
        if self.address6 is None:
            return (self.address,)
        return self.address, link_local(self.mac), self.address6


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One device as the kernel has it, with what the floating address cares about."""

    index: int
    kind: str
    mac: str
    mtu: int
    up: bool
    master: int | None = None
    peer: int | None = None  # a veth's other end, when it is in this namespace
    arp_ignore: int | None = None


@dataclass(frozen=True, slots=True)
class FloatingState:
    """What is there now: the bridge, the device and its port, the device's addresses."""

    bridge: LinkInfo | None
    device: LinkInfo | None
    port: LinkInfo | None
    addresses: tuple[Address, ...] = ()

    def status(self) -> dict[str, object]:
        """For `fabricctl status`: plain JSON values."""
        device = self.device
        return {
            "present": device is not None,
            "up": bool(device and device.up),
            "mac": device.mac if device else None,
            "addresses": [str(a) for a in self.addresses],
            "attached": bool(self.port and self.bridge and self.port.master == self.bridge.index),
        }


Action = Literal[
    "delete", "create", "set mac", "set port mac", "set mtu", "attach", "arp_ignore",
    "remove address", "add address", "up",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a claim or release; `str()` is what the caller reports."""

    action: Action
    target: str

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


def _sound_pair(state: FloatingState) -> bool:
    """The device and its port exist as one veth pair (anything else is deleted and made again)."""
    device, port = state.device, state.port
    return (
        device is not None
        and port is not None
        and device.kind == "veth"
        and port.kind == "veth"
        and device.peer == port.index
        and port.peer == device.index
    )


def plan_claim(spec: FloatingSpec, state: FloatingState) -> tuple[Change, ...]:
    """The smallest set of steps from `state` to a device that serves `spec`, in the order to take."""
    bridge = state.bridge
    if bridge is None:
        raise ValueError(f"bridge {spec.bridge} does not exist")
    changes: list[Change] = []
    fresh = not _sound_pair(state)
    if fresh:
        if state.device is not None:
            changes.append(Change("delete", spec.device))
        if state.port is not None and (state.device is None or state.device.peer != state.port.index):
            changes.append(Change("delete", spec.port))
        changes.append(Change("create", f"{spec.device}/{spec.port}"))
    device, port = (None, None) if fresh else (state.device, state.port)
    if device is not None and device.mac != spec.mac:
        changes.append(Change("set mac", f"{spec.device} {spec.mac}"))
    if port is not None and port.mac != spec.port_mac:
        changes.append(Change("set port mac", f"{spec.port} {spec.port_mac}"))
    if device is not None and port is not None and (device.mtu, port.mtu) != (bridge.mtu, bridge.mtu):
        changes.append(Change("set mtu", f"{spec.device}/{spec.port} {bridge.mtu}"))
    if port is None or port.master != bridge.index:
        changes.append(Change("attach", f"{spec.port} to {spec.bridge}"))
    if bridge.arp_ignore == 0:
        changes.append(Change("arp_ignore", spec.bridge))
    if device is None or device.arp_ignore == 0:
        changes.append(Change("arp_ignore", spec.device))
    have = () if fresh else state.addresses
    changes += [Change("remove address", str(a)) for a in have if a not in spec.addresses]
    changes += [Change("add address", str(a)) for a in spec.addresses if a not in have]
    if port is None or not port.up:
        changes.append(Change("up", spec.port))
    if device is None or not device.up:
        changes.append(Change("up", spec.device))
    return tuple(changes)


def plan_release(spec: FloatingSpec, state: FloatingState) -> tuple[Change, ...]:
    """The addresses first (they stop being served at once), then the device with its port."""
    if state.device is not None:
        removals = [Change("remove address", str(a)) for a in state.addresses]
        return (*removals, Change("delete", spec.device))
    if state.port is not None:
        return (Change("delete", spec.port),)
    return ()


class FloatingError(Exception):
    """A claim or release could not be completed; the message names the step. The next pass retries."""


def announcement_frames(mac: str, addresses: Iterable[Address]) -> tuple[Any, ...]:
    """A gratuitous ARP per IPv4 address and an unsolicited neighbour advertisement per IPv6 one.

    The ARP is a request with sender and target both the address (what Linux, keepalived and
    most switches send and accept); the NA goes to all nodes with the override flag, so every
    neighbour and every bridge on the way updates its entry for the server MAC.
    """
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import ARP, Ether

    frames: list[Any] = []
    for address in addresses:
        ip = str(address.ip)
        if address.version == 4:
            arp = ARP(op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip)
            frames.append(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / arp)
        else:
            na = ICMPv6ND_NA(tgt=ip, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac)
            all_nodes = IPv6(src=ip, dst="ff02::1", hlim=255)
            frames.append(Ether(src=mac, dst="33:33:00:00:00:01") / all_nodes / na)
    return tuple(frames)


def _link_info(link: Any) -> LinkInfo:
    info = link.get_attr("IFLA_LINKINFO")
    kind = str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
    af_spec = link.get_attr("IFLA_AF_SPEC")
    inet = af_spec.get_attr("AF_INET") if af_spec is not None else None
    in_other_netns = link.get_attr("IFLA_LINK_NETNSID") is not None
    return LinkInfo(
        index=int(link["index"]),
        kind=kind,
        mac=str(link.get_attr("IFLA_ADDRESS") or "").lower(),
        mtu=int(link.get_attr("IFLA_MTU")),
        up=bool(link["flags"] & IFF_UP),
        master=link.get_attr("IFLA_MASTER"),
        peer=None if in_other_netns or kind != "veth" else link.get_attr("IFLA_LINK"),
        arp_ignore=inet.get("arp_ignore") if inet is not None else None,
    )


def _lookup(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _read_link(ipr: IPRoute, name: str) -> LinkInfo | None:
    index = _lookup(ipr, name)
    if index is None:
        return None
    (link,) = ipr.get_links(index)
    return _link_info(link)


def _addresses(ipr: IPRoute, index: int) -> tuple[Address, ...]:
    found = {ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}") for a in ipr.get_addr(index=index)}
    return tuple(sorted(found, key=lambda a: (a.version, a)))


class FloatingAddress:
    """Claims, releases and reads the floating device of one spec, here or in a named namespace.

    Calls block (netlink, the announcements' spacing): make them from a worker thread, one at a
    time. Each opens its own netlink socket, so the object holds no connection between passes.
    """

    def __init__(
        self,
        spec: FloatingSpec,
        netns: str | None = None,
        *,
        announce_count: int = ANNOUNCE_COUNT,
        announce_interval: float = ANNOUNCE_INTERVAL,
    ) -> None:
        self.spec = spec
        self._netns = netns
        self._announce_count = announce_count
        self._announce_interval = announce_interval
        self._ipr: Callable[[], IPRoute] = IPRoute if netns is None else (lambda: NetNS(netns, flags=0))

    def read(self) -> FloatingState:
        with self._ipr() as ipr:
            return self._read(ipr)

    def _read(self, ipr: IPRoute) -> FloatingState:
        device = _read_link(ipr, self.spec.device)
        return FloatingState(
            bridge=_read_link(ipr, self.spec.bridge),
            device=device,
            port=_read_link(ipr, self.spec.port),
            addresses=_addresses(ipr, device.index) if device is not None else (),
        )

    def claim(self, *, announce: bool | None = None, rounds: int | None = None) -> tuple[str, ...]:
        """Make the device serve the spec; announce it (`rounds`, default all) when anything
        changed (or `announce=True`).

        Returns what was done, empty when the device already served. Raises FloatingError.
        """
        with self._ipr() as ipr:
            state = self._read(ipr)
            if state.bridge is None:
                raise FloatingError(f"bridge {self.spec.bridge} does not exist")
            changes = plan_claim(self.spec, state)
            self._apply(ipr, state.bridge, changes)
        done = [str(c) for c in changes]
        if announce or (announce is None and changes):
            done.append(f"announce {self.spec.mac} ({self.announce(rounds)} frames)")
        return tuple(done)

    def release(self) -> tuple[str, ...]:
        """Remove the addresses, then the device. Returns what was done, empty when nothing was there."""
        with self._ipr() as ipr:
            state = self._read(ipr)
            changes = plan_release(self.spec, state)
            self._apply(ipr, state.bridge, changes)
        return tuple(str(c) for c in changes)

    @property
    def announce_rounds(self) -> int:
        return self._announce_count

    @property
    def announce_interval(self) -> float:
        return self._announce_interval

    def announce(self, rounds: int | None = None) -> int:
        """Send the gratuitous ARP / unsolicited NAs on the device, in `rounds` (default all);
        returns frames sent.

        The first round goes at once; the repeats cover a frame lost while a bridge on the way
        was still learning. Raises FloatingError (no device, say).
        """
        frames = [bytes(f) for f in announcement_frames(self.spec.mac, self.spec.addresses)]
        sent = 0
        try:
            with packet_socket(self.spec.device, 0, self._netns) as sock:
                for round_ in range(self._announce_count if rounds is None else rounds):
                    if round_:
                        time.sleep(self._announce_interval)
                    for frame in frames:
                        sock.send(frame)
                        sent += 1
        except OSError as error:
            raise FloatingError(f"announce on {self.spec.device}: {error}") from error
        return sent

    def _apply(self, ipr: IPRoute, bridge: LinkInfo | None, changes: tuple[Change, ...]) -> None:
        for change in changes:
            try:
                self._step(ipr, bridge, change)
            except (NetlinkError, OSError) as error:
                raise FloatingError(f"{change}: {error}") from error

    def _step(self, ipr: IPRoute, bridge: LinkInfo | None, change: Change) -> None:
        spec = self.spec
        action, target = change.action, change.target
        device, port = _lookup(ipr, spec.device), _lookup(ipr, spec.port)
        if action == "delete":
            index = _lookup(ipr, target)
            if index is not None:
                ipr.link("del", index=index)
        elif action == "arp_ignore":
            write_sysctl(f"ipv4/conf/{target}/arp_ignore", "1", self._netns)
        elif action in ("add address", "remove address"):
            address = ip_interface(target)
            flags = {"flags": IFA_F_NODAD} if address.version == 6 else {}
            command = "add" if action == "add address" else "del"
            prefixlen = address.network.prefixlen
            ipr.addr(command, index=device, address=str(address.ip), prefixlen=prefixlen, **flags)
        elif action == "up":
            ipr.link("set", index=_lookup(ipr, target), state="up")
        elif action == "set mac":
            ipr.link("set", index=device, address=spec.mac)
        elif action == "set port mac":
            ipr.link("set", index=port, address=spec.port_mac)
        elif bridge is None:  # what is left needs the bridge; a claim has checked it is there
            raise FloatingError(f"bridge {spec.bridge} does not exist")
        elif action == "create":
            ipr.link(
                "add", ifname=spec.device, kind="veth", address=spec.mac, mtu=bridge.mtu,
                peer={"ifname": spec.port, "address": spec.port_mac, "mtu": bridge.mtu},
            )  # fmt: skip
            for name in (spec.device, spec.port):
                self._quiet_ipv6(ipr, name)
                ipr.link("set", index=_lookup(ipr, name), ifalias=OWNED_ALIAS)
        elif action == "set mtu":
            ipr.link("set", index=device, mtu=bridge.mtu)
            ipr.link("set", index=port, mtu=bridge.mtu)
        elif action == "attach":
            ipr.link("set", index=port, master=bridge.index)

    def _quiet_ipv6(self, ipr: IPRoute, name: str) -> None:
        """No automatic IPv6 addresses (the device's link-local is added by hand)."""
        mode = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", ADDR_GEN_MODE_NONE)]})]}
        try:
            ipr.link("set", index=_lookup(ipr, name), IFLA_AF_SPEC=mode)
        except NetlinkError as error:
            if error.code != EAFNOSUPPORT or self.spec.address6 is not None:
                raise  # without IPv6 in the kernel there is nothing to keep quiet
