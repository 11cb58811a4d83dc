"""OVS and OVN inside a lab node (label `fabric.ovn: "true"`), every file and daemon node-private.

Each OVN node is a one-chassis OVN deployment of its own: ovsdb-server + ovs-vswitchd with the
userspace (netdev) datapath, the OVN northbound and southbound ovsdb-servers, ovn-northd and
ovn-controller. The chassis name (system-id) and hostname are the node name. The OVS/OVN config,
database and log directories are bound to node-private directories, like FRR's /etc/frr; the daemons'
sockets and pid files are under /run, which is node-private anyway.

The kernel datapath is never used (`ovs-vswitchd --disable-system`): ovn-controller makes br-int with
`ovn-bridge-datapath-type=netdev`, but LXD creates the OVS bridge of an OVN network's uplink
(`lxdovnN`) with the default (kernel) type, and neither OVS nor LXD has a setting for the default.
After creating an OVN network, switch such bridges to netdev with `set_netdev_datapath(node)` from
Python, or inside the node: `fabric-lab exec NODE -- python -m fabricd.lab.ovn_node netdev`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fabricd.lab import netns
from fabricd.lab.lxd_preseed import DEFAULT_PRESEED
from fabricd.lab.node import LabError, NodeRuntime
from fabricd.lab.topology_model import FALSE_WORDS, TRUE_WORDS, Node

OVN_LABEL = "fabric.ovn"
INTEGRATION_BRIDGE = "br-int"
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


def runs_ovn(node: Node) -> bool:
    value = node.labels.get(OVN_LABEL, "").strip().lower()
    if value and value not in TRUE_WORDS + FALSE_WORDS:
        raise LabError(
            f"node {node.name}: label {OVN_LABEL} must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, "
            f"not {value!r}"
        )
    return value in TRUE_WORDS


def ovn_binds(node: NodeRuntime) -> list[tuple[str, str, bool]]:
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
    return binds


def ovn_pid_files(node: NodeRuntime) -> list[str]:
    """Where the daemons will write their pids, as seen from the machine; record these before starting."""
    return [str(_host_path(node, pid_file)) for pid_file in DAEMONS]


def _host_path(node: NodeRuntime, path_in_node: str) -> Path:
    return node.run_dir / Path(path_in_node).relative_to("/run")


def _start_daemon(node: NodeRuntime, command: list[str], pid_file: str, log_file: str) -> None:
    """Run a daemon that detaches once it serves, so the next one can rely on it."""
    node.run([*command, f"--pidfile={pid_file}", "--detach", "--no-chdir", f"--log-file={log_file}"])


def start_ovn(node: NodeRuntime, timeout: float = 30) -> None:
    """Start OVS (userspace datapath), OVN central and ovn-controller in the node, in dependency order."""
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
         f"external-ids:ovn-remote=unix:{SB_SOCKET}", "external-ids:ovn-encap-type=geneve",
         "external-ids:ovn-encap-ip=127.0.0.1", f"external-ids:ovn-bridge={INTEGRATION_BRIDGE}",
         "external-ids:ovn-bridge-datapath-type=netdev"]
    )  # fmt: skip
    switch = ["ovs-vswitchd", f"unix:{OVS_SOCKET}", "--disable-system"]
    _start_daemon(node, switch, vswitchd, "/var/log/openvswitch/ovs-vswitchd.log")
    for db, pid_file in (("nb", nb_db), ("sb", sb_db)):
        db_file = f"/var/lib/ovn/ovn{db}_db.db"
        node.run(["ovsdb-tool", "create", db_file, f"/usr/share/ovn/ovn-{db}.ovsschema"])
        server = ["ovsdb-server", db_file, f"--remote=punix:/run/ovn/ovn{db}_db.sock"]
        server.append(f"--unixctl=/run/ovn/ovn{db}_db.ctl")
        _start_daemon(node, server, pid_file, f"/var/log/ovn/ovsdb-server-{db}.log")
    node.run(["ovn-nbctl", f"--db=unix:{NB_SOCKET}", "--no-wait", "init"])
    node.run(["ovn-sbctl", f"--db=unix:{SB_SOCKET}", "init"])
    central = ["ovn-northd", f"--ovnnb-db=unix:{NB_SOCKET}", f"--ovnsb-db=unix:{SB_SOCKET}"]
    _start_daemon(node, central, northd, "/var/log/ovn/ovn-northd.log")
    _start_daemon(
        node, ["ovn-controller", f"unix:{OVS_SOCKET}"], controller, "/var/log/ovn/ovn-controller.log"
    )
    wait_ovn(node, timeout)


def wait_ovn(node: NodeRuntime, timeout: float = 30) -> None:
    """Until the chassis is in the southbound database and br-int exists with the netdev datapath."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chassis = node.run(
            ["ovn-sbctl", f"--db=unix:{SB_SOCKET}", "--bare", "--columns=hostname", "find", "Chassis",
             f"name={node.name}"],
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


def with_lxd_ovn_config(preseed_text: str | None) -> str | None:
    """The preseed with LXD pointed at the node's OVN (keys the preseed sets itself are kept).

    Text that is not a mapping is returned as it is, for the LXD preseed check to report.
    """
    preseed: Any = yaml.safe_load(preseed_text) if preseed_text is not None else dict(DEFAULT_PRESEED)
    if not isinstance(preseed, dict):
        return preseed_text
    config = dict(preseed.get("config") or {})
    config.setdefault("network.ovn.northbound_connection", f"unix:{NB_SOCKET}")
    config.setdefault("network.ovn.integration_bridge", INTEGRATION_BRIDGE)
    preseed["config"] = config
    return yaml.safe_dump(preseed, sort_keys=False)


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


def main(argv: Sequence[str]) -> int:
    """Inside a node: `python -m fabricd.lab.ovn_node netdev` switches LXD's bridges to netdev."""
    if list(argv) != ["netdev"]:
        print("usage: python -m fabricd.lab.ovn_node netdev  (run inside an OVN lab node)", file=sys.stderr)
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
