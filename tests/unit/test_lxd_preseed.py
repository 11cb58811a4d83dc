import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fabric_lab import lxd_cluster
from fabric_lab.lxd_preseed import DEFAULT_PRESEED, check_preseed, load_preseed
from fabric_lab.node import LabError
from fabric_lab.topology_model import Node, Topology


def bridge(**config: str) -> dict[str, object]:
    return {"networks": [{"name": "br0", "type": "bridge", "config": config}]}


def test_default_preseed_has_no_networks_and_pins_image_updates_off() -> None:
    preseed = load_preseed(None, "default")
    assert "networks" not in preseed
    assert preseed["config"]["images.auto_update_interval"] == "0"
    assert preseed["storage_pools"] == DEFAULT_PRESEED["storage_pools"]


def test_explicit_addresses_pass() -> None:
    assert check_preseed(bridge(**{"ipv4.address": "10.1.0.1/24", "ipv6.address": "none"}), "p") == []


@pytest.mark.parametrize(
    ("config", "bad_key"),
    [
        ({"ipv4.address": "auto", "ipv6.address": "none"}, "ipv4.address"),
        ({"ipv4.address": "10.1.0.1/24"}, "ipv6.address"),
        ({"ipv6.address": "fd00::1/64"}, "ipv4.address"),
        ({"ipv4.address": "10.1.0.1/24", "ipv6.address": "auto"}, "ipv6.address"),
    ],
)
def test_auto_or_missing_bridge_address_is_refused(config: dict[str, str], bad_key: str) -> None:
    problems = check_preseed(bridge(**config), "h1/preseed.yaml")
    assert len(problems) == 1
    assert f"networks[0].config.{bad_key}" in problems[0]
    assert problems[0].startswith("h1/preseed.yaml")


def test_wildcard_https_address_is_refused() -> None:
    problems = check_preseed({"config": {"core.https_address": ":8443"}}, "p")
    assert problems and "core.https_address" in problems[0]


def test_load_preseed_raises_with_every_problem() -> None:
    text = yaml.safe_dump({"networks": [{"name": "a", "config": {}}, {"name": "b", "config": {}}]})
    with pytest.raises(ValueError) as err:
        load_preseed(text, "p.yaml")
    assert str(err.value).count("\n") == 3  # four problems: two keys on two networks


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ipv4.address": st.sampled_from(["auto", "", "none", "10.0.0.1/24"]),
                "ipv6.address": st.sampled_from(["auto", "", "none", "fd00::1/64"]),
            }
        ),
        max_size=4,
    )
)
def test_every_auto_address_is_reported(configs: list[dict[str, str]]) -> None:
    preseed = {"networks": [{"name": f"n{i}", "type": "bridge", "config": c} for i, c in enumerate(configs)]}
    expected = sum(1 for c in configs for v in c.values() if v in ("auto", ""))
    assert len(check_preseed(preseed, "p")) == expected


# ---- clustering ------------------------------------------------------------------------------------


JOIN = {
    "cluster": {
        "enabled": True,
        "server_name": "m2",
        "server_address": "10.99.2.12:8443",
        "cluster_address": "10.99.1.11:8443",
        "member_config": [{"entity": "network", "name": "UPLINK", "key": "parent", "value": "eth2"}],
    }
}


def test_bootstrap_and_join_preseeds_with_explicit_addresses_pass() -> None:
    bootstrap = {
        "config": {"core.https_address": "10.99.1.11:8443"},
        "cluster": {"server_name": "m1", "enabled": True},
    }
    assert check_preseed(bootstrap, "p") == []
    assert check_preseed(JOIN, "p") == []


@pytest.mark.parametrize("key", ["server_address", "cluster_address"])
@pytest.mark.parametrize("wildcard", [":8443", "0.0.0.0:8443", "[::]:8443"])
def test_wildcard_cluster_addresses_are_refused(key: str, wildcard: str) -> None:
    preseed = {"cluster": {**JOIN["cluster"], key: wildcard}}
    problems = check_preseed(preseed, "m2.yaml")
    assert len(problems) == 1 and f"cluster.{key}" in problems[0] and wildcard in problems[0]


def test_wildcard_cluster_https_address_is_refused() -> None:
    problems = check_preseed({"config": {"cluster.https_address": "[::]:8443"}}, "p")
    assert problems and "cluster.https_address" in problems[0]


def test_enabling_clustering_needs_an_address() -> None:
    problems = check_preseed({"cluster": {"server_name": "m1", "enabled": True}}, "p")
    assert len(problems) == 1 and "cluster.enabled needs an explicit address" in problems[0]
    assert check_preseed({"cluster": {"server_name": "m1", "enabled": False}}, "p") == []


def test_member_config_is_checked() -> None:
    auto = {"entity": "network", "name": "br0", "key": "ipv4.address", "value": "auto"}
    problems = check_preseed(
        {"cluster": {**JOIN["cluster"], "member_config": [auto, {"entity": "network"}]}}, "p"
    )
    assert len(problems) == 2
    assert "member_config[0]: ipv4.address must be an explicit address" in problems[0]
    assert "member_config[1]: expected a mapping with entity, name, key and value" in problems[1]
    assert check_preseed({"cluster": {**JOIN["cluster"], "member_config": "x"}}, "p")[0].endswith(
        "expected a list"
    )


# ---- lxd_cluster: labels and the preseeds the runner writes --------------------------------------


def cluster_topology(**extra: dict[str, str]) -> Topology:
    def member(name: str, address: str, **labels: str) -> Node:
        base = {"fabric.lxd": "true", "fabric.lxd.cluster": "c1", "fabric.lxd.cluster.address": address}
        return Node(name, "linux", labels={**base, **labels})

    nodes = [
        member("m1", "10.99.1.11", **extra.get("m1", {})),
        member("m2", "fd00:99:2::12", **extra.get("m2", {})),
    ]
    return Topology("t", None, Path("t.clab.yml"), Path(), (*nodes, Node("r1", "linux")), ())


def test_members_first_in_file_order_bootstraps() -> None:
    members = lxd_cluster.members(cluster_topology())
    assert set(members) == {"m1", "m2"}
    assert members["m1"].bootstraps and not members["m2"].bootstraps
    assert members["m2"].address == "[fd00:99:2::12]:8443"
    assert members["m2"].bootstrap_address == "10.99.1.11:8443"


def test_members_env_lets_them_reach_each_other_past_the_closed_proxy() -> None:
    topology = cluster_topology()
    env = lxd_cluster.node_env(topology, topology.node("m2"))
    assert env["no_proxy"] == env["NO_PROXY"] == "127.0.0.1,localhost,::1,10.99.1.11,fd00:99:2::12"
    assert lxd_cluster.node_env(topology, topology.node("r1")) == {}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"fabric.lxd.cluster.address": "0.0.0.0"}, "underlay address"),  # noqa: S104 (refused)
        ({"fabric.lxd.cluster.address": "m1.example"}, "must be the member's IP address"),
        ({"fabric.lxd": "false"}, 'needs fabric.lxd: "true"'),
        ({"fabric.lxd.cluster": "bad name"}, "is not a name"),
        ({"fabric.lxd.cluster.address": "fd00:99:2::12"}, "share an address"),
    ],
)
def test_member_labels_that_do_not_fit_are_refused(labels: dict[str, str], message: str) -> None:
    with pytest.raises(LabError, match=message):
        lxd_cluster.members(cluster_topology(m1=labels))


def test_bootstrap_preseed_adds_the_listen_address_and_the_cluster() -> None:
    member = lxd_cluster.members(cluster_topology())["m1"]
    text = yaml.safe_dump(
        {"networks": [{"name": "UPLINK", "type": "physical", "config": {"parent": "eth2"}}]}
    )
    preseed = yaml.safe_load(lxd_cluster.bootstrap_preseed(text, "p", member))
    assert preseed["config"]["core.https_address"] == "10.99.1.11:8443"
    assert preseed["cluster"] == {"server_name": "m1", "enabled": True}
    assert check_preseed(preseed, "p") == []
    default = yaml.safe_load(lxd_cluster.bootstrap_preseed(None, "p", member))
    assert default["storage_pools"] == DEFAULT_PRESEED["storage_pools"]
    with pytest.raises(LabError, match=re.escape("is not the member's 10.99.1.11:8443")):
        lxd_cluster.bootstrap_preseed(
            yaml.safe_dump({"config": {"core.https_address": "10.0.0.1:8443"}}), "p", member
        )


CLUSTER = {
    "enabled": True,
    "member_config": [
        {"entity": "storage-pool", "name": "default", "key": "source", "value": "", "description": "d"},
        {"entity": "network", "name": "UPLINK", "key": "parent", "value": "", "description": "d"},
    ],
    "config": {
        "images.auto_update_interval": "0",
        "network.ovn.northbound_connection": "tcp:10.99.1.11:6641",
    },
}


def join(text: str | None) -> dict[str, Any]:
    member = lxd_cluster.members(cluster_topology())["m2"]
    return lxd_cluster.join_preseed(text, "m2.yaml", member, CLUSTER, "CERT")


def test_join_preseed_gives_the_members_keys_and_the_clusters_defaults() -> None:
    text = yaml.safe_dump({"cluster": {"member_config": [JOIN["cluster"]["member_config"][0]]}})  # type: ignore[index]
    cluster = join(text)["cluster"]
    assert cluster["server_name"] == "m2" and cluster["enabled"] is True
    assert cluster["server_address"] == "[fd00:99:2::12]:8443"
    assert cluster["cluster_address"] == "10.99.1.11:8443"
    assert cluster["cluster_certificate"] == "CERT"
    assert cluster["member_config"] == [
        {"entity": "storage-pool", "name": "default", "key": "source", "value": ""},
        {"entity": "network", "name": "UPLINK", "key": "parent", "value": "eth2"},
    ]
    assert check_preseed(join(text), "p") == []


@pytest.mark.parametrize(
    ("preseed", "message"),
    [
        (None, "must give this member's network/UPLINK/parent"),
        ({"networks": []}, "takes networks from the cluster"),
        ({"cluster": {"server_name": "x"}}, "may only hold member_config"),
        (
            {"cluster": {"member_config": [{"entity": "network", "name": "lxdbr0", "key": "parent"}]}},
            "asks for no",
        ),
        ({"config": {"network.ovn.northbound_connection": "unix:/x"}}, "is cluster-wide"),
        ({"config": {"core.https_address": "10.0.0.2:8443"}}, "must be [fd00:99:2::12]:8443"),
    ],
)
def test_join_preseeds_that_do_not_fit_are_refused(preseed: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        join(None if preseed is None else yaml.safe_dump(preseed))


def test_join_preseed_may_repeat_the_clusters_config() -> None:
    parent = {"entity": "network", "name": "UPLINK", "key": "parent", "value": "eth2"}
    text = yaml.safe_dump(
        {"config": {"images.auto_update_interval": "0"}, "cluster": {"member_config": [parent]}}
    )
    assert "config" not in join(text)
