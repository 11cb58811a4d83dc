"""Reading LXD into records: a full snapshot, or one instance or network after an event.

Every object is parsed on its own; a malformed one becomes a RefusedObject and the rest is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from fabricd.config.model import ALL_PROJECTS
from fabricd.lxd.api import LXDApi, LXDRequestFailed
from fabricd.lxd.booleans import lxd_bool
from fabricd.lxd.parse import (
    RecordError,
    object_name,
    ovn_chassis_of,
    parse_instance,
    parse_listener,
    parse_member,
    parse_network,
)
from fabricd.lxd.records import (
    STANDALONE,
    InstanceRecord,
    ListenerKind,
    ListenerRecord,
    LXDSnapshot,
    MemberRecord,
    NetworkRecord,
    RefusedObject,
)

_T = TypeVar("_T")
# The network types LXD has each kind of listener on.
_LISTENER_NETWORK_TYPES: dict[ListenerKind, tuple[str, ...]] = {
    "forward": ("bridge", "ovn"),
    "load-balancer": ("ovn",),
}


@dataclass
class _Refusals:
    items: list[RefusedObject]

    def parse(self, kind: str, project: str, raw: Any, parse: Callable[[Any], _T]) -> _T | None:
        try:
            if not isinstance(raw, Mapping):
                raise RecordError(f"expected an object, got {type(raw).__name__}")
            return parse(raw)
        except RecordError as exc:
            self.items.append(RefusedObject(kind, project, object_name(raw), str(exc)))
            return None


@dataclass(frozen=True, slots=True)
class NetworkBundle:
    """A network with the objects hanging off it, re-read together after a network event."""

    network: NetworkRecord
    forwards: tuple[ListenerRecord, ...]
    load_balancers: tuple[ListenerRecord, ...]


def _list(api: LXDApi, path: str, **params: str | int) -> list[Any]:
    result = api.get(path, **params)
    return result if isinstance(result, list) else []


def _optional_list(api: LXDApi, path: str, **params: str | int) -> list[Any]:
    """A collection older LXD servers lack (load balancers arrived after 5.0): 404 means none."""
    try:
        return _list(api, path, **params)
    except LXDRequestFailed as exc:
        if exc.status == 404:
            return []
        raise


def network_projects(api: LXDApi, wanted: str) -> list[str]:
    """Projects that own networks: those with features.networks, plus default."""
    projects = _list(api, "/projects", recursion=1)
    names = []
    for project in projects:
        if not isinstance(project, Mapping) or not isinstance(project.get("name"), str):
            continue
        if wanted not in (ALL_PROJECTS, project["name"]) and project["name"] != "default":
            continue
        config = project.get("config")
        own_networks = isinstance(config, Mapping) and lxd_bool(config.get("features.networks")) is True
        if project["name"] == "default" or own_networks:
            names.append(project["name"])
    return sorted(names)


def read_network_bundle(api: LXDApi, project: str, raw: Any, refused: _Refusals) -> NetworkBundle | None:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    chassis = None
    if isinstance(raw, Mapping) and raw.get("type") == "ovn" and isinstance(name, str) and name:
        try:
            chassis = ovn_chassis_of(api.get(f"/networks/{name}/state", project=project))
        except LXDRequestFailed:
            chassis = None  # ovn-controller down: LXD answers 500; the planner withholds with a reason
    network = refused.parse("network", project, raw, lambda r: parse_network(r, project, chassis))
    if network is None:
        return None
    found: dict[ListenerKind, list[ListenerRecord]] = {"forward": [], "load-balancer": []}
    for kind, records in found.items():
        if not network.managed or network.type not in _LISTENER_NETWORK_TYPES[kind]:
            continue
        parse = partial(parse_listener, kind=kind, project=project, network=network.name)
        for item in _optional_list(api, f"/networks/{network.name}/{kind}s", recursion=1, project=project):
            parsed = refused.parse(kind, project, item, parse)
            if parsed is not None:
                records.append(parsed)
    return NetworkBundle(network, tuple(found["forward"]), tuple(found["load-balancer"]))


def list_network_keys(api: LXDApi, project: str) -> set[tuple[str, str]]:
    """(project, name) of every network, from the cheap non-recursive listing."""
    keys = set()
    for network_project in network_projects(api, project):
        for url in _list(api, "/networks", project=network_project):
            name = unquote(urlparse(url).path.rsplit("/", 1)[-1]) if isinstance(url, str) else ""
            if name:
                keys.add((network_project, name))
    return keys


def read_snapshot(api: LXDApi, project: str) -> LXDSnapshot:
    server = api.get("")
    environment = server.get("environment") if isinstance(server, Mapping) else None
    environment = environment if isinstance(environment, Mapping) else {}
    clustered = bool(environment.get("server_clustered"))
    member = str(environment.get("server_name") or STANDALONE) if clustered else STANDALONE
    refused = _Refusals([])
    projects = network_projects(api, project)
    bundles: list[NetworkBundle] = []
    for network_project in projects:
        for raw in _list(api, "/networks", recursion=1, project=network_project):
            bundle = read_network_bundle(api, network_project, raw, refused)
            if bundle is not None:
                bundles.append(bundle)
    instances = read_instances(api, project, refused)
    members = read_members(api, refused) if clustered else []
    return LXDSnapshot(
        member=member,
        clustered=clustered,
        projects=tuple(projects),
        networks=tuple(b.network for b in bundles),
        instances=tuple(instances),
        forwards=tuple(f for b in bundles for f in b.forwards),
        load_balancers=tuple(lb for b in bundles for lb in b.load_balancers),
        members=tuple(members),
        refused=tuple(refused.items),
    )


def read_members(api: LXDApi, refused: _Refusals | None = None) -> list[MemberRecord]:
    """The cluster members with their status (Online, Offline, Evacuated)."""
    refused = refused if refused is not None else _Refusals([])
    members = []
    for raw in _list(api, "/cluster/members", recursion=1):
        parsed = refused.parse("member", "", raw, parse_member)
        if parsed is not None:
            members.append(parsed)
    return members


def read_instances(api: LXDApi, project: str, refused: _Refusals) -> list[InstanceRecord]:
    params: dict[str, str | int] = {"recursion": 2}
    if project == ALL_PROJECTS:
        params["all-projects"] = "true"
    else:
        params["project"] = project
    instances = []
    for raw in _list(api, "/instances", **params):
        owner = raw.get("project", project) if isinstance(raw, Mapping) else project
        parsed = refused.parse("instance", str(owner), raw, lambda r: parse_instance(r, project))
        if parsed is not None:
            instances.append(parsed)
    return instances


def read_instance(api: LXDApi, project: str, name: str) -> InstanceRecord | RefusedObject | None:
    """One instance after an event; None when it no longer exists."""
    try:
        raw = api.get(f"/instances/{name}", project=project, recursion=1)
        state = api.get(f"/instances/{name}/state", project=project)
    except LXDRequestFailed as exc:
        if exc.status == 404:
            return None
        raise
    refused = _Refusals([])
    parsed = refused.parse("instance", project, raw, lambda r: parse_instance({**r, "state": state}, project))
    return parsed if parsed is not None else refused.items[0]


def read_network(api: LXDApi, project: str, name: str) -> NetworkBundle | RefusedObject | None:
    """One network (with forwards, load balancers, OVN chassis) after an event; None when gone."""
    try:
        raw = api.get(f"/networks/{name}", project=project)
    except LXDRequestFailed as exc:
        if exc.status == 404:
            return None
        raise
    refused = _Refusals([])
    bundle = read_network_bundle(api, project, raw, refused)
    return bundle if bundle is not None else refused.items[0]
