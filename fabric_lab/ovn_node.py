"""OVS and OVN inside a lab node (label `fabric.ovn`), every file and daemon node-private.

`fabric.ovn: "true"`: the node is a one-chassis OVN deployment of its own: ovsdb-server +
ovs-vswitchd with the userspace (netdev) datapath, the OVN northbound and southbound ovsdb-servers,
ovn-northd and ovn-controller, all on unix sockets. The chassis name (system-id) and hostname are the
node name. The OVS/OVN config, database and log directories are bound to node-private directories,
like FRR's /etc/frr; the daemons' sockets and pid files are under /run, which is node-private anyway.

Several nodes sharing one OVN (an LXD cluster):
  fabric.ovn: central           the same daemons, but the databases also listen on the underlay:
                                NB ptcp:6641:ADDRESS, SB ptcp:6642:ADDRESS; LXD uses tcp:ADDRESS:6641
  fabric.ovn: chassis           OVS and ovn-controller only, connected to the central's SB database
  fabric.ovn.address: ADDRESS   this node's underlay address: its tunnel (encap) IP, and on the
                                central the address the databases listen on (required for both)
  fabric.ovn.central: ADDRESS   the central's address (required for chassis)
  fabric.ovn.encap: geneve      tunnel type between chassis, geneve (default) or vxlan
Every ovn-controller of such a setup, the central's included, uses ovn-remote=tcp:CENTRAL:6642.
Centrals start before chassis whatever the file order (`start_order`).

Tunnels in the userspace datapath: OVS encapsulates itself and must send the result out of an OVS
bridge ("native tunnel routing failed" otherwise), so for central and chassis nodes the interface
holding fabric.ovn.address is moved into the netdev bridge br-phy (`bridge_underlay`): its addresses
and routes go to br-phy's internal port, the interface itself stays up as br-phy's port, with ARP,
IPv6 and (by rp_filter) IPv4 off in the kernel, which would otherwise see every packet twice. All the
node's underlay traffic (BGP, LXD cluster, OVN databases) then passes OVS in userspace.
OVS reads that port with AF_PACKET and takes a veth's packets as they come: TCP/UDP the node at the
other end sends itself carry no checksum yet (CHECKSUM_PARTIAL) and the member's kernel drops them.
That node must compute checksums before sending: run `python -m fabric_lab.ovn_node tx-checksum-off
IFACE...` in it (its exec lines), as `ethtool -K IFACE tx off` would (no ethtool here).

The kernel datapath is never used (`ovs-vswitchd --disable-system`): ovn-controller makes br-int with
`ovn-bridge-datapath-type=netdev`, but LXD creates the OVS bridge of an OVN network's uplink
(`lxdovnN`) with the default (kernel) type, and neither OVS nor LXD has a setting for the default.
After creating an OVN network, switch such bridges to netdev with `set_netdev_datapath(node)` from
Python, or inside the node: `fabric-lab exec NODE -- python -m fabric_lab.ovn_node netdev`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fabric_lab import netns
from fabric_lab.labels import underlay_address
from fabric_lab.lxd_preseed import DEFAULT_PRESEED
from fabric_lab.node import LabError, NodeRuntime
from fabric_lab.topology_model import FALSE_WORDS, TRUE_WORDS, Node

OVN_LABEL = "fabric.ovn"
ADDRESS_LABEL = "fabric.ovn.address"
CENTRAL_LABEL = "fabric.ovn.central"
ENCAP_LABEL = "fabric.ovn.encap"
NB_PORT, SB_PORT = 6641, 6642
ENCAP_TYPES = ("geneve", "vxlan")
INTEGRATION_BRIDGE = "br-int"
UNDERLAY_BRIDGE = "br-phy"
NB_SOCKET = "/run/ovn/ovnnb_db.sock"
SB_SOCKET = "/run/ovn/ovnsb_db.sock"
OVS_SOCKET = "/run/openvswitch/db.sock"
OVS_TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovn-northd", "ovn-controller")

# Node directory (under <state>/nodes/<node>) -> the path it is bound on inside the node.
_PRIVATE_DIRS = (
    ("etc-openvswitch", "/etc/openvswitch"),
    ("var-lib-openvswitch", "/var/lib/openvswitch"),
    ("etc-ovn", "/etc/ovn"),
    ("var-lib-ovn", "/var/lib/ovn"),
)
# Logs stay after `down`, beside the lab's other logs: <state>/logs/<node>-openvswitch/ and -ovn/.
_LOG_DIRS = (("openvswitch", "/var/log/openvswitch"), ("ovn", "/var/log/ovn"))

# Daemons by pid file (inside the node), in the order `down` stops them: ovn-controller first, so it
# cannot recreate br-int while the bridges go; OVS's own database last.
DAEMONS = (
    "/run/ovn/ovn-controller.pid",
    "/run/ovn/ovn-northd.pid",
    "/run/ovn/ovnnb_db.pid",
    "/run/ovn/ovnsb_db.pid",
    "/run/openvswitch/ovs-vswitchd.pid",
    "/run/openvswitch/ovsdb-server.pid",
)


Role = Literal["standalone", "central", "chassis"]


@dataclass(frozen=True, slots=True)
class OvnPlan:
    """What runs in an OVN node, from its labels."""

    role: Role
    address: str = "127.0.0.1"  # encap IP; a central's databases listen on it too
    central: str = ""  # the central's address; "" for standalone (unix sockets)
    encap: str = "geneve"

    @property
    def runs_central(self) -> bool:
        return self.role != "chassis"

    @property
    def southbound(self) -> str:
        return f"tcp:{self.central}:{SB_PORT}" if self.central else f"unix:{SB_SOCKET}"

    @property
    def northbound(self) -> str:
        return f"tcp:{self.central}:{NB_PORT}" if self.central else f"unix:{NB_SOCKET}"


def ovn_plan(node: Node) -> OvnPlan | None:
    """The node's OVN role, or None when it runs no OVN; LabError for labels that do not fit."""
    value = node.labels.get(OVN_LABEL, "").strip().lower()
    roles = (*TRUE_WORDS, *FALSE_WORDS, "central", "chassis")
    if value and value not in roles:
        raise LabError(
            f"node {node.name}: label {OVN_LABEL} must be one of {', '.join(roles)}, not {value!r}"
        )
    if value in TRUE_WORDS:
        return OvnPlan("standalone")
    if value not in ("central", "chassis"):
        return None
    address = _address_label(node, ADDRESS_LABEL, value)
    central = address if value == "central" else _address_label(node, CENTRAL_LABEL, value)
    encap = node.labels.get(ENCAP_LABEL, "geneve").strip().lower()
    if encap not in ENCAP_TYPES:
        raise LabError(f"node {node.name}: label {ENCAP_LABEL} must be one of {', '.join(ENCAP_TYPES)}")
    return OvnPlan("central" if value == "central" else "chassis", address, central, encap)


def _address_label(node: Node, label: str, role: str) -> str:
    address = underlay_address(node, label, f"an IP address (an OVN {role} needs it)")
    return f"[{address}]" if address.version == 6 else str(address)


def runs_ovn(node: Node) -> bool:
    return ovn_plan(node) is not None


def start_order(nodes: Iterable[Node]) -> list[tuple[Node, OvnPlan]]:
    """The OVN nodes with their plans, centrals first (chassis register with a running central)."""
    plans = [(node, plan) for node in nodes if (plan := ovn_plan(node)) is not None]
    return sorted(plans, key=lambda item: item[1].role == "chassis")


def ovn_binds(node: NodeRuntime, plan: OvnPlan | None = None) -> list[tuple[str, str, bool]]:
    """Node-private OVS/OVN directories; a central's or chassis' ovn-nbctl/ovn-sbctl find the central."""
    missing = [tool for tool in OVS_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(
            f"node {node.name}: OVS/OVN is not installed, no {', '.join(missing)} (run scripts/setup.sh)"
        )
    binds: list[tuple[str, str, bool]] = []
    for name, target in _PRIVATE_DIRS:
        source = node.directory / name
        source.mkdir(parents=True, exist_ok=True)
        binds.append((str(source), target, False))
    for name, target in _LOG_DIRS:
        source = node.logs / f"{node.name}-{name}"
        source.mkdir(parents=True, exist_ok=True)
        binds.append((str(source), target, False))
    if plan is not None and plan.central:
        node.env.update({"OVN_NB_DB": plan.northbound, "OVN_SB_DB": plan.southbound})
    return binds


def _daemons(plan: OvnPlan) -> tuple[str, ...]:
    return DAEMONS if plan.runs_central else (DAEMONS[0], *DAEMONS[4:])


def ovn_pid_files(node: NodeRuntime, plan: OvnPlan | None = None) -> list[str]:
    """Where the daemons will write their pids, as seen from the machine; record these before starting."""
    return [str(_host_path(node, pid_file)) for pid_file in _daemons(plan or OvnPlan("standalone"))]


def _host_path(node: NodeRuntime, path_in_node: str) -> Path:
    return node.run_dir / Path(path_in_node).relative_to("/run")


def _start_daemon(node: NodeRuntime, command: list[str], pid_file: str, log_file: str) -> None:
    """Run a daemon that detaches once it serves, so the next one can rely on it."""
    node.run([*command, f"--pidfile={pid_file}", "--detach", "--no-chdir", f"--log-file={log_file}"])


def start_ovn(node: NodeRuntime, plan: OvnPlan | None = None, timeout: float = 30) -> None:
    """Start OVS (userspace datapath), OVN central (unless a chassis) and ovn-controller, in order."""
    plan = plan or OvnPlan("standalone")
    controller, northd, nb_db, sb_db, vswitchd, ovsdb = DAEMONS
    for directory in ("openvswitch", "ovn"):
        (node.run_dir / directory).mkdir(parents=True, exist_ok=True)
    conf_db = "/etc/openvswitch/conf.db"
    node.run(["ovsdb-tool", "create", conf_db, "/usr/share/openvswitch/vswitch.ovsschema"])
    server = ["ovsdb-server", conf_db, f"--remote=punix:{OVS_SOCKET}"]
    _start_daemon(node, server, ovsdb, "/var/log/openvswitch/ovsdb-server.log")
    node.run(
        ["ovs-vsctl", "--no-wait", "--", "init", "--", "set", "Open_vSwitch", ".",
         f"external-ids:system-id={node.name}", f"external-ids:hostname={node.name}",
         f"external-ids:ovn-remote={plan.southbound}", f"external-ids:ovn-encap-type={plan.encap}",
         f"external-ids:ovn-encap-ip={plan.address.strip('[]')}",
         f"external-ids:ovn-bridge={INTEGRATION_BRIDGE}", "external-ids:ovn-bridge-datapath-type=netdev"]
    )  # fmt: skip
    switch = ["ovs-vswitchd", f"unix:{OVS_SOCKET}", "--disable-system"]
    _start_daemon(node, switch, vswitchd, "/var/log/openvswitch/ovs-vswitchd.log")
    if plan.central:
        bridge_underlay(node, plan.address.strip("[]"))
    if plan.runs_central:
        for db, pid_file, port in (("nb", nb_db, NB_PORT), ("sb", sb_db, SB_PORT)):
            db_file = f"/var/lib/ovn/ovn{db}_db.db"
            node.run(["ovsdb-tool", "create", db_file, f"/usr/share/ovn/ovn-{db}.ovsschema"])
            server = ["ovsdb-server", db_file, f"--remote=punix:/run/ovn/ovn{db}_db.sock"]
            if plan.central:
                server.append(f"--remote=ptcp:{port}:{plan.central}")
            server.append(f"--unixctl=/run/ovn/ovn{db}_db.ctl")
            _start_daemon(node, server, pid_file, f"/var/log/ovn/ovsdb-server-{db}.log")
        node.run(["ovn-nbctl", f"--db=unix:{NB_SOCKET}", "--no-wait", "init"])
        node.run(["ovn-sbctl", f"--db=unix:{SB_SOCKET}", "init"])
        central = ["ovn-northd", f"--ovnnb-db=unix:{NB_SOCKET}", f"--ovnsb-db=unix:{SB_SOCKET}"]
        _start_daemon(node, central, northd, "/var/log/ovn/ovn-northd.log")
    _start_daemon(
        node, ["ovn-controller", f"unix:{OVS_SOCKET}"], controller, "/var/log/ovn/ovn-controller.log"
    )
    wait_ovn(node, timeout, plan.southbound)


def wait_ovn(node: NodeRuntime, timeout: float = 30, southbound: str = f"unix:{SB_SOCKET}") -> None:
    """Until the chassis is in the southbound database and br-int exists with the netdev datapath."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chassis = node.run(
            ["ovn-sbctl", f"--db={southbound}", "--timeout=5", "--bare", "--columns=hostname", "find",
             "Chassis", f"name={node.name}"],
            check=False, timeout=10,
        ).stdout.strip()  # fmt: skip
        datapath = node.run(
            ["ovs-vsctl", "--timeout=5", "get", "Bridge", INTEGRATION_BRIDGE, "datapath_type"],
            check=False,
            timeout=10,
        ).stdout.strip()
        if chassis == node.name and datapath.strip('"') == "netdev":
            return
        time.sleep(0.2)
    raise LabError(
        f"node {node.name}: ovn-controller did not register chassis {node.name} with a netdev "
        f"{INTEGRATION_BRIDGE} within {timeout:g}s; see {node.logs / (node.name + '-ovn')}"
    )


def with_lxd_ovn_config(preseed_text: str | None, plan: OvnPlan | None = None) -> str | None:
    """The preseed with LXD pointed at the node's OVN (keys the preseed sets itself are kept).

    A central or chassis node's LXD uses the central's northbound database over TCP.

        Text that is not a mapping is returned as it is, for the LXD preseed check to report.
    """
    preseed: Any = yaml.safe_load(preseed_text) if preseed_text is not None else dict(DEFAULT_PRESEED)
    if not isinstance(preseed, dict):
        return preseed_text
    config = dict(preseed.get("config") or {})
    config.setdefault("network.ovn.northbound_connection", (plan or OvnPlan("standalone")).northbound)
    config.setdefault("network.ovn.integration_bridge", INTEGRATION_BRIDGE)
    preseed["config"] = config
    return yaml.safe_dump(preseed, sort_keys=False)


# ---- the underlay in OVS, for tunnels ---------------------------------------------------------------


def _ip_json(node: NodeRuntime, *args: str) -> list[dict[str, Any]]:
    out = node.run(["ip", "-j", *args], timeout=20).stdout.strip()
    parsed: list[dict[str, Any]] = json.loads(out) if out else []
    return parsed


def bridge_underlay(node: NodeRuntime, address: str) -> str:
    """Move the interface holding `address` into the netdev bridge br-phy; returns the interface.

    Its global addresses and its routes (but the kernel's own) move to br-phy, which gets its MAC so
    neighbours' caches stay right. Does nothing when the address is on br-phy already.
    """
    holder = ""
    addresses: list[dict[str, Any]] = []
    mac = ""
    for link in _ip_json(node, "addr", "show"):
        found = [a for a in link.get("addr_info", []) if a.get("local") == address]
        if found:
            holder, mac = str(link["ifname"]), str(link.get("address", ""))
            addresses = [a for a in link["addr_info"] if a.get("scope") == "global"]
    if not holder:
        raise LabError(f"node {node.name}: no interface has {ADDRESS_LABEL} {address}")
    if holder == UNDERLAY_BRIDGE:
        return holder
    routes = [
        (family, route)
        for family in ("-4", "-6")
        for route in _ip_json(node, family, "route", "show", "dev", holder)
        if route.get("protocol") != "kernel" and not str(route.get("dst", "")).startswith(("fe80:", "ff00:"))
    ]
    node.run(
        ["ovs-vsctl", "--timeout=10", "--", "add-br", UNDERLAY_BRIDGE, "--", "set", "Bridge", UNDERLAY_BRIDGE,
         "datapath_type=netdev", f"other-config:hwaddr={mac}", "--", "add-port", UNDERLAY_BRIDGE, holder]
    )  # fmt: skip
    node.run(["ip", "addr", "flush", "dev", holder, "scope", "global"])
    node.run(["ip", "link", "set", holder, "arp", "off"])
    node.run(
        ["sysctl", "-qw", f"net.ipv6.conf.{holder}.disable_ipv6=1", f"net.ipv4.conf.{holder}.rp_filter=1"]
    )
    node.run(["ip", "link", "set", UNDERLAY_BRIDGE, "up"])
    for item in addresses:
        prefix = f"{item['local']}/{item['prefixlen']}"
        node.run(["ip", "addr", "add", prefix, "dev", UNDERLAY_BRIDGE, *(["nodad"] if ":" in prefix else [])])
    for family, route in routes:
        command = ["ip", family, "route", "replace", str(route["dst"])]
        if route.get("gateway"):
            command += ["via", str(route["gateway"])]
        command += ["dev", UNDERLAY_BRIDGE]
        if route.get("metric") is not None:
            command += ["metric", str(route["metric"])]
        node.run(command)
    return holder


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def tx_checksum_off(interface: str) -> None:
    """`ethtool -K IFACE tx off`: the kernel computes TCP/UDP checksums before sending on it."""
    value = (ctypes.c_uint32 * 2)(ETHTOOL_STXCSUM, 0)
    request = struct.pack("16sP", interface.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)


# ---- the datapath of bridges LXD creates -------------------------------------------------------------


_FIND_KERNEL_BRIDGES = ("ovs-vsctl", "--timeout=10", "--bare", "--columns=name", "find", "Bridge")
_NOT_NETDEV = "datapath_type!=netdev"


def _netdev_command(bridges: Sequence[str]) -> list[str]:
    command = ["ovs-vsctl", "--timeout=10"]
    for bridge in bridges:
        command += ["--", "set", "Bridge", bridge, "datapath_type=netdev"]
    return command


def set_netdev_datapath(node: NodeRuntime) -> list[str]:
    """Switch every OVS bridge of the node to the userspace datapath; returns the bridges changed.

    Call after creating an OVN network: LXD makes its uplink bridge (lxdovnN) with the kernel datapath,
    which this OVS cannot open.
    """
    bridges = node.run([*_FIND_KERNEL_BRIDGES, _NOT_NETDEV], timeout=20).stdout.split()
    if bridges:
        node.run(_netdev_command(bridges), timeout=20)
    return bridges


# ---- down ------------------------------------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_ovn(node: NodeRuntime, pid_files: Sequence[str]) -> None:
    """Stop a node's OVS/OVN daemons in order; does nothing for a node that never ran them.

    ovn-controller goes first, then every bridge is deleted while ovs-vswitchd still runs, then the
    rest. Pids come from the recorded pid files, so this also works when the holder is gone.
    """
    recorded = set(pid_files)
    ordered = [(daemon, path) for daemon in DAEMONS if str(path := _host_path(node, daemon)) in recorded]
    if not ordered:
        return
    pids = {daemon: _read_pid(path) for daemon, path in ordered}
    controller = pids.get(DAEMONS[0])
    if controller is not None:
        netns.stop_pids([controller], grace=5.0)
    holder_alive = node.holder_pid is not None and netns.alive(node.holder_pid)
    vswitchd = pids.get(DAEMONS[4])
    if holder_alive and vswitchd is not None and netns.alive(vswitchd):
        with contextlib.suppress(LabError):
            bridges = node.run(
                ["ovs-vsctl", "--timeout=5", "list-br"], check=False, timeout=10
            ).stdout.split()
            if bridges:
                command = ["ovs-vsctl", "--timeout=10"]
                for bridge in bridges:
                    command += ["--", "--if-exists", "del-br", bridge]
                node.run(command, check=False, timeout=20)
    for daemon, _ in ordered:  # one by one, in order (ovn-controller is already gone)
        pid = pids[daemon]
        if pid is not None:
            netns.stop_pids([pid], grace=5.0)


USAGE = """usage, inside a lab node:
  python -m fabric_lab.ovn_node netdev
      switch LXD's OVS bridges to the netdev datapath (after creating an OVN network)
  python -m fabric_lab.ovn_node tx-checksum-off IFACE...
      compute TCP/UDP checksums before sending on IFACE, like `ethtool -K IFACE tx off`"""


def main(argv: Sequence[str]) -> int:
    """Inside a node: `netdev` switches LXD's bridges to netdev; `tx-checksum-off IFACE...`."""
    if argv[:1] == ["tx-checksum-off"] and len(argv) > 1:
        try:
            for interface in argv[1:]:
                tx_checksum_off(interface)
        except OSError as exc:
            print(f"ovn_node tx-checksum-off: {exc}", file=sys.stderr)
            return 1
        return 0
    if list(argv) != ["netdev"]:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        found = subprocess.run(
            [*_FIND_KERNEL_BRIDGES, _NOT_NETDEV], capture_output=True, text=True, check=True, timeout=20
        )
        bridges = found.stdout.split()
        if bridges:
            subprocess.run(_netdev_command(bridges), check=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"ovn_node netdev: {exc}", file=sys.stderr)
        return 1
    print(" ".join(bridges) if bridges else "every bridge already uses the netdev datapath")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
