"""Containerlab topology files (``labs/*.clab.yml``): a frozen model and a validator with line numbers.

The same file must run under real containerlab and under ``fabric-lab`` (network namespaces), so the
validator enforces containerlab's schema plus what the namespace runner needs (safe names, veth links).

Problem key paths are dotted from the document root, list indices in brackets:
``topology.nodes.r1.binds[1]``, ``topology.links[2].endpoints[0]``. Line numbers are 1-based and point
at the key (for mapping entries) or the item (for list entries).

This module is the entry point; the parts live beside it: the model (``topology_model``), the file
read with lines (``topology_document``), typed reads (``topology_fields``) and the node and link
rules (``topology_nodes``, ``topology_links``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fabric_lab.topology_document import Report, YamlValue, read_document
from fabric_lab.topology_links import LinkChecker
from fabric_lab.topology_model import (
    Bind,
    Endpoint,
    Link,
    Node,
    Problem,
    Topology,
    TopologyError,
    image_repository,
    namespace_name,
    parse_bind,
)
from fabric_lab.topology_nodes import (
    CONTAINERLAB_KINDS,
    FRR_KIND_MESSAGE,
    NON_CONTAINER_KINDS,
    RUNNER_KINDS,
    NodeChecker,
    Section,
)

__all__ = [
    "CONTAINERLAB_KINDS",
    "FRR_KIND_MESSAGE",
    "NON_CONTAINER_KINDS",
    "RUNNER_KINDS",
    "Bind",
    "Endpoint",
    "Link",
    "Node",
    "Problem",
    "Topology",
    "TopologyError",
    "check_containerlab",
    "image_repository",
    "load_topology",
    "namespace_name",
    "parse_bind",
]

ROOT_KEYS: Final = ("name", "prefix", "mgmt", "settings", "topology")
TOPOLOGY_KEYS: Final = ("nodes", "kinds", "defaults", "groups", "links")


def load_topology(path: str | Path, *, strict: bool = False) -> Topology:
    """Load and validate a topology file; TopologyError lists every problem found.

    ``strict`` applies containerlab's rules only (rejects our ``kind: frr`` extension).
    """
    topology, problems = _load(path, strict=strict)
    if problems or topology is None:
        raise TopologyError(problems)
    return topology


def check_containerlab(path: str | Path) -> tuple[Problem, ...]:
    """Problems that would stop containerlab (and our runner) from using the file; empty = valid."""
    return _load(path, strict=True)[1]


class _Checker(NodeChecker, LinkChecker):
    """Validates a read document and builds the model; the model is only used when nothing was reported."""

    def root(self, y: YamlValue) -> tuple[str, str | None, list[Node], list[Link]] | None:
        entries = self.mapping(y, "")
        if entries is None:
            return None
        self.known_keys(entries, ROOT_KEYS, "")
        self.required(entries, "name", "", y.line)
        name = self.string(entries, "name", "")
        if name is not None:
            self.check_name(name, "name", entries["name"].line, "lab name")
        prefix = self.string(entries, "prefix", "")
        for key in ("mgmt", "settings"):
            if key in entries:
                self.mapping(entries[key], key)
        topology_y = self.required(entries, "topology", "", y.line)
        if topology_y is None:
            return None
        nodes, links = self.topology(topology_y)
        return (name or ""), prefix, nodes, links

    def topology(self, y: YamlValue) -> tuple[list[Node], list[Link]]:
        path = "topology"
        entries = self.mapping(y, path)
        if entries is None:
            return [], []
        self.known_keys(entries, TOPOLOGY_KEYS, path)
        defaults_y = entries.get("defaults")
        defaults = self.section(defaults_y, "topology.defaults") if defaults_y is not None else Section()
        kinds = self.named_sections(entries.get("kinds"), "topology.kinds", kind_keys=True)
        groups = self.named_sections(entries.get("groups"), "topology.groups", kind_keys=False)
        nodes_y = self.required(entries, "nodes", path, y.line)
        nodes = self.nodes(nodes_y, defaults, kinds, groups) if nodes_y is not None else {}
        links = self.links(entries.get("links"), nodes)
        return [node for node in nodes.values() if node is not None], links


def _load(path: str | Path, *, strict: bool) -> tuple[Topology | None, tuple[Problem, ...]]:
    report = Report(str(path))
    source = Path(path).expanduser().resolve()
    document = read_document(source, report)
    if document is None:
        return None, report.result()
    checker = _Checker(report, source.parent, strict=strict)
    parts = checker.root(document)
    problems = report.result()
    if problems or parts is None:
        return None, problems
    name, prefix, nodes, links = parts
    return Topology(name, prefix, source, source.parent, tuple(nodes), tuple(links)), ()
