"""`fabric-lab up/down/exec`: build a containerlab topology in network namespaces, without Docker.

Every node becomes a namespace named fl-<lab>-<node>, held by one holder process; links are veth
pairs created directly between node namespaces, so no lab interface ever exists in the machine's
own namespace and no node has a path out. Everything made is recorded in <state>/state.json as it
is made, so `down` can undo a half-finished `up`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from fabric_lab import lxd_cluster, netns, ovn_node
from fabric_lab.image import ImageBuildError, ensure_image
from fabric_lab.lxd_node import lxd_binds, lxd_socket, remove_pivot_cgroups, start_lxd, stop_lxd
from fabric_lab.node import AGENT_ANSWERS, LabError, NodeRuntime, start_holder, write_node_files
from fabric_lab.routers import bird_binds, frr_binds, start_bird, start_frr, wait_bird, wait_frr
from fabric_lab.state import LabState, NodeState, state_file
from fabric_lab.topology import Node, Topology, load_topology, namespace_name
from fabricd.log import get_logger

log = get_logger("fabric-lab")

DEFAULT_STATE_ROOT = Path(".lab")
DEFAULT_CACHE_DIR = DEFAULT_STATE_ROOT / ".cache"  # the busybox package and image, shared by all labs
PRESEED_LABEL = "fabric.lxd.preseed"
AGENT_READY_TIMEOUT = 30.0


def lab_state_dir(state_root: Path, lab_name: str) -> Path:
    return (state_root / lab_name).resolve()


def namespace_prefix(lab_name: str) -> str:
    return namespace_name(lab_name, "x")[:-1]


def _runtime(state_dir: Path, node: NodeState) -> NodeRuntime:
    runtime = NodeRuntime(
        name=node.name,
        netns_name=node.netns,
        directory=state_dir / "nodes" / node.name,
        logs=state_dir / "logs",
        holder_pid=node.holder_pid,
        env=dict(node.env),
    )
    return runtime


def _user_binds(node: Node, overlays: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """The topology's binds; targets under a node-private directory get a placeholder to mount on."""
    binds = []
    for bind in node.binds:
        if not bind.source.exists():
            raise LabError(f"node {node.name}: bind source {bind.source} does not exist")
        placeholder = None
        for source, target, _ in overlays:
            if bind.target == target or bind.target.startswith(target.rstrip("/") + "/"):
                placeholder = Path(source) / os.path.relpath(bind.target, target)
        if placeholder is not None:
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            if bind.source.is_dir():
                placeholder.mkdir(exist_ok=True)
            elif not placeholder.exists():
                placeholder.touch()
        elif not Path(bind.target).exists():
            raise LabError(
                f"node {node.name}: bind target {bind.target} does not exist on this machine; fabric-lab "
                "only creates targets under /run or a router's config directory"
            )
        binds.append((str(bind.source), bind.target, bind.read_only))
    return binds


def _kind_binds(node: Node, runtime: NodeRuntime) -> list[tuple[str, str, bool]]:
    binds: list[tuple[str, str, bool]] = []
    if node.router == "frr":
        binds += frr_binds(runtime)
    elif node.router == "bird":
        binds += bird_binds(runtime)
    if node.runs_lxd:
        binds += lxd_binds(runtime)
    if ovn_node.runs_ovn(node):
        binds += ovn_node.ovn_binds(runtime, ovn_node.ovn_plan(node))
    return binds


class Lab:
    def __init__(
        self, topology: Topology, state_root: Path = DEFAULT_STATE_ROOT, cache_dir: Path = DEFAULT_CACHE_DIR
    ) -> None:
        self.topology = topology
        self.state_dir = lab_state_dir(state_root, topology.name)
        self.cache_dir = cache_dir.resolve()

    @classmethod
    def from_file(cls, path: Path, state_root: Path = DEFAULT_STATE_ROOT) -> Lab:
        return cls(load_topology(path), state_root)

    @property
    def is_up(self) -> bool:
        return state_file(self.state_dir).exists()

    def state(self) -> LabState:
        return LabState.load(self.state_dir)

    def node(self, name: str) -> NodeRuntime:
        return node_runtime(self.state_dir, name)

    # ---- up ---------------------------------------------------------------------------------

    def up(self) -> LabState:
        if self.is_up:
            raise LabError(
                f"lab {self.topology.name} is already up (state in {self.state_dir}); "
                "run `fabric-lab down` first"
            )
        leftovers = netns.list_with_prefix(namespace_prefix(self.topology.name))
        if leftovers:
            raise LabError(
                f"namespaces of lab {self.topology.name} already exist ({', '.join(leftovers)}); "
                "run `fabric-lab down` first"
            )
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        state = LabState(self.topology.name, str(self.topology.source), str(self.state_dir))
        state.save()
        started = time.monotonic()
        try:
            runtimes = self._create_nodes(state)
            self._create_links()
            self._run_exec_lines(runtimes)
            self._start_routers(state, runtimes)
            self._start_ovn(state, runtimes)
            self._start_lxd(state, runtimes)
            self._start_agents(state, runtimes)
        except BaseException:
            log.error("lab up failed; tearing down what was made", lab=self.topology.name)
            self.down()
            raise
        log.info("lab up", lab=self.topology.name, seconds=round(time.monotonic() - started, 2))
        return state

    def _create_nodes(self, state: LabState) -> dict[str, NodeRuntime]:
        runtimes = {}
        for node in self.topology.nodes:
            ns_name = namespace_name(self.topology.name, node.name)
            node_state = NodeState(node.name, ns_name, env=dict(node.env))
            state.nodes[node.name] = node_state
            state.save()
            netns.create(ns_name)
            runtime = _runtime(self.state_dir, node_state)
            runtime.directory.mkdir(parents=True, exist_ok=True)
            write_node_files(runtime)
            runtime.env.update(lxd_cluster.node_env(self.topology, node))  # members reach each other
            kind_binds = _kind_binds(node, runtime)
            overlays = [(str(runtime.run_dir), "/run", False), *kind_binds]
            binds = kind_binds + _user_binds(node, overlays)
            node_state.env = dict(runtime.env)
            node_state.holder_pid = start_holder(runtime, binds)
            state.save()
            runtimes[node.name] = runtime
        return runtimes

    def _create_links(self) -> None:
        for link in self.topology.links:
            netns.add_veth(
                namespace_name(self.topology.name, link.a.node),
                link.a.interface,
                namespace_name(self.topology.name, link.b.node),
                link.b.interface,
                mtu=link.mtu,
            )

    def _run_exec_lines(self, runtimes: dict[str, NodeRuntime]) -> None:
        for node in self.topology.nodes:
            for line in node.exec:
                runtimes[node.name].run(shlex.split(line), timeout=60)

    def _start_routers(self, state: LabState, runtimes: dict[str, NodeRuntime]) -> None:
        for node in self.topology.nodes:
            runtime = runtimes[node.name]
            if node.router == "frr":
                state.nodes[node.name].pid_files += start_frr(runtime)
                state.save()
                wait_frr(runtime)
            elif node.router == "bird":
                state.nodes[node.name].pid_files += start_bird(runtime)
                state.save()
                wait_bird(runtime)

    def _start_ovn(self, state: LabState, runtimes: dict[str, NodeRuntime]) -> None:
        """OVS + OVN per `fabric.ovn` node (see ovn_node); pid files are recorded before anything starts."""
        for node, plan in ovn_node.start_order(self.topology.nodes):
            state.nodes[node.name].pid_files += ovn_node.ovn_pid_files(runtimes[node.name], plan)
            state.save()
            ovn_node.start_ovn(runtimes[node.name], plan)

    def _start_lxd(self, state: LabState, runtimes: dict[str, NodeRuntime]) -> None:
        lxd_nodes = [n for n in self.topology.nodes if n.runs_lxd]
        if not lxd_nodes:
            return
        try:
            image = ensure_image(self.cache_dir)
        except (ImageBuildError, OSError, subprocess.CalledProcessError) as exc:
            raise LabError(f"cannot build the lab's LXD image: {exc}") from exc
        for node in lxd_nodes:
            preseed_text, preseed_source = None, "default preseed"
            if PRESEED_LABEL in node.labels:
                preseed_path = self.topology.directory / node.labels[PRESEED_LABEL]
                preseed_text, preseed_source = preseed_path.read_text(), str(preseed_path)
            if ovn_node.runs_ovn(node) and not lxd_cluster.joins(self.topology, node):  # joiners: no config
                preseed_text = ovn_node.with_lxd_ovn_config(preseed_text, ovn_node.ovn_plan(node))
            node_state = state.nodes[node.name]
            node_state.lxd_socket = str(lxd_socket(runtimes[node.name]))
            state.save()
            if lxd_cluster.is_member(self.topology, node):  # bootstrap or join (see lxd_cluster)
                node_state.lxd_pid = lxd_cluster.start_member(
                    self.topology, node, runtimes, preseed_text, preseed_source, image
                )
            else:
                node_state.lxd_pid = start_lxd(runtimes[node.name], preseed_text, preseed_source, image)
            state.save()

    def _start_agents(self, state: LabState, runtimes: dict[str, NodeRuntime]) -> None:
        agents = [(n, n.agent_config) for n in self.topology.nodes if n.agent_config is not None]
        for node, config in agents:
            runtime = runtimes[node.name]
            runtime.run(["fabricd", "check-config", str(config)], timeout=30)
            pid = runtime.spawn(
                ["fabricd", "run", "--config", str(config), "--log-format", "json"], "fabricd"
            )
            state.nodes[node.name].agent_pid = pid
            state.save()
        for node, _ in agents:
            self._wait_agent(runtimes[node.name], state.nodes[node.name])

    def _wait_agent(self, runtime: NodeRuntime, node_state: NodeState) -> None:
        deadline = time.monotonic() + AGENT_READY_TIMEOUT
        while time.monotonic() < deadline:
            if node_state.agent_pid is not None and not netns.alive(node_state.agent_pid):
                raise LabError(f"node {runtime.name}: fabricd exited; see {runtime.log_file('fabricd')}")
            answered = runtime.run(["fabricctl", "status", "--json"], check=False, timeout=10)
            if answered.returncode in AGENT_ANSWERS:
                return
            time.sleep(0.2)
        raise LabError(f"node {runtime.name}: fabricd did not answer within {AGENT_READY_TIMEOUT:g}s")

    # ---- down -------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop everything the lab started, by recorded PID and by namespace; safe to run twice."""
        removed: list[str] = []
        state = self.state() if self.is_up else None
        if state is not None:
            self._stop_recorded(state)
        for ns_name in netns.list_with_prefix(namespace_prefix(self.topology.name)):
            netns.stop_pids(netns.pids_in(ns_name), grace=3.0)
            netns.remove(ns_name)
            removed.append(ns_name)
        if state is not None:
            holders = [n.holder_pid for n in state.nodes.values() if n.holder_pid]
            netns.stop_pids(holders, grace=2.0)
            if any(n.lxd_socket for n in state.nodes.values()):
                remove_pivot_cgroups()
        shutil.rmtree(self.state_dir / "nodes", ignore_errors=True)
        state_file(self.state_dir).unlink(missing_ok=True)
        log.info("lab down", lab=self.topology.name, namespaces=removed)
        return removed

    def _stop_recorded(self, state: LabState) -> None:
        nodes = list(state.nodes.values())
        netns.stop_pids([n.agent_pid for n in nodes if n.agent_pid], grace=10.0)
        for node in reversed(nodes):  # cluster members that joined go before the one they joined
            if node.lxd_socket and node.holder_pid and netns.alive(node.holder_pid):
                try:
                    stop_lxd(_runtime(self.state_dir, node), node.lxd_pid)
                except LabError as exc:
                    log.warning("lxd shutdown failed", node=node.name, reason=str(exc))
        for node in nodes:  # after LXD, which still removes its ports on the way down
            ovn_node.stop_ovn(_runtime(self.state_dir, node), node.pid_files)
        pids: list[int] = []
        for node in nodes:
            pids += node.pids
            pids += [n for n in (node.lxd_pid,) if n]
            for pid_file in node.pid_files:
                pids += _read_pid(Path(pid_file))
        netns.stop_pids(pids, grace=5.0)


def _read_pid(path: Path) -> list[int]:
    try:
        return [int(path.read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


def node_runtime(state_dir: Path, name: str) -> NodeRuntime:
    """A node of the running lab whose state lives in state_dir."""
    if not state_file(state_dir).exists():
        raise LabError(f"no running lab in {state_dir}")
    state = LabState.load(state_dir)
    if name not in state.nodes:
        raise LabError(f"lab {state.name} has no node {name!r}; nodes: {', '.join(state.nodes)}")
    return _runtime(state_dir, state.nodes[name])


def find_lab_with_node(state_root: Path, node: str) -> Path:
    """The state directory of the one running lab under state_root that has this node."""
    matches = []
    if state_root.is_dir():
        for candidate in sorted(state_root.glob("*/state.json")):
            if node in LabState.load(candidate.parent).nodes:
                matches.append(candidate.parent)
    if not matches:
        raise LabError(f"no running lab under {state_root} has a node {node!r} (is it up? try --lab FILE)")
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        raise LabError(f"several running labs have a node {node!r} ({names}); choose one with --lab FILE")
    return matches[0]
