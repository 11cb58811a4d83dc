"""The reader against a fake LXD API: what is read, from where, and how bad objects are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fabricd.frozen import FrozenMap
from fabricd.lxd.api import LXDRequestFailed, LXDUnavailable
from fabricd.lxd.reader import NetworkBundle, network_projects, read_instance, read_network, read_snapshot
from fabricd.lxd.records import STANDALONE, InstanceRecord, ListenerRecord, MemberRecord, RefusedObject
from tests.unit.test_lxd_parse import (
    BRIDGE,
    CONTAINER,
    FORWARD,
    LOAD_BALANCER,
    MEMBER,
    OVN,
    UNMANAGED,
    variant,
)

Route = Any


class FakeApi:
    """LXDApi's get/describe. Routes by (path, project) or by path alone; a route is canned metadata,
    an exception to raise, or a callable(params) giving either. Unknown paths answer 404 like LXD."""

    def __init__(self, routes: dict[str | tuple[str, str | None], Route]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, dict[str, str | int]]] = []

    def get(self, path: str, **params: str | int) -> Any:
        self.calls.append((path, dict(params)))
        project = params.get("project")
        for key in ((path, project), path):
            if key in self.routes:
                answer = self.routes[key]
                if callable(answer) and not isinstance(answer, type):
                    answer = answer(params)
                if isinstance(answer, BaseException):
                    raise answer
                return copy.deepcopy(answer)
        raise LXDRequestFailed(path, 404, "not found")

    def describe(self) -> str:
        return "/fake/unix.socket"

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    def params_of(self, path: str) -> list[dict[str, str | int]]:
        return [params for called, params in self.calls if called == path]


def server(clustered: bool, name: str = "h1") -> dict[str, Any]:
    return {
        "api_version": "1.0",
        "auth": "trusted",
        "environment": {"server_clustered": clustered, "server_name": name, "server_version": "5.0.2"},
    }


PROJECTS = [
    {"name": "default", "config": {"features.images": "true", "features.networks": "true"}},
    {"name": "p1", "config": {"features.images": "true", "features.networks": "false"}},
    {"name": "p2", "config": {"features.networks": "true", "features.profiles": "true"}},
    {"name": "p3", "config": {}},
]

OVN_STATE = {
    "addresses": [],
    "hwaddr": "00:16:3e:7f:00:01",
    "mtu": 1442,
    "state": "up",
    "ovn": {"chassis": "h2"},
}

BAD_INSTANCE = variant(CONTAINER, name="broken", expanded_config={"user.port": 8080})


def listing(objects: list[dict[str, Any]]) -> Route:
    """A collection as LXD answers it: objects with recursion, their URLs without."""

    def answer(params: dict[str, str | int]) -> Any:
        if params.get("recursion"):
            return objects
        return [f"/1.0/networks/{o['name']}" for o in objects]

    return answer


def standard_routes(*, clustered: bool = True) -> dict[str | tuple[str, str | None], Route]:
    c2 = variant(CONTAINER, name="c2", project="p2")
    return {
        "": server(clustered),
        "/projects": PROJECTS,
        ("/networks", "default"): listing([BRIDGE, UNMANAGED]),
        ("/networks", "p1"): listing([variant(BRIDGE, name="p1only")]),  # must never be read
        ("/networks", "p2"): listing([OVN]),
        ("/networks/br0/forwards", "default"): [FORWARD],
        ("/networks/ovn0/forwards", "p2"): [variant(FORWARD, listen_address="192.0.2.30", location="")],
        ("/networks/ovn0/load-balancers", "p2"): [LOAD_BALANCER],
        ("/networks/ovn0/state", "p2"): OVN_STATE,
        "/instances": lambda params: [CONTAINER, c2] if params.get("all-projects") else [CONTAINER],
        "/cluster/members": [MEMBER, variant(MEMBER, server_name="h2", status="Offline")],
    }


# --- projects -----------------------------------------------------------------------------------


def test_network_projects_are_default_plus_those_with_their_own_networks() -> None:
    api = FakeApi({"/projects": PROJECTS})
    assert network_projects(api, "*") == ["default", "p2"]  # type: ignore[arg-type]
    assert network_projects(api, "p2") == ["default", "p2"]  # type: ignore[arg-type]
    assert network_projects(api, "p1") == ["default"]  # type: ignore[arg-type]
    assert network_projects(api, "default") == ["default"]  # type: ignore[arg-type]
    assert api.params_of("/projects") == [{"recursion": 1}] * 4


def test_network_projects_skip_garbage() -> None:
    garbage = [
        "p9",
        None,
        {"config": {"features.networks": "true"}},
        {"name": 5},
        {"name": "p4", "config": ["features.networks"]},
        {"name": "p5", "config": None},
        {"name": "p6", "config": {"features.networks": True}},
        {"name": "p7", "config": {"features.networks": "true"}},
    ]
    api = FakeApi({"/projects": [*PROJECTS, *garbage]})
    assert network_projects(api, "*") == ["default", "p2", "p7"]  # type: ignore[arg-type]
    api = FakeApi({"/projects": {"not": "a list"}})
    assert network_projects(api, "*") == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "owns"), [("yes", True), ("On", True), ("1", True), ("off", False), ("", False)]
)
def test_network_projects_read_features_networks_as_lxd_does(value: str, owns: bool) -> None:
    api = FakeApi({"/projects": [{"name": "p1", "config": {"features.networks": value}}]})
    assert network_projects(api, "*") == (["p1"] if owns else [])  # type: ignore[arg-type]


# --- full snapshot ------------------------------------------------------------------------------


def test_clustered_snapshot_of_all_projects() -> None:
    api = FakeApi(standard_routes())
    snapshot = read_snapshot(api, "*")  # type: ignore[arg-type]

    assert (snapshot.member, snapshot.clustered) == ("h1", True)
    assert snapshot.projects == ("default", "p2")
    assert [(n.project, n.name, n.type, n.managed) for n in snapshot.networks] == [
        ("default", "br0", "bridge", True),
        ("default", "enp1s0", "physical", False),
        ("p2", "ovn0", "ovn", True),
    ]
    assert snapshot.network("p1", "p1only") is None
    assert ("/networks", {"recursion": 1, "project": "p1"}) not in api.calls
    ovn = snapshot.network("p2", "ovn0")
    assert ovn is not None
    assert ovn.ovn_chassis == "h2"
    assert ovn.config["volatile.network.ipv4.address"] == "192.0.2.100"
    br0 = snapshot.network("default", "br0")
    assert br0 is not None
    assert br0.ovn_chassis is None

    target = FrozenMap({"target_address": "10.10.0.5"})
    assert snapshot.forwards == (
        ListenerRecord("forward", "default", "br0", "192.0.2.10", "h1", target, "web"),
        ListenerRecord("forward", "p2", "ovn0", "192.0.2.30", "", target, "web"),
    )
    assert [(lb.project, lb.network, lb.listen_address) for lb in snapshot.load_balancers] == [
        ("p2", "ovn0", "192.0.2.20")
    ]
    assert [(i.project, i.name) for i in snapshot.instances] == [("p1", "c1"), ("p2", "c2")]
    assert snapshot.members == (
        MemberRecord("h1", "Online", "https://10.0.0.1:8443"),
        MemberRecord("h2", "Offline", "https://10.0.0.1:8443"),
    )
    assert snapshot.refused == ()


def test_instances_of_all_projects_use_the_all_projects_parameter() -> None:
    api = FakeApi(standard_routes())
    read_snapshot(api, "*")  # type: ignore[arg-type]
    assert api.params_of("/instances") == [{"recursion": 2, "all-projects": "true"}]


def test_instances_of_one_project_use_the_project_parameter() -> None:
    api = FakeApi(standard_routes())
    snapshot = read_snapshot(api, "p1")  # type: ignore[arg-type]
    assert api.params_of("/instances") == [{"recursion": 2, "project": "p1"}]
    assert [i.name for i in snapshot.instances] == ["c1"]
    assert snapshot.projects == ("default",)  # p1 uses the default project's networks


def test_only_managed_bridge_and_ovn_networks_have_forwards_and_only_ovn_load_balancers() -> None:
    routes = standard_routes()
    routes[("/networks", "default")] = [
        BRIDGE,
        UNMANAGED,
        variant(BRIDGE, name="lxdbr-unmanaged", managed=False),
        {"name": "macv", "type": "macvlan", "managed": True, "config": {"parent": "enp1s0"}},
        {"name": "phys", "type": "physical", "managed": True, "config": {"parent": "enp2s0"}},
        {"name": "sriov0", "type": "sriov", "managed": True, "config": {"parent": "enp3s0"}},
    ]
    api = FakeApi(routes)
    read_snapshot(api, "*")  # type: ignore[arg-type]
    forwards_read = sorted(p for p in api.paths() if p.endswith("/forwards"))
    balancers_read = sorted(p for p in api.paths() if p.endswith("/load-balancers"))
    state_read = sorted(p for p in api.paths() if p.endswith("/state"))
    assert forwards_read == ["/networks/br0/forwards", "/networks/ovn0/forwards"]
    assert balancers_read == ["/networks/ovn0/load-balancers"]
    assert state_read == ["/networks/ovn0/state"]
    for path in forwards_read + balancers_read:
        assert all(params["recursion"] == 1 for params in api.params_of(path))


def test_standalone_server_is_member_none_and_members_are_not_read() -> None:
    routes = standard_routes(clustered=False)
    routes["/cluster/members"] = LXDRequestFailed("/cluster/members", 400, "Server isn't part of a cluster")
    api = FakeApi(routes)
    snapshot = read_snapshot(api, "*")  # type: ignore[arg-type]
    assert (snapshot.member, snapshot.clustered) == (STANDALONE, False)  # not the hostname "h1"
    assert snapshot.members == ()
    assert "/cluster/members" not in api.paths()


@pytest.mark.parametrize(
    "server_answer",
    [
        None,
        {},
        {"environment": None},
        {"environment": "x"},
        ["x"],
        "x",
        {"environment": {"server_clustered": "no"}},
    ],
)
def test_odd_server_answers_do_not_crash(server_answer: Any) -> None:
    routes = standard_routes()
    routes[""] = server_answer
    snapshot = read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]
    assert snapshot.member == STANDALONE  # no server name to go by
    assert [i.name for i in snapshot.instances] == ["c1", "c2"]


def test_clustered_without_server_name_falls_back_to_none() -> None:
    routes = standard_routes()
    routes[""] = {"environment": {"server_clustered": True, "server_name": ""}}
    assert read_snapshot(FakeApi(routes), "*").member == STANDALONE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "failure",
    [
        LXDRequestFailed(
            "/networks/ovn0/state", 500, "Failed getting OVN chassis: ovn-controller not running"
        ),
        LXDRequestFailed("/networks/ovn0/state", 404, "not found"),
    ],
)
def test_ovn_state_errors_are_tolerated(failure: Exception) -> None:
    routes = standard_routes()
    routes[("/networks/ovn0/state", "p2")] = failure
    snapshot = read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]
    ovn = snapshot.network("p2", "ovn0")
    assert ovn is not None
    assert ovn.ovn_chassis is None
    assert snapshot.refused == ()
    assert len(snapshot.load_balancers) == 1


@pytest.mark.parametrize("state", [{"addresses": []}, None, ["garbage"], "garbage", {"ovn": None}])
def test_ovn_state_without_a_chassis(state: Any) -> None:
    routes = standard_routes()
    routes[("/networks/ovn0/state", "p2")] = state
    ovn = read_snapshot(FakeApi(routes), "*").network("p2", "ovn0")  # type: ignore[arg-type]
    assert ovn is not None
    assert ovn.ovn_chassis is None


def test_ovn_state_unreachable_propagates() -> None:
    routes = standard_routes()
    routes[("/networks/ovn0/state", "p2")] = LXDUnavailable("/fake/unix.socket: gone")
    with pytest.raises(LXDUnavailable):
        read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]


def test_one_malformed_instance_is_refused_and_the_others_kept() -> None:
    routes = standard_routes()
    c3 = variant(CONTAINER, name="c3", project="p2")
    routes["/instances"] = [CONTAINER, BAD_INSTANCE, "garbage", None, variant(CONTAINER, name=""), c3]
    snapshot = read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]
    assert [i.name for i in snapshot.instances] == ["c1", "c3"]
    assert [(r.kind, r.project, r.name) for r in snapshot.refused] == [
        ("instance", "p1", "broken"),
        ("instance", "*", "?"),
        ("instance", "*", "?"),
        ("instance", "p1", "?"),
    ]
    assert snapshot.refused[0].reason.startswith("expanded_config:")
    assert snapshot.refused[1].reason == "expected an object, got str"
    assert snapshot.refused[3].reason.startswith("name:")


def test_malformed_networks_forwards_balancers_and_members_are_refused_alone() -> None:
    routes = standard_routes()
    routes[("/networks", "default")] = [
        BRIDGE,
        variant(BRIDGE, name="bad0", config={"bridge.mtu": 1500}),
        ["not", "a", "network"],
        None,
        {"name": "noType"},
    ]
    routes[("/networks", "p2")] = [OVN, variant(OVN, name="ovn1", type=7)]
    routes[("/networks/br0/forwards", "default")] = [FORWARD, {"listen_address": ""}, "junk"]
    routes[("/networks/ovn0/load-balancers", "p2")] = [LOAD_BALANCER, {"config": {}}]
    routes["/cluster/members"] = [MEMBER, {"server_name": "h9"}, 42]
    snapshot = read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]

    assert [n.name for n in snapshot.networks] == ["br0", "ovn0"]
    assert [f.listen_address for f in snapshot.forwards] == ["192.0.2.10", "192.0.2.30"]
    assert [lb.listen_address for lb in snapshot.load_balancers] == ["192.0.2.20"]
    assert [m.name for m in snapshot.members] == ["h1"]
    refused = [(r.kind, r.project, r.name, r.reason.split(":")[0]) for r in snapshot.refused]
    assert refused == [  # in reading order: each network, then what hangs off it
        ("forward", "default", "?", "listen_address"),
        ("forward", "default", "?", "expected an object, got str"),
        ("network", "default", "bad0", "config"),
        ("network", "default", "?", "expected an object, got list"),
        ("network", "default", "?", "expected an object, got NoneType"),
        ("network", "default", "noType", "type"),
        ("load-balancer", "p2", "?", "listen_address"),
        ("network", "p2", "ovn1", "type"),
        ("member", "", "h9", "status"),
        ("member", "", "?", "expected an object, got int"),
    ]


def test_listings_that_are_not_lists_read_as_empty() -> None:
    routes = standard_routes()
    routes[("/networks", "default")] = None
    routes["/instances"] = {"c1": CONTAINER}
    routes["/cluster/members"] = "h1"
    snapshot = read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]
    assert [n.name for n in snapshot.networks] == ["ovn0"]
    assert snapshot.instances == ()
    assert snapshot.members == ()


def test_request_failures_during_a_snapshot_propagate() -> None:
    routes = standard_routes()
    routes["/instances"] = LXDRequestFailed("/instances", 403, "not authorized")
    with pytest.raises(LXDRequestFailed):
        read_snapshot(FakeApi(routes), "*")  # type: ignore[arg-type]


# --- single objects after an event --------------------------------------------------------------


def instance_routes(raw: Any, state: Any) -> dict[str | tuple[str, str | None], Route]:
    return {("/instances/c1", "p1"): raw, ("/instances/c1/state", "p1"): state}


def test_read_instance_uses_the_separate_state() -> None:
    raw = variant(CONTAINER, state=None, status="Stopped")
    api = FakeApi(instance_routes(raw, CONTAINER["state"]))
    result = read_instance(api, "p1", "c1")  # type: ignore[arg-type]
    assert isinstance(result, InstanceRecord)
    assert result.status == "Running"
    assert result.nics[0].addresses == ("10.10.0.5/24", "fd42:1::5/64")
    assert api.calls == [
        ("/instances/c1", {"project": "p1", "recursion": 1}),
        ("/instances/c1/state", {"project": "p1"}),
    ]


def test_read_instance_gone_is_none() -> None:
    assert read_instance(FakeApi({}), "p1", "c1") is None  # type: ignore[arg-type]
    gone_between = FakeApi({("/instances/c1", "p1"): CONTAINER})  # deleted before the state was read
    assert read_instance(gone_between, "p1", "c1") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "failure", [LXDRequestFailed("/instances/c1", 500, "boom"), LXDUnavailable("/fake/unix.socket: gone")]
)
def test_read_instance_other_failures_propagate(failure: Exception) -> None:
    api = FakeApi({("/instances/c1", "p1"): failure})
    with pytest.raises(type(failure)):
        read_instance(api, "p1", "c1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "name", "reason"),
    [
        (BAD_INSTANCE, "broken", "expanded_config:"),
        (["c1"], "?", "expected an object, got list"),
        (None, "?", "expected an object, got NoneType"),
        (variant(CONTAINER, name=None), "?", "name:"),
    ],
)
def test_read_instance_malformed_is_refused(raw: Any, name: str, reason: str) -> None:
    result = read_instance(FakeApi(instance_routes(raw, CONTAINER["state"])), "p1", "c1")  # type: ignore[arg-type]
    assert isinstance(result, RefusedObject)
    assert (result.kind, result.project, result.name) == ("instance", "p1", name)
    assert result.reason.startswith(reason)


@pytest.mark.parametrize("state", [None, "garbage", ["x"], {}])
def test_read_instance_tolerates_a_useless_state(state: Any) -> None:
    result = read_instance(FakeApi(instance_routes(CONTAINER, state)), "p1", "c1")  # type: ignore[arg-type]
    assert isinstance(result, InstanceRecord)
    assert result.nics[0].addresses == ()


def test_read_network_with_forwards_and_load_balancers() -> None:
    api = FakeApi({**standard_routes(), ("/networks/ovn0", "p2"): OVN})
    bundle = read_network(api, "p2", "ovn0")  # type: ignore[arg-type]
    assert isinstance(bundle, NetworkBundle)
    assert (bundle.network.name, bundle.network.ovn_chassis) == ("ovn0", "h2")
    assert [f.listen_address for f in bundle.forwards] == ["192.0.2.30"]
    assert [lb.listen_address for lb in bundle.load_balancers] == ["192.0.2.20"]
    assert api.calls[0] == ("/networks/ovn0", {"project": "p2"})


def test_read_network_gives_each_listener_its_kind() -> None:
    api = FakeApi({**standard_routes(), ("/networks/ovn0", "p2"): OVN})
    bundle = read_network(api, "p2", "ovn0")  # type: ignore[arg-type]
    assert isinstance(bundle, NetworkBundle)
    assert [f.kind for f in bundle.forwards] == ["forward"]
    assert [lb.kind for lb in bundle.load_balancers] == ["load-balancer"]


def test_read_network_bridge_reads_no_load_balancers() -> None:
    api = FakeApi({**standard_routes(), ("/networks/br0", "default"): BRIDGE})
    bundle = read_network(api, "default", "br0")  # type: ignore[arg-type]
    assert isinstance(bundle, NetworkBundle)
    assert [f.listen_address for f in bundle.forwards] == ["192.0.2.10"]
    assert bundle.load_balancers == ()
    assert api.paths() == ["/networks/br0", "/networks/br0/forwards"]


def test_read_network_gone_is_none_and_malformed_is_refused() -> None:
    assert read_network(FakeApi({}), "default", "br0") is None  # type: ignore[arg-type]
    for raw, name in ((variant(BRIDGE, config="x"), "br0"), ("garbage", "?"), (None, "?")):
        result = read_network(FakeApi({"/networks/br0": raw}), "default", "br0")  # type: ignore[arg-type]
        assert isinstance(result, RefusedObject), raw
        assert (result.kind, result.project, result.name) == ("network", "default", name)


def test_read_network_other_failures_propagate() -> None:
    api = FakeApi({"/networks/br0": LXDRequestFailed("/networks/br0", 500, "boom")})
    with pytest.raises(LXDRequestFailed):
        read_network(api, "default", "br0")  # type: ignore[arg-type]


def test_fake_api_answers_404_for_unknown_paths() -> None:
    api = FakeApi({})
    with pytest.raises(LXDRequestFailed) as caught:
        api.get("/nope")
    assert caught.value.status == 404
    assert api.describe() == "/fake/unix.socket"
