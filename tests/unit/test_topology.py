"""The containerlab topology model and validator (fabric_lab.topology)."""

from __future__ import annotations

import pickle
import string
import tempfile
import textwrap
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric_lab.topology import (
    FRR_KIND_MESSAGE,
    NON_CONTAINER_KINDS,
    Bind,
    Endpoint,
    Link,
    Node,
    Problem,
    Topology,
    TopologyError,
    check_containerlab,
    image_repository,
    load_topology,
    namespace_name,
    parse_bind,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_FILES = sorted((REPO_ROOT / "labs").glob("*.clab.yml"))
MARK = "# <-"  # marks the line a failing fixture's problem must point at


def write(directory: Path, text: str, name: str = "lab.clab.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def marked_line(text: str) -> int:
    lines = textwrap.dedent(text).splitlines()
    return next(number for number, line in enumerate(lines, 1) if MARK in line)


def problems_of(path: Path, *, strict: bool = False) -> tuple[Problem, ...]:
    if strict:
        return check_containerlab(path)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return caught.value.problems


GOOD = """\
name: demo
prefix: ""
mgmt:
  network: clab-demo
topology:
  defaults:
    labels:
      fabric.site: lab
  kinds:
    linux:
      image: alpine:3.19
      env:
        TZ: UTC
  nodes:
    r1:
      kind: linux
      image: quay.io/frrouting/frr:9.1.0
      binds:
        - configs/r1/frr.conf:/etc/frr/frr.conf:ro
        - configs/r1/daemons:/etc/frr/daemons
      exec:
        - ip addr add 10.0.0.1/31 dev eth1
    h1:
      kind: linux
      binds:
        - /srv/shared:/shared:rw
      labels:
        fabric.lxd: "true"
        fabric.agent: configs/h1/fabricd.yaml
        fabric.role: host
    h2:
      kind: linux
      image: debian:12
      labels:
        fabric.lxd: "no"
  links:
    - endpoints: ["r1:eth1", "h1:eth1"]
    - endpoints: ["r1:eth2", "h2:eth1"]
      mtu: 9000
"""


@pytest.fixture
def good(tmp_path: Path) -> Topology:
    return load_topology(write(tmp_path, GOOD))


# ------------------------------------------------------------------------------------ the good lab


def test_good_lab_loads_in_file_order(good: Topology, tmp_path: Path) -> None:
    assert good.name == "demo"
    assert good.prefix == ""
    assert good.source == (tmp_path / "lab.clab.yml").resolve()
    assert good.directory == tmp_path.resolve()
    assert [node.name for node in good.nodes] == ["r1", "h1", "h2"]
    assert check_containerlab(good.source) == ()


def test_router_detection(good: Topology) -> None:
    assert good.node("r1").router == "frr"
    assert good.node("h1").router is None
    assert good.node("h2").router is None


def test_binds_resolve_against_the_topology_directory(good: Topology, tmp_path: Path) -> None:
    base = tmp_path.resolve()
    assert good.node("r1").binds == (
        Bind(base / "configs/r1/frr.conf", "/etc/frr/frr.conf", read_only=True),
        Bind(base / "configs/r1/daemons", "/etc/frr/daemons", read_only=False),
    )
    assert good.node("h1").binds == (Bind(Path("/srv/shared"), "/shared", read_only=False),)


def test_kind_and_defaults_values_merge_under_node_values(good: Topology) -> None:
    h1 = good.node("h1")
    assert h1.image == "alpine:3.19"  # from kinds.linux
    assert dict(h1.env) == {"TZ": "UTC"}
    assert dict(h1.labels) == {
        "fabric.site": "lab",
        "fabric.lxd": "true",
        "fabric.agent": "configs/h1/fabricd.yaml",
        "fabric.role": "host",
    }
    assert good.node("r1").image == "quay.io/frrouting/frr:9.1.0"
    assert good.node("r1").exec == ("ip addr add 10.0.0.1/31 dev eth1",)


def test_runner_labels(good: Topology, tmp_path: Path) -> None:
    assert good.node("h1").runs_lxd
    assert good.node("h1").agent_config == tmp_path.resolve() / "configs/h1/fabricd.yaml"
    assert not good.node("h2").runs_lxd
    assert good.node("h2").agent_config is None
    assert not good.node("r1").runs_lxd


def test_links_and_links_of(good: Topology) -> None:
    first = Link(Endpoint("r1", "eth1"), Endpoint("h1", "eth1"), mtu=None)
    second = Link(Endpoint("r1", "eth2"), Endpoint("h2", "eth1"), mtu=9000)
    assert good.links == (first, second)
    assert good.links_of("r1") == (first, second)
    assert good.links_of("h2") == (second,)
    with pytest.raises(KeyError, match="no node 'nope'"):
        good.links_of("nope")


def test_node_lookup_names_the_lab_and_known_nodes(good: Topology) -> None:
    with pytest.raises(KeyError, match=r"lab 'demo' has no node 'r9' \(nodes: r1, h1, h2\)"):
        good.node("r9")


def test_model_is_frozen_and_hashable(good: Topology) -> None:
    node = good.node("h1")
    assert hash(good) == hash(load_topology(good.source))
    with pytest.raises(FrozenInstanceError):
        node.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        node.labels["fabric.lxd"] = "false"  # type: ignore[index]


def test_node_copies_the_caller_mappings() -> None:
    labels = {"fabric.lxd": "yes"}
    node = Node("n1", "linux", labels=labels)
    labels["fabric.lxd"] = "no"
    assert node.runs_lxd
    assert node == Node("n1", "linux", labels={"fabric.lxd": "yes"})


def test_namespace_names(good: Topology) -> None:
    assert [namespace_name(good.name, node.name) for node in good.nodes] == [
        "fl-demo-r1",
        "fl-demo-h1",
        "fl-demo-h2",
    ]
    assert namespace_name("a" * 20, "b_c.d-9" + "e" * 13) == f"fl-{'a' * 20}-b_c.d-9{'e' * 13}"


@pytest.mark.parametrize(
    ("lab", "node", "fragment"),
    [
        ("a" * 21, "r1", "lab name"),
        ("demo", "n" * 21, "node name"),
        ("", "r1", "lab name"),
        ("demo", "", "node name"),
        ("de/mo", "r1", "lab name"),
        ("demo", "r 1", "node name"),
        ("demo", "-r1", "node name"),
        ("demo", "../etc", "node name"),
    ],
)
def test_namespace_name_rejects_unsafe_names(lab: str, node: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        namespace_name(lab, node)


@pytest.mark.parametrize(
    ("kind", "image", "router"),
    [
        ("frr", None, "frr"),
        ("linux", "frrouting/frr:v8.4.1", "frr"),
        ("linux", "quay.io/frrouting/frr:9.1.0", "frr"),
        ("linux", "registry.local:5000/frr", "frr"),
        ("linux", "ghcr.io/acme/frr@sha256:abcd", "frr"),
        ("linux", "pierky/bird:2.0.8", "bird"),
        ("linux", "alpine:3.19", None),
        ("linux", "frr-exporter:1", None),
        ("linux", None, None),
        ("ceos", "frrouting/frr:9", None),
    ],
)
def test_router_kinds(kind: str, image: str | None, router: str | None) -> None:
    assert Node("n", kind, image).router == router


def test_image_repository_strips_tag_and_digest_only() -> None:
    assert image_repository("quay.io/frrouting/frr:9.1@sha256:00") == "quay.io/frrouting/frr"
    assert image_repository("localhost:5000/frr") == "localhost:5000/frr"


def test_parse_bind(tmp_path: Path) -> None:
    assert parse_bind("a:/b:ro,z", tmp_path) == Bind((tmp_path / "a").resolve(), "/b", read_only=True)
    with pytest.raises(ValueError, match="both ro and rw"):
        parse_bind("a:/b:ro,rw", tmp_path)


# ---------------------------------------------------------------------------- merging and aliases


def test_node_beats_group_beats_kind_beats_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: merge
        topology:
          defaults:
            kind: linux
            image: from-defaults
            exec: ["defaults"]
            binds: ["d:/d", "x-defaults:/x"]
            labels: {level: defaults, d: "1"}
          kinds:
            linux:
              image: from-kind
              binds: ["x-kind:/x"]
              labels: {level: kind, k: 2}
          groups:
            spine:
              image: from-group
              exec: ["group"]
              labels: {level: group}
          nodes:
            n1: {group: spine, image: from-node, labels: {level: node}}
            n2: {group: spine}
            n3:
        """,
    )
    topology = load_topology(path)
    n1, n2, n3 = topology.nodes
    assert (n1.image, n2.image, n3.image) == ("from-node", "from-group", "from-kind")
    assert (n1.exec, n3.exec) == (("group",), ("defaults",))
    assert dict(n1.labels) == {"level": "node", "d": "1", "k": "2"}
    assert dict(n3.labels) == {"level": "kind", "d": "1", "k": "2"}
    base = tmp_path.resolve()
    assert n3.binds == (Bind(base / "d", "/d", False), Bind(base / "x-kind", "/x", False))
    assert all(node.kind == "linux" for node in topology.nodes)


def test_yaml_merge_keys_and_numbers_keep_their_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: anchors
        topology:
          nodes:
            a: &base
              kind: linux
              labels: {version: 1.10}
            b:
              <<: *base
              image: alpine
        """,
    )
    a, b = load_topology(path).nodes
    assert (b.kind, b.image, dict(b.labels)) == ("linux", "alpine", {"version": "1.10"})
    assert a.image is None


@pytest.mark.parametrize(
    "text",
    [
        "name: t\ntopology: &t\n  nodes: *t\n",
        "name: t\ntopology:\n  nodes:\n    r1: &r\n      <<: *r\n      kind: linux\n",
    ],
    ids=["alias", "merge"],
)
def test_recursive_aliases_are_problems_not_hangs(tmp_path: Path, text: str) -> None:
    assert any(p.message == "recursive YAML alias" for p in problems_of(write(tmp_path, text)))


def test_eth0_is_allowed_on_bridges_and_self_links_on_other_interfaces(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: br
        topology:
          nodes:
            br1: {kind: bridge}
            r1: {kind: linux}
          links:
            - endpoints: ["br1:eth0", "r1:eth1"]
            - endpoints: ["r1:eth2", "r1:eth3"]
            - type: veth
              endpoints: [{node: br1, interface: p2}, {node: r1, interface: eth4}]
        """,
    )
    links = load_topology(path).links
    assert links[1] == Link(Endpoint("r1", "eth2"), Endpoint("r1", "eth3"), None)
    assert links[2] == Link(Endpoint("br1", "p2"), Endpoint("r1", "eth4"), None)


# ------------------------------------------------------------------------------------------- frr


FRR_LAB = """\
name: frr
topology:
  nodes:
    r1:
      kind: frr # <-
"""


def test_frr_kind_is_accepted_by_the_runner_loader(tmp_path: Path) -> None:
    node = load_topology(write(tmp_path, FRR_LAB)).node("r1")
    assert (node.kind, node.router) == ("frr", "frr")


def test_frr_kind_is_rejected_by_the_strict_check(tmp_path: Path) -> None:
    path = write(tmp_path, FRR_LAB)
    expected = Problem(str(path), "topology.nodes.r1.kind", marked_line(FRR_LAB), FRR_KIND_MESSAGE)
    assert check_containerlab(path) == (expected,)
    with pytest.raises(TopologyError) as caught:
        load_topology(path, strict=True)
    assert caught.value.problems == (expected,)


# -------------------------------------------------------------------------------- every rule fails

# Each case: a lab, the key path of the problem and a fragment of its message; the problem's line is
# the one marked "# <-".
RULES = [
    pytest.param(
        """\
        prefix: x # <-
        topology: {nodes: {r1: {kind: linux}}}
        """,
        "name",
        "missing required key 'name'",
        id="name-missing",
    ),
    pytest.param(
        """\
        name: 5 # <-
        topology: {nodes: {r1: {kind: linux}}}
        """,
        "name",
        "must be a string, not an integer",
        id="name-not-string",
    ),
    pytest.param(
        """\
        name: my lab # <-
        topology: {nodes: {r1: {kind: linux}}}
        """,
        "name",
        "lab name 'my lab' must start with a letter or digit",
        id="name-pattern",
    ),
    pytest.param(
        """\
        name: a-very-long-lab-name-indeed # <-
        topology: {nodes: {r1: {kind: linux}}}
        """,
        "name",
        "must be 1-20 characters",
        id="name-too-long",
    ),
    pytest.param(
        """\
        name: t
        prefix: [x] # <-
        topology: {nodes: {r1: {kind: linux}}}
        """,
        "prefix",
        "must be a string, not a list",
        id="prefix-not-string",
    ),
    pytest.param(
        """\
        name: t
        mgmt: clab # <-
        topology: {nodes: {r1: {kind: linux}}}
        """,
        "mgmt",
        "must be a mapping, not a string",
        id="mgmt-not-mapping",
    ),
    pytest.param(
        """\
        name: t
        topology: {nodes: {r1: {kind: linux}}}
        topolgy: {} # <-
        """,
        "topolgy",
        "unknown key 'topolgy'; did you mean 'topology'?",
        id="root-unknown-key",
    ),
    pytest.param(
        """\
        name: t # <-
        """,
        "topology",
        "missing required key 'topology'",
        id="topology-missing",
    ),
    pytest.param(
        """\
        - name: t # <-
        """,
        "",
        "must be a mapping, not a list",
        id="root-not-mapping",
    ),
    pytest.param(
        """\
        name: t
        topology:
          node: {} # <-
          nodes: {r1: {kind: linux}}
        """,
        "topology.node",
        "unknown key 'node'; did you mean 'nodes'?",
        id="topology-unknown-key",
    ),
    pytest.param(
        """\
        name: t
        topology: # <-
          links: []
        """,
        "topology.nodes",
        "missing required key 'nodes'",
        id="nodes-missing",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: [r1] # <-
        """,
        "topology.nodes",
        "must be a mapping, not a list",
        id="nodes-not-mapping",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1: linux # <-
        """,
        "topology.nodes.r1",
        "must be a mapping, not a string",
        id="node-not-mapping",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r/1: {kind: linux} # <-
        """,
        "topology.nodes.r/1",
        "node name 'r/1' must start with a letter or digit",
        id="node-name-pattern",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            router-number-twenty-one: {kind: linux} # <-
        """,
        "topology.nodes.router-number-twenty-one",
        "must be 1-20 characters",
        id="node-name-too-long",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              bind: ["a:/a"] # <-
        """,
        "topology.nodes.r1.bind",
        "unknown key 'bind'; did you mean 'binds'?",
        id="node-unknown-key",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              exec: ip link set eth1 up # <-
        """,
        "topology.nodes.r1.exec",
        "must be a list of strings, not a string",
        id="exec-not-list",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              exec:
                - ip link
                - {cmd: x} # <-
        """,
        "topology.nodes.r1.exec[1]",
        "must be a string, not a mapping",
        id="exec-item-not-string",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              binds:
                - a:/a
                - a:/a # <-
        """,
        "topology.nodes.r1.binds[1]",
        "duplicate bind 'a:/a'",
        id="binds-not-unique",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              binds:
                - a:/a
                - b:/a/ # <-
        """,
        "topology.nodes.r1.binds[1]",
        "target '/a/' is already bound by topology.nodes.r1.binds[0]",
        id="binds-same-target",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              binds: ["a:etc/frr"] # <-
        """,
        "topology.nodes.r1.binds[0]",
        "bind target 'etc/frr' must be an absolute path",
        id="bind-target-relative",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              binds:
                - a:/a:readonly # <-
        """,
        "topology.nodes.r1.binds[0]",
        "unknown option(s) 'readonly'",
        id="bind-option",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              binds:
                - /only-a-source # <-
        """,
        "topology.nodes.r1.binds[0]",
        "must be 'source:target' or 'source:target:options'",
        id="bind-shape",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              env:
                DEBUG: yes # <-
        """,
        "topology.nodes.r1.env.DEBUG",
        'must be a string or number, not a boolean; quote it: "yes"',
        id="env-value-boolean",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              labels: [a, b] # <-
        """,
        "topology.nodes.r1.labels",
        "must be a mapping, not a list",
        id="labels-not-mapping",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              labels:
                fabric.lxd: "ture" # <-
        """,
        "topology.nodes.r1.labels.fabric.lxd",
        "must be one of true, yes, 1, false, no, 0, not 'ture'",
        id="fabric-lxd-typo",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              startup-delay: 2s # <-
        """,
        "topology.nodes.r1.startup-delay",
        "must be an integer >= 0, not 2s",
        id="startup-delay-not-integer",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              cpu: true # <-
        """,
        "topology.nodes.r1.cpu",
        "must be an integer >= 0, not true",
        id="cpu-boolean",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              image: 3 # <-
        """,
        "topology.nodes.r1.image",
        "must be a string, not an integer",
        id="image-not-string",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              ports: "8080:80" # <-
        """,
        "topology.nodes.r1.ports",
        "must be a list of strings",
        id="ports-not-list",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linux
              auto-remove: "yes" # <-
        """,
        "topology.nodes.r1.auto-remove",
        "must be true or false, not a string",
        id="auto-remove-not-boolean",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1:
              kind: linx # <-
        """,
        "topology.nodes.r1.kind",
        "unknown kind 'linx'; did you mean 'linux'?",
        id="kind-unknown",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1: # <-
              image: alpine
        """,
        "topology.nodes.r1",
        "no kind: set 'kind' on the node, its group or topology.defaults",
        id="kind-unresolvable",
    ),
    pytest.param(
        """\
        name: t
        topology:
          groups:
            spine: {kind: linux}
          nodes:
            r1:
              group: spin # <-
        """,
        "topology.nodes.r1.group",
        "group 'spin' is not defined in topology.groups; did you mean 'spine'?",
        id="group-undefined",
    ),
    pytest.param(
        """\
        name: t
        topology:
          kinds:
            linuxx: {image: alpine} # <-
          nodes: {r1: {kind: linux}}
        """,
        "topology.kinds.linuxx",
        "unknown kind 'linuxx'; did you mean 'linux'?",
        id="kinds-key-unknown",
    ),
    pytest.param(
        """\
        name: t
        topology:
          defaults:
            imag: alpine # <-
          nodes: {r1: {kind: linux}}
        """,
        "topology.defaults.imag",
        "unknown key 'imag'; did you mean 'image'?",
        id="defaults-unknown-key",
    ),
    pytest.param(
        """\
        name: t
        topology:
          groups:
            spine:
              exec: reboot # <-
          nodes: {r1: {kind: linux, group: spine}}
        """,
        "topology.groups.spine.exec",
        "must be a list of strings, not a string",
        id="group-bad-value",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}}
          links: {a: b} # <-
        """,
        "topology.links",
        "must be a list, not a mapping",
        id="links-not-list",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}}
          links:
            - r1:eth1 # <-
        """,
        "topology.links[0]",
        "must be a mapping, not a string",
        id="link-not-mapping",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints: ["r1:eth1", "r2:eth1"]
              mtuu: 9000 # <-
        """,
        "topology.links[0].mtuu",
        "unknown key 'mtuu'; did you mean 'mtu'?",
        id="link-unknown-key",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}}
          links:
            - mtu: 1500 # <-
        """,
        "topology.links[0].endpoints",
        "missing required key 'endpoints'",
        id="link-endpoints-missing",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints: ["r1:eth1", "r2:eth1", "r2:eth2"] # <-
        """,
        "topology.links[0].endpoints",
        "must list exactly 2 endpoints, not 3",
        id="link-three-endpoints",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints:
                - r1-eth1 # <-
                - r2:eth1
        """,
        "topology.links[0].endpoints[0]",
        "endpoint must be a 'node:interface' string, not 'r1-eth1'",
        id="endpoint-shape",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {leaf1: {kind: linux}, spine1: {kind: linux}}
          links:
            - endpoints:
                - leaf1:eth1
                - spine2:eth1 # <-
        """,
        "topology.links[0].endpoints[1]",
        "node 'spine2' is not defined in topology.nodes; did you mean 'spine1'?",
        id="endpoint-node-undefined",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints:
                - r1:a-very-long-ifname # <-
                - r2:eth1
        """,
        "topology.links[0].endpoints[0]",
        "interface name 'a-very-long-ifname' must be 1-15 characters",
        id="ifname-too-long",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints:
                - r1:eth1/1 # <-
                - r2:eth1
        """,
        "topology.links[0].endpoints[0]",
        "interface name 'eth1/1' is not a valid Linux name",
        id="ifname-slash",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints:
                - r1:eth1
                - r2:eth0 # <-
        """,
        "topology.links[0].endpoints[1]",
        "r2:eth0: eth0 is reserved for the management network",
        id="eth0-reserved",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints: ["r1:eth1", "r2:eth1"]
            - endpoints: ["r2:eth2", "r1:eth1"] # <-
        """,
        "topology.links[1].endpoints[1]",
        "interface r1:eth1 is already used by topology.links[0]",
        id="interface-reused",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}}
          links:
            - endpoints: ["r1:eth1", "r1:eth1"] # <-
        """,
        "topology.links[0].endpoints",
        "link connects r1:eth1 to itself",
        id="link-to-itself",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints: ["r1:eth1", "r2:eth1"]
              mtu: 70000 # <-
        """,
        "topology.links[0].mtu",
        "must be an integer between 68 and 65535, not 70000",
        id="mtu-range",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}}
          links:
            - type: macvlan # <-
              endpoints: ["r1:eth1", "host:enp0s3"]
        """,
        "topology.links[0].type",
        "link type 'macvlan' is not supported; use veth",
        id="link-type-unsupported",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - type: veth
              endpoints:
                - {node: r1, interface: eth1}
                - {node: r2} # <-
        """,
        "topology.links[0].endpoints[1].interface",
        "missing required key 'interface'",
        id="extended-endpoint-missing-interface",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - type: veth
              endpoints:
                - {node: r1, interface: eth1}
                - node: r2
                  interface: eth1
                  iface: eth2 # <-
        """,
        "topology.links[0].endpoints[1].iface",
        "unknown key 'iface'",
        id="extended-endpoint-unknown-key",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes: {r1: {kind: linux}, r2: {kind: linux}}
          links:
            - endpoints:
                - {node: r1, interface: eth1} # <-
                - r2:eth1
        """,
        "topology.links[0].endpoints[0]",
        "endpoint must be a 'node:interface' string, not a mapping",
        id="extended-endpoint-without-type",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1: {kind: linux}
            r1: {kind: linux} # <-
        """,
        "topology.nodes.r1",
        "duplicate key 'r1' (first at line 4)",
        id="duplicate-yaml-key",
    ),
    pytest.param(
        """\
        name: t
        topology:
          nodes:
            r1: {kind: linux
          links: [] # <-
        """,
        "",
        "invalid YAML",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "fragment"), RULES)
def test_every_rule_names_key_path_and_line(tmp_path: Path, text: str, key_path: str, fragment: str) -> None:
    path = write(tmp_path, text)
    found = [(p.key_path, p.line) for p in problems_of(path) if fragment in p.message]
    assert found == [(key_path, marked_line(text))], problems_of(path)
    assert any(fragment in p.message for p in problems_of(path, strict=True))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: t
        topology:
          nodes:
            r1: {kind: linux, bind: []}
            r2: {kind: nope}
          links:
            - endpoints: ["r1:eth0", "r9:eth1"]
        """,
    )
    assert [(p.key_path, p.line) for p in problems_of(path)] == [
        ("topology.nodes.r1.bind", 4),
        ("topology.nodes.r2.kind", 5),
        ("topology.links[0].endpoints[0]", 7),
        ("topology.links[0].endpoints[1]", 7),
    ]


def test_problem_and_error_text(tmp_path: Path) -> None:
    located = Problem("lab.clab.yml", "topology.nodes.r1", 4, "boom")
    assert str(located) == "lab.clab.yml:4: topology.nodes.r1: boom"
    assert str(Problem("lab.clab.yml", "", None, "empty")) == "lab.clab.yml: empty"
    error = TopologyError([located, located])
    assert str(error) == f"{located}\n{located}"
    assert pickle.loads(pickle.dumps(error)).problems == error.problems  # noqa: S301 - our own bytes


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    (missing,) = problems_of(tmp_path / "missing.clab.yml")
    assert (missing.key_path, missing.line) == ("", None)
    assert "cannot read" in missing.message
    (empty,) = problems_of(write(tmp_path, "# nothing\n"))
    assert (empty.line, empty.message.startswith("the file is empty")) == (None, True)


# -------------------------------------------------------------------------- random topologies

NODE_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}", fullmatch=True)
CONTAINER_KINDS = ("linux", "frr", "srl", "ceos")
LABEL_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " ._-:/", max_size=12)


@st.composite
def lab_specs(draw: st.DrawFn, kinds: tuple[str, ...] = (*CONTAINER_KINDS, "bridge")) -> dict[str, Any]:
    """A random valid lab as plain data: nodes with values, links with fresh eth1.. interfaces."""
    names = draw(st.lists(NODE_NAMES, min_size=1, max_size=6, unique=True))
    nodes = {name: draw(node_specs(kinds)) for name in names}
    next_interface = dict.fromkeys(names, 1)
    links = []
    for a, b in draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=8)):
        ends = []
        for name in (a, b):
            ends.append((name, f"eth{next_interface[name]}"))
            next_interface[name] += 1
        links.append(
            {"ends": ends, "mtu": draw(st.none() | st.integers(68, 65535)), "extended": draw(st.booleans())}
        )
    return {"name": draw(NODE_NAMES), "nodes": nodes, "links": links}


def node_specs(kinds: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "kind": st.sampled_from(kinds),
            "image": st.none() | st.sampled_from(["alpine:3.19", "quay.io/frrouting/frr:9.1.0", "bird:2"]),
            "labels": st.dictionaries(st.sampled_from(["fabric.role", "fabric.site", "team"]), LABEL_TEXT),
            "exec": st.lists(LABEL_TEXT.filter(str.strip), max_size=3),
            "binds": st.lists(
                st.tuples(st.sampled_from(["cfg", "../x", "/abs/dir"]), st.booleans()), max_size=3
            ),
        }
    )


def to_yaml(spec: dict[str, Any]) -> str:
    nodes = {}
    for name, node in spec["nodes"].items():
        binds = [
            f"{source}/{i}:/mnt/{i}" + (":ro" if ro else "") for i, (source, ro) in enumerate(node["binds"])
        ]
        values = {"kind": node["kind"], "image": node["image"], "labels": node["labels"]}
        values |= {"exec": node["exec"], "binds": binds}
        nodes[name] = {key: value for key, value in values.items() if value}
    links = []
    for link in spec["links"]:
        if link["extended"]:
            item: dict[str, Any] = {
                "type": "veth",
                "endpoints": [{"node": node, "interface": iface} for node, iface in link["ends"]],
            }
        else:
            item = {"endpoints": [f"{node}:{iface}" for node, iface in link["ends"]]}
        if link["mtu"] is not None:
            item["mtu"] = link["mtu"]
        links.append(item)
    return yaml.safe_dump(
        {"name": spec["name"], "topology": {"nodes": nodes, "links": links}}, sort_keys=False
    )


def expected_model(spec: dict[str, Any], source: Path) -> Topology:
    directory = source.parent
    nodes = tuple(
        Node(
            name,
            node["kind"],
            node["image"],
            tuple(
                Bind((directory / f"{src}/{i}").resolve(), f"/mnt/{i}", ro)
                for i, (src, ro) in enumerate(node["binds"])
            ),
            tuple(node["exec"]),
            node["labels"],
            {},
            directory,
        )
        for name, node in spec["nodes"].items()
    )
    links = tuple(
        Link(Endpoint(*link["ends"][0]), Endpoint(*link["ends"][1]), link["mtu"]) for link in spec["links"]
    )
    return Topology(spec["name"], None, source, directory, nodes, links)


def load_text(text: str) -> tuple[Path, Topology | tuple[Problem, ...]]:
    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary).resolve() / "random.clab.yml"
        path.write_text(text, encoding="utf-8")
        try:
            return path, load_topology(path)
        except TopologyError as error:
            return path, error.problems


@settings(max_examples=150, deadline=None)
@given(lab_specs())
def test_random_valid_labs_round_trip(spec: dict[str, Any]) -> None:
    path, loaded = load_text(to_yaml(spec))
    assert loaded == expected_model(spec, path)


@st.composite
def corrupted_labs(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A valid lab with one link broken, plus the key path and message the break must produce."""
    spec = draw(lab_specs(kinds=CONTAINER_KINDS).filter(lambda spec: spec["links"]))
    index = draw(st.integers(0, len(spec["links"]) - 1))
    side = draw(st.integers(0, 1))
    ends = spec["links"][index]["ends"]
    node, interface = ends[side]
    path = f"topology.links[{index}].endpoints[{side}]"
    match draw(st.sampled_from(["eth0", "unknown-node", "reused-interface"])):
        case "eth0":
            ends[side] = (node, "eth0")
            return spec, path, "eth0 is reserved for the management network"
        case "unknown-node":
            ends[side] = ("a-node-name-over-20-chars", interface)  # too long to be a real node
            return spec, path, "node 'a-node-name-over-20-chars' is not defined"
        case _:
            other = draw(st.sampled_from(sorted(spec["nodes"])))
            spec["links"].append(
                {"ends": [(node, interface), (other, "eth99")], "mtu": None, "extended": False}
            )
            reused = f"topology.links[{len(spec['links']) - 1}].endpoints[0]"
            return spec, reused, f"interface {node}:{interface} is already used by topology.links[{index}]"


@settings(max_examples=150, deadline=None)
@given(corrupted_labs())
def test_random_corruption_is_reported(case: tuple[dict[str, Any], str, str]) -> None:
    spec, key_path, fragment = case
    _, loaded = load_text(to_yaml(spec))
    assert isinstance(loaded, tuple), "a corrupted lab loaded without problems"
    assert any(p.key_path == key_path and fragment in p.message for p in loaded), loaded


def test_bridges_are_the_only_kinds_with_a_free_eth0() -> None:
    # The corruption test relies on every kind it draws being a container.
    assert not NON_CONTAINER_KINDS & set(CONTAINER_KINDS)


# -------------------------------------------------------------------------------- the repo's labs


@pytest.mark.parametrize("lab_file", LAB_FILES, ids=[path.name for path in LAB_FILES])
def test_repo_labs_are_valid_containerlab_files(lab_file: Path) -> None:
    assert check_containerlab(lab_file) == ()
