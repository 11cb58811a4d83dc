"""Plan the overlay's dnsmasq from the LXD snapshot and the config: its three files, as text.

Pure: no I/O. Same input in any order gives the same plan, byte for byte. The rules:

Which instances
  An instance is on the overlay when one of its NICs is on `overlay.bridge` (by managed network
  or bridged parent), whatever its status: a created or stopped instance has its reservation,
  address and names, so they are ready when it starts. LXD listing one instance (project,
  name, location) twice with different data refuses it.

Names
  An instance name must be a DNS label (letters, digits, '-', at most 63, not all digits); else
  the whole instance is refused. Names are published in lower case.
  - The qualified name is `name.<location>.<domain>`, or `name.<project>.<location>.<domain>`
    outside the default project. `<location>` is the LXD cluster member; on a standalone server
    (LXD says "none") it is this host's name (`host.name`), so qualified names stay unique
    across standalone hosts. A project or location that is not a DNS label, or a name longer
    than 253, refuses the qualified name only.
  - The bare name (`name` and `name.<domain>`) goes to the instance in the default project on the
    lowest-sorting location, when exactly one instance is there; otherwise the bare name is not
    published at all. Instances outside the default project never get it, so a project cannot
    take or shadow a default-project name.
  - Two or more instances with one name (compared case-insensitively: DNS is) are a conflict,
    listed with the instance that keeps the bare name (or none). A name two instances would
    still publish after that (a project or location differing only in case) is published for
    neither and listed as a conflict too. So no name is ever published twice.

Addresses (A, AAAA and PTR through `addn-hosts`)
  Every global address LXD reports on an overlay NIC. IPv4 must lie in the server's subnet
  (`dhcp.server_address`) and be neither its network, broadcast nor the server's own address;
  IPv6 must be a global unicast address. An address claimed by two instances is published for
  neither (refused on each). A NIC that reports no IPv4 address at all (created, stopped, or
  not through DHCP yet) has its reservation's address published instead, so its names resolve
  before it starts; once it reports one, what it reports is published. The first name on a
  hosts line is the one PTR answers with: the bare `name.<domain>` for the bare name's
  holder, else the qualified name.

Reservations (`dhcp-hostsfile`, one line per known instance MAC)
  `MAC,address[,hostname]` for every overlay NIC with a valid unicast MAC, as soon as LXD lists
  the instance. dnsmasq offers a reserved address at once (it pings only before a pool address),
  so a new instance is not kept waiting 3 s, and every authority plans the same addresses.
  - Sticky: a NIC keeps the IPv4 address LXD reports for it when that lies in the server subnet
    and outside every dynamic pool (`dhcp.ranges`); the lowest such address when there are
    several (one the instance's earlier NIC, by device name, already keeps is skipped). No slot
    is ever given on it, so it never moves while LXD reports it (unless another instance
    reports it too: then it is published for neither, and each gets a slot).
  - Otherwise a slot in the instance space: the subnet's host addresses minus the server's and
    every pool, numbered upwards. It depends on the config only. A MAC's home slot is the first
    8 bytes of sha256 over the MAC text (lower case, colons) as a big-endian number, modulo the
    space's size. Taken are: every IPv4 address any overlay NIC reports (refused instances and
    NICs included; dnsmasq does not ping before it offers a reserved address). First each free
    home slot goes to the lowest MAC that has it as home; then every other MAC, lowest first,
    takes the next free slot upwards from its home, wrapping round. So the plan is a function
    of the set of NICs: the same in any order, on any host.
  - What can move: only a NIC LXD reports no address for (new, stopped, or with a pool lease
    from before it had a reservation) and that collides. It loses its home slot only to a
    lower MAC with the same home (or to an address someone reports); a NIC that already lost
    its home (probed on) may shift as NICs come and go. A stopped instance gets its home slot
    back unless such a collider appeared meanwhile. A NIC reporting a pool address is given
    its slot and moves there at its next renewal (dnsmasq answers the renewal with a NAK).
  - When the instance space is full the remaining NICs (probing order) get no address (a
    dynamic lease, as before) and are refused with a reason; nothing else changes.
  - The hostname (option 12, and the name dnsmasq publishes for the lease) is the bare name,
    given only to its holder's first overlay NIC with a reservation. Other instances get no
    hostname: a lease must never publish a name that belongs to someone else, and client-sent
    names are ignored (`dhcp-ignore-names`), so no client can claim a name either.
  - A MAC claimed by several NICs goes to the single running claimant if there is one; every
    other claim (or every claim, when none or several claimants run) is refused. The server's
    and the probe's MACs (macs.py) are refused on any NIC.
  - fabricd's own DHCP probe has a line too: the last address of the highest pool of two or
    more addresses. Else each probe is a new client, and dnsmasq pings for 3 s before offering
    a pool address, answering nothing meanwhile. The probe never requests, so the address is
    only ever offered.

Among several standalone hosts (`dhcp.election: standalone`, more than one host in `priority`)
  Each authority sees only its own host's LXD, so an address planned here would be unknown to the
  next authority, which would NAK its renewal and re-address the client. So no fixed addresses:
  no sticky address, no slot, no "instance space full" refusal; a `dhcp-host` line is the MAC and
  the hostname rule above (`MAC[,hostname]`). Every instance takes a pool address, which a new
  authority keeps through the client's renewal (`dhcp-authoritative`). Names are published for the
  addresses LXD reports only.
  Instances on other hosts are unknown to this host's LXD: their names can only come from the
  client. So `dhcp-ignore-names=tag:known` ignores the name a client sends only when a
  `dhcp-host` line matches it (dnsmasq's `known` tag): an instance of this host keeps its planned
  name and claims no other, while an unknown client's own hostname is published for its lease
  (dnsmasq refuses it when the name is in `addn-hosts`, one of this host's instances, and keeps a
  name on one lease only). Qualified names (`name.<host>.<domain>`) exist only for this host's own
  instances.

dnsmasq.conf
  Bound to one interface (the floating server device), `bind-interfaces`, `except-interface=lo`;
  no upstream servers (`no-resolv`, `no-hosts`, `no-poll`), `domain-needed`, `bogus-priv`;
  `domain=` and `local=/<domain>/` (and the subnet's reverse zone when the prefix is /8, /16 or
  /24); `dhcp-authoritative`; `dhcp-ignore-names` (`=tag:known` among several standalone hosts,
  see above); the ping check stays on (no `no-ping`); one `dhcp-range` per pool
  with `dhcp.lease_time` (a `static` range when there is no pool, so reservations are still
  served); the overlay MTU as option 26, forced (sent even to clients that do not ask, since a
  client left at 1500 silently drops large packets); no router option (the overlay has no
  gateway to give); with `dhcp.ipv6_ra`, router advertisements (SLAAC) for the prefixes on the
  interface. Routine DHCP and RA lines are not logged (`quiet-dhcp`, `quiet-ra`): the log file
  lives on tmpfs and is only rotated at each start; the lease file is the record.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from hashlib import sha256
from ipaddress import IPv4Address, IPv4Interface, ip_interface
from pathlib import Path
from typing import TypeGuard

from fabricd.authority.macs import probe_mac, server_mac
from fabricd.config.model import FabricConfig, IPAddress
from fabricd.lxd.nics import normalize_mac, on_bridge
from fabricd.lxd.records import STANDALONE, InstanceRecord, LXDSnapshot, NicRecord

DEFAULT_PROJECT = "default"
CONF_FILE = "dnsmasq.conf"
SERVING_HOST_OPTION = 224  # site-specific (RFC 2132 §2: 128-254 are site-specific)
HOSTS_DHCP_FILE = "hosts.dhcp"
HOSTS_DNS_FILE = "hosts.dns"
LEASE_FILE = "leases"
MIN_MTU, MAX_MTU = 68, 65535

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def dnsmasq_directory(config: FabricConfig) -> Path:
    """Where the files and the lease file live: `daemon.state_dir/dnsmasq`."""
    return config.daemon.state_dir / "dnsmasq"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Something from LXD the plan does not serve, with the reason an operator reads."""

    subject: str  # "instance default/c1@m1", "nic default/c1@m1/eth0"
    reason: str


@dataclass(frozen=True, slots=True)
class NameConflict:
    """A name two or more instances would have. It is published for `holder` only, or for none."""

    name: str  # the bare name, or a full name that collided
    instances: tuple[str, ...]  # "project/name@location", sorted
    holder: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """One `dhcp-host` line."""

    mac: str
    address: IPv4Address | None
    hostname: str | None
    nic: str  # project/name@location/device

    def line(self) -> str:
        fields = [self.mac]
        if self.address is not None:
            fields.append(str(self.address))
        if self.hostname is not None:
            fields.append(self.hostname)
        return ",".join(fields)


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One `addn-hosts` line: the address and its names, the PTR name first."""

    address: IPAddress
    names: tuple[str, ...]
    instance: str

    def line(self) -> str:
        return f"{self.address} {' '.join(self.names)}"


@dataclass(frozen=True, slots=True)
class DnsmasqPlan:
    conf: str  # dnsmasq.conf: a change needs a restart
    hosts_dhcp: str  # dhcp-hostsfile: re-read on SIGHUP
    hosts_dns: str  # addn-hosts: re-read on SIGHUP
    reservations: tuple[Reservation, ...] = ()
    records: tuple[HostRecord, ...] = ()
    refused: tuple[Refusal, ...] = ()
    conflicts: tuple[NameConflict, ...] = ()
    probe: Reservation | None = None  # fabricd's own DHCP probe: the last line of hosts_dhcp


@dataclass(frozen=True, slots=True)
class _Member:
    """An instance on the overlay with a usable name."""

    record: InstanceRecord
    label: str  # the instance name, lower case
    location: str  # the location label used in names, lower case (host name when standalone)
    nics: tuple[NicRecord, ...]  # its overlay NICs, by device
    ident: str  # project/name@location

    def nic_ident(self, nic: NicRecord) -> str:
        return f"{self.ident}/{nic.device}"


def _ident(instance: InstanceRecord) -> str:
    return f"{instance.project}/{instance.name}@{instance.location}"


def is_label(text: str) -> bool:
    """A DNS label dnsmasq and every resolver take: LDH, at most 63, not all digits."""
    return bool(_LABEL.fullmatch(text)) and not text.isdigit()


class InstanceSpace:
    """The addresses a NIC's slot is taken from: the server subnet's host addresses minus the
    server address and every dynamic pool, numbered 0.. upwards. It depends on the config only,
    so a MAC's home slot never changes while the config does not."""

    def __init__(self, server: IPv4Interface, pools: Iterable[tuple[IPv4Address, IPv4Address]]) -> None:
        network = server.network
        first, last = int(network.network_address) + 1, int(network.broadcast_address) - 1
        holes = sorted([(int(server.ip), int(server.ip))] + [(int(lo), int(hi)) for lo, hi in pools])
        runs, cursor = [], first
        for lo, hi in holes:
            if cursor < lo:
                runs.append((cursor, min(lo - 1, last)))
            cursor = max(cursor, hi + 1)
        if cursor <= last:
            runs.append((cursor, last))
        runs = [(lo, hi) for lo, hi in runs if lo <= hi]
        self._starts = [lo for lo, _ in runs]
        self._ends = [hi for _, hi in runs]
        self._offsets = []
        self.size = 0
        for lo, hi in runs:
            self._offsets.append(self.size)
            self.size += hi - lo + 1

    def address(self, index: int) -> IPv4Address:
        run = bisect_right(self._offsets, index) - 1
        return IPv4Address(self._starts[run] + index - self._offsets[run])

    def index(self, address: IPv4Address) -> int | None:
        value = int(address)
        run = bisect_right(self._starts, value) - 1
        if run < 0 or value > self._ends[run]:
            return None
        return self._offsets[run] + value - self._starts[run]

    def home(self, mac: str) -> int:
        """The MAC's home slot: the first 8 bytes of sha256(MAC text, lower-case colon form) as a
        big-endian number, modulo the size. The same on every host and Python."""
        return int.from_bytes(sha256(mac.encode("ascii")).digest()[:8], "big") % self.size

    def place(self, macs: Iterable[str], in_use: Iterable[IPv4Address]) -> dict[str, IPv4Address]:
        """A slot for each MAC, none twice and none on an address `in_use`; a MAC left out when
        the space is full. First every free home slot goes to the lowest MAC that has it as home;
        then the other MACs, lowest first, take the next free slot upwards (wrapping round)."""
        placed: dict[str, IPv4Address] = {}
        if self.size == 0:
            return placed
        after: dict[int, int] = {}  # an occupied slot -> where to look next (the next-free chain)
        for address in in_use:
            index = self.index(address)
            if index is not None:
                after[index] = (index + 1) % self.size

        def occupy(index: int, mac: str) -> None:
            after[index] = (index + 1) % self.size
            placed[mac] = self.address(index)

        def next_free(index: int) -> int:
            path = []
            while index in after:
                path.append(index)
                index = after[index]
            for seen in path:  # path compression: a full stretch is walked once
                after[seen] = index
            return index

        homes: dict[int, list[str]] = defaultdict(list)
        for mac in macs:
            homes[self.home(mac)].append(mac)
        displaced = []
        for home, claimants in homes.items():
            claimants.sort()
            if home in after:
                displaced += claimants
            else:
                occupy(home, claimants[0])
                displaced += claimants[1:]
        for mac in sorted(displaced):
            if len(after) >= self.size:
                break
            occupy(next_free(self.home(mac)), mac)
        return placed


class _Planner:
    def __init__(self, snapshot: LXDSnapshot, config: FabricConfig) -> None:
        server = config.dhcp.server_address
        if server is None:
            raise ValueError("dhcp.server_address is needed to plan dnsmasq")
        self.server: IPv4Interface = server
        self.dhcp = config.dhcp
        self.domain = config.dhcp.domain.lower()
        self.pools = config.dhcp.ranges
        self.space = InstanceSpace(server, self.pools)
        self.directory = dnsmasq_directory(config)
        self.bridge = config.overlay.bridge
        self.vni = config.overlay.vni
        self.host = config.host.name.lower()
        self.fixed = fixed_addresses(config)
        self.snapshot = snapshot
        self.refused: set[Refusal] = set()
        self.conflicts: set[NameConflict] = set()

    def refuse(self, subject: str, reason: str) -> None:
        self.refused.add(Refusal(subject, reason))

    # --- instances and names ----------------------------------------------------------------------

    def members(self) -> list[_Member]:
        seen: dict[tuple[str, str, str], set[InstanceRecord]] = defaultdict(set)
        for instance in self.snapshot.instances:
            if any(on_bridge(nic, self.bridge) for nic in instance.nics):
                canonical = replace(instance, nics=tuple(sorted(instance.nics, key=_nic_key)))
                seen[(instance.project, instance.name, instance.location)].add(canonical)
        members = []
        for key in sorted(seen):
            records = seen[key]
            instance = next(iter(records))
            subject = f"instance {_ident(instance)}"
            if len(records) > 1:
                self.refuse(subject, "LXD lists this instance more than once, with different data")
                continue
            label = instance.name.lower()
            if not is_label(label):
                self.refuse(subject, f"name {instance.name!r} is not a DNS label")
                continue
            nics = sorted((n for n in instance.nics if on_bridge(n, self.bridge)), key=_nic_key)
            devices = [n.device for n in nics]
            if len(set(devices)) < len(devices):
                self.refuse(subject, "two NICs on the overlay have one device name")
                continue
            location = self.host if instance.location == STANDALONE else instance.location.lower()
            members.append(_Member(instance, label, location, tuple(nics), _ident(instance)))
        return members

    def qualified(self, member: _Member) -> str | None:
        record = member.record
        parts = [member.label]
        if record.project != DEFAULT_PROJECT:
            parts.append(record.project.lower())
        parts += [member.location, self.domain]
        subject = f"instance {member.ident}"
        if record.project != DEFAULT_PROJECT and not is_label(record.project.lower()):
            self.refuse(subject, f"project {record.project!r} is not a DNS label: no qualified name")
            return None
        if not is_label(member.location):
            self.refuse(subject, f"location {member.location!r} is not a DNS label: no qualified name")
            return None
        name = ".".join(parts)
        if len(name) > 253:
            self.refuse(subject, f"qualified name {name} is longer than 253: not published")
            return None
        return name

    def bare_holders(self, members: list[_Member]) -> set[str]:
        """The idents holding their bare name; every shared name is listed as a conflict."""
        groups: dict[str, list[_Member]] = defaultdict(list)
        for member in members:
            groups[member.label].append(member)
        holders = set()
        for label, group in groups.items():
            holder = _bare_holder(group)
            if holder is not None:
                holders.add(holder.ident)
            if len(group) > 1:
                idents = tuple(sorted(m.ident for m in group))
                self.conflicts.add(NameConflict(label, idents, holder.ident if holder else None))
        return holders

    def names(self, members: list[_Member]) -> dict[str, tuple[str, ...]]:
        """ident -> names to publish, the PTR name first; no name appears under two idents."""
        holders = self.bare_holders(members)
        wanted: dict[str, list[str]] = {}
        for member in members:
            names = [f"{member.label}.{self.domain}", member.label] if member.ident in holders else []
            qualified = self.qualified(member)
            if qualified is not None:
                names.append(qualified)
            wanted[member.ident] = names
        claims: dict[str, set[str]] = defaultdict(set)
        for ident, names in wanted.items():
            for name in names:
                claims[name].add(ident)
        shared = {name for name, idents in claims.items() if len(idents) > 1}
        for name in shared:
            self.conflicts.add(NameConflict(name, tuple(sorted(claims[name]))))
        return {ident: tuple(n for n in names if n not in shared) for ident, names in wanted.items()}

    # --- addresses ----------------------------------------------------------------------------------

    def nic_addresses(self, members: list[_Member]) -> dict[tuple[str, str], tuple[IPAddress, ...]]:
        """(ident, device) -> the NIC's addresses that may be published, each claimed by one instance."""
        found: dict[tuple[str, str], set[IPAddress]] = defaultdict(set)
        claims: dict[IPAddress, set[str]] = defaultdict(set)
        for member in members:
            for nic in member.nics:
                for text in nic.addresses:
                    address = self.address(text, f"nic {member.nic_ident(nic)}")
                    if address is not None:
                        found[(member.ident, nic.device)].add(address)
                        claims[address].add(member.ident)
        shared = {address for address, idents in claims.items() if len(idents) > 1}
        result = {}
        for (ident, device), addresses in found.items():
            for address in sorted(addresses & shared, key=_address_key):
                others = ", ".join(sorted(claims[address] - {ident}))
                self.refuse(f"nic {ident}/{device}", f"address {address} is also on {others}: not published")
            result[(ident, device)] = tuple(sorted(addresses - shared, key=_address_key))
        return result

    def address(self, text: str, subject: str) -> IPAddress | None:
        address = _parse_ip(text)
        if address is None:
            self.refuse(subject, f"address {text!r} does not parse")
            return None
        network = self.server.network
        if isinstance(address, IPv4Address):
            if address not in network:
                self.refuse(subject, f"address {address} is outside the overlay subnet {network}")
                return None
            if address in (network.network_address, network.broadcast_address, self.server.ip):
                self.refuse(
                    subject, f"address {address} is the subnet's network, broadcast or server address"
                )
                return None
            return address
        if (
            address.is_multicast
            or address.is_link_local
            or address.is_site_local
            or address.is_loopback
            or address.is_unspecified
            or address.ipv4_mapped is not None
        ):
            self.refuse(subject, f"address {address} is not a global unicast IPv6 address")
            return None
        return address

    # --- reservations -------------------------------------------------------------------------------

    def reservations(
        self,
        members: list[_Member],
        addresses: dict[tuple[str, str], tuple[IPAddress, ...]],
        names: dict[str, tuple[str, ...]],
    ) -> list[Reservation]:
        claims: dict[str, list[tuple[_Member, NicRecord]]] = defaultdict(list)
        for member in members:
            for nic in member.nics:
                mac, why = normalize_mac(nic.hwaddr)
                if mac in (probe_mac(self.vni), server_mac(self.vni)):
                    mac, why = None, f"MAC {mac} is the DHCP server's or its probe's"
                if mac is None:
                    self.refuse(f"nic {member.nic_ident(nic)}", f"{why}: no DHCP reservation")
                else:
                    claims[mac].append((member, nic))
        granted: dict[tuple[str, str], str] = {}  # (ident, device) -> mac
        for mac, claimants in claims.items():
            running = [c for c in claimants if c[0].record.running]
            winner = running[0] if len(running) == 1 else claimants[0] if len(claimants) == 1 else None
            for member, nic in claimants:
                if (member, nic) == winner:
                    granted[(member.ident, nic.device)] = mac
                    continue
                others = ", ".join(sorted(m.nic_ident(n) for m, n in claimants if (m, n) != (member, nic)))
                self.refuse(
                    f"nic {member.nic_ident(nic)}", f"MAC {mac} is also on {others}: no DHCP reservation"
                )
        sticky: dict[str, IPv4Address] = {}  # mac -> the address it keeps
        for member in members if self.fixed else ():
            taken: set[IPv4Address] = set()  # one address on two of its NICs: the first keeps it
            for nic in member.nics:
                mac = granted.get((member.ident, nic.device))
                if mac is None:
                    continue
                stable = [a for a in addresses.get((member.ident, nic.device), ()) if self.stable(a)]
                address = next((a for a in stable if a not in taken), None)
                if address is not None:
                    taken.add(address)
                    sticky[mac] = address
        unplaced = sorted(mac for mac in granted.values() if mac not in sticky)
        slots = self.space.place(unplaced, self.in_use()) if self.fixed else {}
        result = []
        for member in members:
            holder_name = member.label if member.label in names.get(member.ident, ()) else None
            for nic in member.nics:
                mac = granted.get((member.ident, nic.device))
                if mac is None:
                    continue
                address = sticky[mac] if mac in sticky else slots.get(mac)
                if address is None and self.fixed:
                    self.refuse(
                        f"nic {member.nic_ident(nic)}",
                        f"the instance space ({self.space.size} addresses) is full: no fixed address,"
                        " a dynamic lease",
                    )
                result.append(Reservation(mac, address, holder_name, member.nic_ident(nic)))
                holder_name = None  # the hostname goes to the first NIC only
        return result

    def probe(self) -> Reservation | None:
        """A reservation for fabricd's own DHCP probe: the last address of the highest pool.
        Without one, every probe is a new client to dnsmasq, which pings a pool address for 3 s
        before it offers it and answers nothing else meanwhile. The probe never requests, so
        the address is only ever offered, and a pool client is never given it."""
        shared = [hi for lo, hi in self.pools if hi > lo]  # never a one-address pool's only address
        if not shared:
            return None  # a static range pings nothing
        return Reservation(probe_mac(self.vni), max(shared), None, "fabricd DHCP probe")

    def stable(self, address: IPAddress) -> TypeGuard[IPv4Address]:
        """In the server subnet (checked before) and outside every dynamic pool."""
        return isinstance(address, IPv4Address) and not any(lo <= address <= hi for lo, hi in self.pools)

    def in_use(self) -> set[IPv4Address]:
        """Every IPv4 address in the subnet some overlay NIC reports, refused instances and NICs
        included: a slot never goes to an address a machine on the overlay has (dnsmasq does not
        ping before it offers a reserved address)."""
        network = self.server.network
        found = set()
        for instance in self.snapshot.instances:
            for nic in instance.nics:
                if not on_bridge(nic, self.bridge):
                    continue
                for text in nic.addresses:
                    address = _parse_ip(text)
                    if isinstance(address, IPv4Address) and address in network:
                        found.add(address)
        return found

    # --- the plan -------------------------------------------------------------------------------------

    def plan(self, interface: str, mtu: int) -> DnsmasqPlan:
        members = self.members()
        names = self.names(members)
        addresses = self.nic_addresses(members)
        reservations = sorted(self.reservations(members, addresses, names), key=lambda r: r.mac)
        probe = self.probe()
        reserved = {r.nic: r.address for r in reservations if r.address is not None}
        records = []
        for member in members:
            published = names[member.ident]
            if not published:
                continue
            mine: set[IPAddress] = set()
            for nic in member.nics:
                reported = addresses.get((member.ident, nic.device), ())
                mine.update(reported)
                # What it will get, until LXD reports an IPv4 address (any, even a refused one) on it.
                planned = reserved.get(member.nic_ident(nic))
                if planned is not None and not _reports_ipv4(nic):
                    mine.add(planned)
            records += [HostRecord(a, published, member.ident) for a in mine]
        records.sort(key=lambda r: _address_key(r.address))
        return DnsmasqPlan(
            conf=self.conf(interface, mtu),
            hosts_dhcp="".join(r.line() + "\n" for r in (*reservations, *filter(None, [probe]))),
            hosts_dns="".join(r.line() + "\n" for r in records),
            reservations=tuple(reservations),
            records=tuple(records),
            refused=tuple(sorted(self.refused, key=lambda r: (r.subject, r.reason))),
            conflicts=tuple(sorted(self.conflicts, key=lambda c: (c.name, c.instances))),
            probe=probe,
        )

    def conf(self, interface: str, mtu: int) -> str:
        network = self.server.network
        directory, lease_time = self.directory, self.dhcp.lease_time
        netmask = network.netmask
        lines = [
            "# Written by fabricd from LXD and its config; every change here is overwritten.",
            f"interface={interface}",
            "bind-interfaces",
            "except-interface=lo",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "domain-needed",
            "bogus-priv",
            "log-facility=-",
            "quiet-dhcp",
            "quiet-ra",
            f"domain={self.domain}",
            f"local=/{self.domain}/",
        ]
        if network.prefixlen in (8, 16, 24):
            octets = str(network.network_address).split(".")[: network.prefixlen // 8]
            lines.append(f"local=/{'.'.join(reversed(octets))}.in-addr.arpa/")
        lines += [
            f"addn-hosts={directory / HOSTS_DNS_FILE}",
            f"dhcp-hostsfile={directory / HOSTS_DHCP_FILE}",
            f"dhcp-leasefile={directory / LEASE_FILE}",
            "dhcp-authoritative",
            # Standalone hosts: a client LXD does not list here (another host's instance) names
            # itself; the names of clients LXD lists are the plan's alone.
            "dhcp-ignore-names" if self.fixed else "dhcp-ignore-names=tag:known",
        ]
        for start, end in sorted(self.pools):
            lines.append(f"dhcp-range={start},{end},{netmask},{lease_time}")
        if not self.pools:
            lines.append(f"dhcp-range={network.network_address},static,{netmask},{lease_time}")
        lines += [f"dhcp-option-force=option:mtu,{mtu}", "dhcp-option=option:router"]
        # Which host serves, in a site-specific option: the probe of standalone hosts tells
        # servers apart by it (the floating MAC and address are the same on every host).
        lines.append(f'dhcp-option-force={SERVING_HOST_OPTION},"{self.host}"')
        if self.dhcp.ipv6_ra:
            lines += ["enable-ra", f"dhcp-range=::,constructor:{interface},ra-only"]
        return "\n".join(lines) + "\n"


def _nic_key(nic: NicRecord) -> tuple[str, str]:
    return nic.device, repr(nic)


def _reports_ipv4(nic: NicRecord) -> bool:
    return any(isinstance(_parse_ip(text), IPv4Address) for text in nic.addresses)


@lru_cache(maxsize=1 << 16)  # the same addresses come back in every snapshot
def _parse_ip(text: str) -> IPAddress | None:
    """The address of an "address/prefixlen" LXD reports; None when it does not parse."""
    try:
        return ip_interface(text.strip()).ip
    except ValueError:
        return None


def _address_key(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


def _bare_holder(group: list[_Member]) -> _Member | None:
    """The default-project instance on the lowest-sorting location, when exactly one is there."""
    default = [m for m in group if m.record.project == DEFAULT_PROJECT]
    if not default:
        return None
    lowest = min(m.location for m in default)
    at_lowest = [m for m in default if m.location == lowest]
    return at_lowest[0] if len(at_lowest) == 1 else None


def fixed_addresses(config: FabricConfig) -> bool:
    """Whether reservations carry addresses: not among several standalone hosts, where each
    authority sees only its own host's LXD, so the next one could not know an address planned
    here and would NAK its renewal."""
    dhcp = config.dhcp
    return not (dhcp.election == "standalone" and len(set(dhcp.priority)) > 1)


def plan_dnsmasq(snapshot: LXDSnapshot, config: FabricConfig, *, interface: str, mtu: int) -> DnsmasqPlan:
    """The dnsmasq files for serving the overlay on `interface` (the floating server device)."""
    if not _IFNAME.fullmatch(interface) or interface in (".", ".."):
        raise ValueError(f"{interface!r} is not an interface name")
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
    return _Planner(snapshot, config).plan(interface, mtu)
