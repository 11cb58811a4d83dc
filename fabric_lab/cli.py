"""`fabric-lab`: run containerlab topology files in network namespaces on a machine without Docker."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fabric_lab.node import LabError
from fabric_lab.topology import TopologyError, check_containerlab

DESCRIPTION = """\
fabric-lab builds a containerlab topology (labs/*.clab.yml) out of Linux network namespaces:
every node is a namespace fl-<lab>-<node> with its own hostname, /etc/hosts, resolv.conf and /run;
links are veth pairs named like the endpoints; `exec` lines run after the links are up.
Nodes whose image is frrouting/frr (or kind frr) run FRR with their bound frr.conf and daemons;
images naming bird run BIRD 2. Labels start extras inside a node:
  fabric.lxd: "true"            a real LXD daemon with a locally built busybox image
  fabric.lxd.preseed: FILE      its preseed (explicit addresses only; checked)
  fabric.agent: CONFIG          fabricd with that config
  fabric.lxd.cluster: NAME      an LXD cluster member (member name = node name); every node with the
                                same NAME joins one cluster; the first in file order bootstraps it with
                                its preseed (+ core.https_address, cluster section), the others join with
                                a token; a joining member's preseed holds only cluster.member_config
  fabric.lxd.cluster.address: IP  the member's underlay address; LXD listens on IP:8443 (required)
  fabric.ovn: "true"            OVS (userspace datapath) + OVN central + ovn-controller, all state
                                node-private; chassis = node name; LXD is pointed at it (with fabric.lxd).
                                LXD makes an OVN network's uplink bridge with the kernel datapath: after
                                `lxc network create ... --type=ovn`, run inside the node
                                `python -m fabric_lab.ovn_node netdev` to switch it to netdev
  fabric.ovn: central           one OVN for several nodes: like "true", but NB/SB also listen on
                                tcp:ADDRESS:6641/6642 and LXD uses tcp:ADDRESS:6641
  fabric.ovn: chassis           OVS + ovn-controller only, connected to the central's SB database
  fabric.ovn.address: IP        (central, chassis) the node's underlay address: tunnel endpoint, and
                                the central's listen address; the interface holding it moves into the
                                OVS bridge br-phy (userspace tunnels must leave through OVS), so the
                                node at its other end needs
                                `python -m fabric_lab.ovn_node tx-checksum-off IFACE` in its exec lines
  fabric.ovn.central: IP        (chassis) the central's address
  fabric.ovn.encap: geneve      tunnel type between chassis: geneve (default) or vxlan

Lab state (PIDs, logs, LXD storage) lives in --state-dir/<lab name> (default ./.lab/<lab name>).
Needs root. No node has a route out of the machine.

examples:
  fabric-lab up labs/basic.clab.yml
  fabric-lab exec r1 -- vtysh -c 'show bgp summary'
  fabric-lab exec h1 -- fabricctl status
  fabric-lab exec h1 -- python -m fabric_lab.ovn_node netdev   (ovn-bgp lab, after an OVN network)
  fabric-lab exec m1 -- lxc cluster list                        (ovn-cluster lab)
  fabric-lab down labs/basic.clab.yml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabric-lab", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".lab"), help="where lab state lives (default ./.lab)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        help="build the topology",
        description="Build the topology; on failure everything made so far is torn down again.",
    )
    up.add_argument("file", type=Path)
    down = commands.add_parser("down", help="remove everything `up` made (safe to run twice)")
    down.add_argument("file", type=Path)
    check = commands.add_parser("check", help="check a topology file against containerlab's rules")
    check.add_argument("file", type=Path, nargs="+")
    run = commands.add_parser(
        "exec",
        help="run a command inside a node",
        description="Run CMD inside NODE's namespaces, for example\n"
        "`fabric-lab exec r1 -- vtysh -c 'show bgp summary'`.",
    )
    run.add_argument("--lab", type=Path, help="topology file (default: the one running lab with NODE)")
    run.add_argument("node")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("fabric-lab needs root to make network namespaces")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fabricd.log import configure_logging

    configure_logging("info", "console")
    try:
        if args.command == "check":
            return _check(args.file)
        _require_root()
        from fabric_lab.runner import Lab, find_lab_with_node, lab_state_dir, node_runtime
        from fabric_lab.topology import load_topology

        if args.command == "up":
            lab = Lab.from_file(args.file, args.state_dir)
            lab.up()
            print(f"lab {lab.topology.name} is up; nodes: {', '.join(n.name for n in lab.topology.nodes)}")
        elif args.command == "down":
            removed = Lab.from_file(args.file, args.state_dir).down()
            print(f"removed {len(removed)} namespaces" if removed else "nothing to remove")
        else:
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                raise LabError("exec needs a command after --")
            if args.lab is not None:
                state_dir = lab_state_dir(args.state_dir, load_topology(args.lab).name)
            else:
                state_dir = find_lab_with_node(args.state_dir, args.node)
            node = node_runtime(state_dir, args.node)
            argv_in_node = node.argv(cmd)
            os.execvpe(argv_in_node[0], argv_in_node, node.base_env())  # noqa: S606 (argv, no shell)
    except (LabError, TopologyError, OSError) as exc:
        print(f"fabric-lab: {exc}", file=sys.stderr)
        return 1
    return 0


def _check(files: Sequence[Path]) -> int:
    failed = False
    for path in files:
        problems = check_containerlab(path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"{path}: ok")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
