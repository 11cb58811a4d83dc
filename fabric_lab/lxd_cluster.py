"""An LXD cluster across lab nodes: the first member bootstraps it, the others join with a token.

Labels, on every member (a node with fabric.lxd: "true"):
  fabric.lxd.cluster: NAME           nodes with the same NAME form one cluster; member name = node name
  fabric.lxd.cluster.address: ADDR   the member's underlay address; its LXD listens on ADDR:8443
                                     (core.https_address, also the cluster address)

The first member in file order bootstraps. Its preseed (fabric.lxd.preseed, or the default one) gets
`config.core.https_address: ADDR:8443` and `cluster: {server_name: NODE, enabled: true}`; the
networks, storage pools and profiles in it become the cluster's, and their member-specific keys (a
physical network's `parent`, `bridge.external_interfaces`, a pool's `source`) that member's.

Every later member joins. Its preseed may only give its own values of member-specific keys, as
`cluster.member_config` (a list of {entity, name, key, value}); cluster-wide `config` keys in it must
equal the cluster's. The runner asks the first member for the keys a new member must give
(GET /1.0/cluster), a join token (`lxc cluster add NODE`) and the cluster certificate, and runs
`lxd init --preseed` in the joining node with server_name, server_address, cluster_address,
cluster_certificate, cluster_token and member_config. Keys the cluster asks for that the preseed
leaves out keep the cluster's suggestion for storage pools (a dir pool's default source) and are an
error for networks (an uplink's parent has no sensible default).

Members talk HTTPS to each other, and `lxd init` fetches the cluster certificate: the closed proxy
every node process has (fabric_lab.node.CLOSED_PROXY) would catch that, so each member's no_proxy
also lists the cluster's member addresses, and nothing else.

Instances of all members share the machine's cgroup tree: LXD keeps their names unique cluster-wide.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fabric_lab import netns
from fabric_lab.labels import underlay_address
from fabric_lab.lxd_node import respawn_lxd, start_lxd
from fabric_lab.lxd_preseed import DEFAULT_PRESEED, load_preseed
from fabric_lab.node import LabError, NodeRuntime
from fabric_lab.topology_model import NAME_PATTERN, Node, Topology

CLUSTER_LABEL = "fabric.lxd.cluster"
ADDRESS_LABEL = "fabric.lxd.cluster.address"
PORT = 8443
JOIN_TIMEOUT = 60.0
_LOCAL_NO_PROXY = "127.0.0.1,localhost,::1"


@dataclass(frozen=True, slots=True)
class Member:
    cluster: str
    name: str  # node name = LXD member name
    address: str  # ADDR:8443, brackets around IPv6
    host: str  # the bare address, for no_proxy
    bootstrap: str  # the node that bootstraps the cluster
    bootstrap_address: str  # its ADDR:8443
    hosts: tuple[str, ...]  # every member's bare address

    @property
    def bootstraps(self) -> bool:
        return self.name == self.bootstrap


def members(topology: Topology) -> dict[str, Member]:
    """Every cluster member of the topology by node name; LabError for labels that do not fit."""
    found: dict[str, list[tuple[Node, str]]] = {}
    for node in topology.nodes:
        name = node.labels.get(CLUSTER_LABEL, "").strip()
        if not name:
            if ADDRESS_LABEL in node.labels:
                raise LabError(f"node {node.name}: label {ADDRESS_LABEL} needs label {CLUSTER_LABEL}")
            continue
        if not NAME_PATTERN.match(name):
            raise LabError(f"node {node.name}: label {CLUSTER_LABEL} {name!r} is not a name")
        if not node.runs_lxd:
            raise LabError(f'node {node.name}: label {CLUSTER_LABEL} needs fabric.lxd: "true"')
        found.setdefault(name, []).append((node, _host(node)))
    result: dict[str, Member] = {}
    for cluster, nodes in found.items():
        hosts = tuple(host for _, host in nodes)
        if len(set(hosts)) != len(hosts):
            raise LabError(f"cluster {cluster}: two members share an address ({', '.join(hosts)})")
        first = nodes[0][0].name
        for node, host in nodes:
            result[node.name] = Member(
                cluster, node.name, _listen(host), host, first, _listen(hosts[0]), hosts
            )
    return result


def _listen(host: str) -> str:
    return f"[{host}]:{PORT}" if ":" in host else f"{host}:{PORT}"


def _host(node: Node) -> str:
    return str(underlay_address(node, ADDRESS_LABEL, "the member's IP address"))


def node_env(topology: Topology, node: Node) -> dict[str, str]:
    """Environment a member's processes need on top of the node's: no_proxy for the other members."""
    member = members(topology).get(node.name)
    if member is None:
        return {}
    base = node.env.get("no_proxy") or node.env.get("NO_PROXY") or _LOCAL_NO_PROXY
    no_proxy = ",".join([base, *member.hosts])
    return {"no_proxy": no_proxy, "NO_PROXY": no_proxy}


def is_member(topology: Topology, node: Node) -> bool:
    return node.name in members(topology)


def joins(topology: Topology, node: Node) -> bool:
    """A member that joins an existing cluster: its LXD server config is the cluster's."""
    member = members(topology).get(node.name)
    return member is not None and not member.bootstraps


# ---- preseeds --------------------------------------------------------------------------------------


def _parsed(text: str | None, source: str) -> dict[str, Any]:
    preseed: Any = yaml.safe_load(text) if text is not None else dict(DEFAULT_PRESEED)
    if preseed is None:
        preseed = {}
    if not isinstance(preseed, dict):
        raise LabError(f"{source}: expected a mapping at the top level")
    return preseed


def bootstrap_preseed(text: str | None, source: str, member: Member) -> str:
    """The first member's preseed with its listen address and the cluster section filled in."""
    preseed = _parsed(text, source)
    config = dict(preseed.get("config") or {})
    https = str(config.setdefault("core.https_address", member.address))
    if https != member.address:
        raise LabError(
            f"{source}: config.core.https_address {https} is not the member's {member.address} "
            f"(label {ADDRESS_LABEL}); leave it out"
        )
    cluster = preseed.get("cluster") or {}
    if not isinstance(cluster, dict) or set(cluster) - {"server_name", "enabled"}:
        raise LabError(f"{source}: the bootstrapping member's cluster section may only hold server_name")
    if cluster.get("server_name", member.name) != member.name:
        raise LabError(f"{source}: cluster.server_name must be the node name {member.name}")
    preseed["config"] = config
    preseed["cluster"] = {"server_name": member.name, "enabled": True}
    return yaml.safe_dump(preseed, sort_keys=False)


Entry = tuple[str, str, str]  # entity, name, key


def _entries(value: object, where: str) -> dict[Entry, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise LabError(f"{where}: expected a list")
    entries: dict[Entry, str] = {}
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(k), str) for k in ("entity", "name", "key")
        ):
            raise LabError(f"{where}[{index}]: expected a mapping with entity, name, key and value")
        entries[(item["entity"], item["name"], item["key"])] = str(item.get("value") or "")
    return entries


def join_preseed(
    text: str | None,
    source: str,
    member: Member,
    cluster: Mapping[str, Any],
    certificate: str,
) -> dict[str, Any]:
    """The joining member's preseed, but for the token (taken only once the preseed is good).

    `cluster` is the first member's GET /1.0/cluster, with its GET /1.0 config under "config".
    """
    preseed = _parsed(text, source) if text is not None else {}
    extra = set(preseed) - {"cluster", "config"}
    if extra:
        raise LabError(
            f"{source}: a joining member takes {', '.join(sorted(extra))} from the cluster; its preseed "
            "may only hold cluster.member_config (and config keys equal to the cluster's)"
        )
    cluster_config = cluster.get("config") or {}
    for key, value in (preseed.get("config") or {}).items():
        if key == "core.https_address":
            if str(value) != member.address:
                raise LabError(f"{source}: config.core.https_address must be {member.address}, not {value}")
        elif str(cluster_config.get(key)) != str(value):
            raise LabError(
                f"{source}: config.{key} is cluster-wide: the cluster has {cluster_config.get(key)!r}, "
                f"this member's preseed {value!r}"
            )
    own = preseed.get("cluster") or {}
    if not isinstance(own, dict) or set(own) - {"member_config"}:
        raise LabError(f"{source}: a joining member's cluster section may only hold member_config")
    given = _entries(own.get("member_config"), f"{source}: cluster.member_config")
    wanted = _entries(cluster.get("member_config"), "GET /1.0/cluster member_config")
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        shown = ", ".join("/".join(e) for e in unknown)
        raise LabError(f"{source}: cluster.member_config: the cluster asks for no {shown}")
    missing = sorted(e for e in wanted if e not in given and e[0] != "storage-pool")
    if missing:
        shown = ", ".join("/".join(e) for e in missing)
        raise LabError(f"{source}: cluster.member_config must give this member's {shown}")
    member_config = [
        {"entity": entity, "name": name, "key": key, "value": given.get((entity, name, key), value)}
        for (entity, name, key), value in wanted.items()
    ]
    return {
        "cluster": {
            "server_name": member.name,
            "enabled": True,
            "server_address": member.address,
            "cluster_address": member.bootstrap_address,
            "cluster_certificate": certificate,
            "member_config": member_config,
        }
    }


# ---- starting members ------------------------------------------------------------------------------


def _query(node: NodeRuntime, path: str) -> Any:
    return json.loads(node.run(["lxc", "query", path], timeout=60).stdout)


def start_member(
    topology: Topology,
    node: Node,
    runtimes: Mapping[str, NodeRuntime],
    preseed_text: str | None,
    preseed_source: str,
    image: Path,
) -> int:
    """Start the node's LXD as a cluster member: bootstrap (first member) or join; returns its pid.

    Members start in file order, so the bootstrapping member is up before any other joins.
    """
    member = members(topology)[node.name]
    runtime = runtimes[node.name]
    if member.bootstraps:
        text = bootstrap_preseed(preseed_text, preseed_source, member)
        return start_lxd(runtime, text, preseed_source, image)
    first = runtimes[member.bootstrap]
    server = _query(first, "/1.0")
    info = {**_query(first, "/1.0/cluster"), "config": server.get("config") or {}}
    if not info.get("enabled"):
        raise LabError(f"node {node.name}: {member.bootstrap} has not bootstrapped cluster {member.cluster}")
    certificate = str((server.get("environment") or {}).get("certificate") or "")
    preseed = join_preseed(preseed_text, preseed_source, member, info, certificate)
    try:
        checked = load_preseed(yaml.safe_dump(preseed), preseed_source)
    except ValueError as exc:
        raise LabError(f"node {node.name}: refusing LXD join preseed:\n{exc}") from exc
    checked.pop("config", None)  # load_preseed pins image updates: cluster-wide, the cluster has it
    added = first.run(["lxc", "cluster", "add", "--quiet", member.name], timeout=60).stdout.split()
    if not added:
        raise LabError(f"node {member.bootstrap}: `lxc cluster add {member.name}` printed no token")
    checked["cluster"]["cluster_token"] = added[-1]
    pid = respawn_lxd(runtime)
    runtime.run(["lxd", "init", "--preseed"], input_text=yaml.safe_dump(checked), timeout=180)
    _wait_online(first, member)
    # LXD 5.0.2 keeps the server config it started with after joining (`lxc config get
    # network.ovn.northbound_connection` is empty on the new member, which then runs ovn-nbctl on the
    # default unix socket): a restart loads the cluster's.
    runtime.run(["lxd", "shutdown", "--timeout=30"], timeout=40)
    _wait_gone(runtime, pid)
    pid = respawn_lxd(runtime)
    _check_config(runtime, member, server.get("config") or {})
    _wait_online(first, member)
    return pid


# Server keys each member has for itself; every other key is the cluster's.
MEMBER_KEYS = frozenset({
    "cluster.https_address", "core.bgp_address", "core.bgp_routerid", "core.debug_address",
    "core.dns_address", "core.https_address", "core.metrics_address", "core.storage_buckets_address",
    "storage.backups_volume", "storage.images_volume",
})  # fmt: skip


def _check_config(runtime: NodeRuntime, member: Member, cluster_config: Mapping[str, Any]) -> None:
    own = _query(runtime, "/1.0").get("config") or {}
    wrong = sorted(
        k
        for k in set(cluster_config) | set(own)
        if k not in MEMBER_KEYS and own.get(k) != cluster_config.get(k)
    )
    if wrong:
        shown = ", ".join(wrong)
        raise LabError(
            f"node {member.name}: after joining, its server config differs from the cluster's in {shown}"
        )


def _wait_online(first: NodeRuntime, member: Member) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    status = ""
    while time.monotonic() < deadline:
        result = first.run(["lxc", "query", f"/1.0/cluster/members/{member.name}"], check=False, timeout=30)
        if result.returncode == 0:
            status = str(json.loads(result.stdout).get("status"))
            if status == "Online":
                return
        time.sleep(0.5)
    raise LabError(
        f"node {member.name}: joined cluster {member.cluster} but is {status or 'unknown'}, not Online"
    )


def _wait_gone(runtime: NodeRuntime, pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while netns.alive(pid):
        if time.monotonic() > deadline:
            raise LabError(f"node {runtime.name}: LXD (pid {pid}) did not stop after `lxd shutdown`")
        time.sleep(0.1)
