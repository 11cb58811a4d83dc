"""The validated configuration: immutable values the rest of fabricd reads.

Every default here is also the default the loader applies when a key is absent, so building these
objects directly (in tests, say) gives the same result as loading a file without those keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Literal

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
CheckType = Literal["tcp", "udp", "dns", "http", "https", "exec"]
DNSType = Literal["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"]
DNSRcode = Literal["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"]
OnFailure = Literal["withdraw", "degrade"]
Family = Literal["ipv4-unicast", "ipv6-unicast"]
OvnMode = Literal["all-members", "active-chassis"]
# What to do with an OVN next hop the BGP peer cannot reach (not on a subnet the session leaves by).
UnusableNextHop = Literal["self", "withhold"]

DEFAULT_LXD_SOCKET = Path("/var/lib/lxd/unix.socket")
DEFAULT_CONTROL_SOCKET = Path("/run/fabricd/fabricd.sock")
DEFAULT_STATE_DIR = Path("/run/fabricd")
ALL_PROJECTS = "*"
# overlay.peers takes this literal instead of a list: peers are the LXD cluster members.
LXD_CLUSTER_PEERS = "lxd-cluster"


@dataclass(frozen=True, slots=True)
class HostConfig:
    name: str
    underlay_address: IPAddress
    underlay_address6: IPv6Address | None = None
    underlay_interface: str | None = None


@dataclass(frozen=True, slots=True)
class LXDConfig:
    socket: Path | None = DEFAULT_LXD_SOCKET
    url: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_cert: Path | None = None
    project: str = "default"
    resync_interval: float = 300.0
    reconnect_backoff_max: float = 30.0
    # OVN names the active chassis by hostname; (hostname, member) pairs where the two differ.
    chassis_members: tuple[tuple[str, str], ...] = ()

    def member_for_chassis(self, chassis: str) -> str:
        return dict(self.chassis_members).get(chassis, chassis)


@dataclass(frozen=True, slots=True)
class GracefulRestartConfig:
    enabled: bool = False
    restart_time: int = 30


@dataclass(frozen=True, slots=True)
class BFDConfig:
    """BFD for one BGP session: the router drops the session (and the host's routes) once
    `multiplier` packets `interval_ms` apart went missing, instead of waiting for the hold time."""

    interval_ms: int = 100
    multiplier: int = 3
    # Single-hop (RFC 5881, TTL 255, the peer on a connected subnet) unless the peer is routed to.
    multihop: bool = False

    def timers(self) -> tuple[int, int]:
        return self.interval_ms, self.multiplier


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    address: IPAddress
    asn: int
    password: str | None = None
    hold_time: int | None = None
    families: tuple[Family, ...] = ()
    local_address: IPAddress | None = None
    bfd: BFDConfig | None = None  # None: no BFD for this session


@dataclass(frozen=True, slots=True)
class BGPConfig:
    local_asn: int
    router_id: IPv4Address
    hold_time: int = 9
    graceful_restart: GracefulRestartConfig = GracefulRestartConfig()
    # The loader requires at least one; the default only keeps field order readable.
    peers: tuple[PeerConfig, ...] = ()
    # The exabgp executable; None means the one installed next to fabricd's Python.
    exabgp: Path | None = None
    # The bird executable that runs BFD (birdc next to it); None: found on PATH.
    bird: Path | None = None

    @property
    def bfd_peers(self) -> tuple[PeerConfig, ...]:
        return tuple(p for p in self.peers if p.bfd is not None)


@dataclass(frozen=True, slots=True)
class OverlayPeer:
    name: str
    address: IPAddress


@dataclass(frozen=True, slots=True)
class OverlayIPsecConfig:
    """ESP transport protection of the VXLAN packets between hosts."""

    enabled: bool = False
    # The shared key every host reads at runtime (never at config load), so the config can be shared.
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    enabled: bool = False
    bridge: str = "fabric0"
    vni: int = 100
    port: int = 4789
    mtu: int | None = None
    peers: str | tuple[OverlayPeer, ...] = ()
    # Last, so positional construction of the fields above keeps working.
    ipsec: OverlayIPsecConfig = OverlayIPsecConfig()

    @property
    def peers_from_lxd_cluster(self) -> bool:
        return self.peers == LXD_CLUSTER_PEERS


@dataclass(frozen=True, slots=True)
class DHCPConfig:
    enabled: bool = False
    domain: str = "fabric.internal"
    server_address: IPv4Interface | None = None
    ranges: tuple[tuple[IPv4Address, IPv4Address], ...] = ()
    lease_time: int = 3600
    # Router advertisements (SLAAC) for the IPv6 prefixes on the server's interface.
    ipv6_ra: bool = False
    # Who serves: "lxd-cluster" (a lease in LXD's database) or "standalone" (priority list and
    # probe). The loader's default follows overlay.peers.
    election: str = "standalone"
    priority: tuple[str, ...] = ()  # standalone: host names, best first
    probe_interval: float = 5.0  # seconds between DHCP probes for other servers
    silent_probes: int = 3  # standalone: unanswered probes before a standby takes over
    server_address6: IPv6Interface | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """How one backend of a service is checked, and how many results in a row change its state.

    Each check type reads only its own fields; the parser refuses the others, so an unused field
    here is always its default."""

    type: CheckType
    port: int | None = None  # tcp, udp, dns, http, https; None for exec
    interval: float = 1.0  # seconds from one check's start to the next
    timeout: float = 0.5  # seconds one check may take; at most `interval`
    rise: int = 2  # passes in a row before a backend is up
    fall: int = 2  # failures in a row before it is down
    path: str = "/"  # http, https: the request path
    status: tuple[int, ...] = (200,)  # http, https: accepted status codes
    send: str | None = None  # udp: the payload, sent as UTF-8
    expect: str | None = None  # udp: text the reply must contain; None: any reply passes
    query: str | None = None  # dns: the name asked for
    query_type: DNSType = "A"  # dns
    rcode: DNSRcode = "NOERROR"  # dns: the response code a healthy server gives
    answer: bool = True  # dns: the reply must carry at least one answer record
    command: tuple[str, ...] | None = None  # exec: argv, run inside the instance without a shell


@dataclass(frozen=True, slots=True)
class BackendSelector:
    """Which LXD instances back a service: those named, those matching the glob, and (with `key`)
    those carrying `user.fabric.anycast.<service>=true`, all in `project`. At least one is set."""

    project: str = "default"
    instances: tuple[str, ...] = ()
    pattern: str | None = None
    key: bool = False
    # The NIC's network (or bridge) the host route goes through; None: the instance's first NIC
    # (by device name) on a bridge that has an address of the family.
    network: str | None = None


@dataclass(frozen=True, slots=True)
class FlapConfig:
    """Keeps a flapping backend from storming the router.

    A backend that falls (goes from healthy to down) more than `limit` times within `window`
    seconds is held down for `hold_down` seconds from that fall, whatever its checks say.
    `hold_down: 0` turns this off; `limit: 0` holds a backend down after every fall."""

    limit: int = 3
    window: float = 60.0
    hold_down: float = 120.0


DEFAULT_DRAIN_MED = 4294967294  # the worst MED that every router still compares (2^32-1 may mean "unusable")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """An anycast service: addresses this host announces while a local backend is healthy."""

    name: str
    addresses: tuple[IPAddress, ...]
    backends: BackendSelector = BackendSelector()
    check: HealthCheckConfig | None = None  # None: a running backend counts as healthy
    on_failure: OnFailure = "withdraw"
    med: int | None = None  # None: routes.med
    communities: tuple[str, ...] | None = None  # None: routes.communities
    # on_failure: degrade, while no local backend is healthy (at least one of the two is set).
    degraded_med: int | None = None
    degraded_communities: tuple[str, ...] = ()
    drain_delay: float = 10.0  # seconds announced with GRACEFUL_SHUTDOWN before the withdraw
    drain_med: int = DEFAULT_DRAIN_MED
    flap: FlapConfig = FlapConfig()


@dataclass(frozen=True, slots=True)
class OvnUplinkConfig:
    """How one OVN uplink's networks are announced in a cluster."""

    uplink: str
    mode: OvnMode | None = None  # None: routes.ovn_default_mode
    unusable_next_hop: UnusableNextHop = "self"


@dataclass(frozen=True, slots=True)
class RoutesConfig:
    allowed_ranges: tuple[IPNetwork, ...] = ()
    max_prefix_length_v4: int = 32
    max_prefix_length_v6: int = 128
    min_prefix_length_v4: int = 8
    min_prefix_length_v6: int = 16
    max_prefixes: int = 100000
    announce_instance_addresses: bool = False
    # Attributes every announcement carries unless a network's user.fabric.* keys say otherwise.
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    # all-members: every member announces each OVN network (shared L2 uplink);
    # active-chassis: only the member hosting the network's active gateway chassis does.
    ovn_default_mode: OvnMode = "all-members"
    ovn_uplinks: tuple[OvnUplinkConfig, ...] = ()

    def ovn_mode(self, uplink: str) -> OvnMode:
        for entry in self.ovn_uplinks:
            if entry.uplink == uplink and entry.mode is not None:
                return entry.mode
        return self.ovn_default_mode

    def unusable_next_hop(self, uplink: str) -> UnusableNextHop:
        for entry in self.ovn_uplinks:
            if entry.uplink == uplink:
                return entry.unusable_next_hop
        return "self"


@dataclass(frozen=True, slots=True)
class ControlConfig:
    socket: Path = DEFAULT_CONTROL_SOCKET
    mode: int = 0o660
    group: str | None = None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None = None

    def listen_address(self) -> tuple[str, int] | None:
        """(host, port) for socket binding; IPv6 hosts come back without brackets."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    interval: float = 30.0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    # Runtime state: ExaBGP's config and relay socket, the overlay's ownership record. Under /run
    # on purpose: after a reboot the kernel state it describes is gone too.
    state_dir: Path = DEFAULT_STATE_DIR


@dataclass(frozen=True, slots=True)
class FabricConfig:
    source: Path
    host: HostConfig
    lxd: LXDConfig = LXDConfig()
    bgp: BGPConfig | None = None
    overlay: OverlayConfig = OverlayConfig()
    dhcp: DHCPConfig = DHCPConfig()
    services: tuple[ServiceConfig, ...] = ()
    routes: RoutesConfig = RoutesConfig()
    control: ControlConfig = ControlConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    daemon: DaemonConfig = DaemonConfig()
