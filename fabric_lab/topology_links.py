"""Containerlab's link rules: veth links between two existing node interfaces, each used once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, NamedTuple

from fabric_lab.topology_document import YamlValue
from fabric_lab.topology_fields import FieldChecker, describe, did_you_mean
from fabric_lab.topology_model import Endpoint, Link, Node
from fabric_lab.topology_nodes import NON_CONTAINER_KINDS
from fabricd.yaml_lines import item_path, key_path

IFNAME_MAX: Final = 15  # IFNAMSIZ - 1
MTU_MIN: Final = 68
MTU_MAX: Final = 65535
LINK_KEYS: Final = ("type", "endpoints", "vars", "mtu", "labels")
EXTENDED_ENDPOINT_KEYS: Final = ("node", "interface", "mac")
BRIEF_ENDPOINT: Final = re.compile(r"^\S+:\S+$")


def _ifname_problem(name: str) -> str | None:
    if not 1 <= len(name) <= IFNAME_MAX:
        return f"interface name {name!r} must be 1-{IFNAME_MAX} characters"
    if name in (".", "..") or any(char in "/:" or char.isspace() for char in name):
        return f"interface name {name!r} is not a valid Linux name (no '/', ':' or whitespace)"
    return None


class _EndpointAt(NamedTuple):
    """An endpoint and where the file gives it."""

    endpoint: Endpoint
    path: str
    line: int


class LinkChecker(FieldChecker):
    """Checks topology.links against the nodes and builds the links."""

    def links(self, y: YamlValue | None, nodes: Mapping[str, Node | None]) -> list[Link]:
        if y is None:
            return []
        if not isinstance(y.value, list):
            self.report("topology.links", y.line, f"must be a list, not {describe(y.value)}")
            return []
        used: dict[Endpoint, str] = {}
        links = []
        for index, item in enumerate(y.value):
            link = self.link(item, item_path("topology.links", index), nodes, used)
            if link is not None:
                links.append(link)
        return links

    def link(
        self, y: YamlValue, path: str, nodes: Mapping[str, Node | None], used: dict[Endpoint, str]
    ) -> Link | None:
        entries = self.mapping(y, path)
        if entries is None:
            return None
        self.known_keys(entries, LINK_KEYS, path)
        link_type = self.string(entries, "type", path)
        if link_type is not None and link_type != "veth":
            message = f"link type {link_type!r} is not supported; use veth"
            self.report(key_path(path, "type"), entries["type"].line, message)
            return None
        mtu = self.integer(entries, "mtu", path, MTU_MIN, MTU_MAX)
        if "vars" in entries:
            self.mapping(entries["vars"], key_path(path, "vars"))
        self.string_map(entries, "labels", path)
        ends = self.endpoints(entries, path, y.line, extended=link_type is not None)
        if ends is None:
            return None
        valid = [self.endpoint_ok(at, nodes) for at in ends]  # a list, so both ends are checked
        if ends[0].endpoint == ends[1].endpoint:
            message = f"link connects {ends[0].endpoint} to itself"
            self.report(key_path(path, "endpoints"), ends[1].line, message)
            return None
        for at in ends:
            if at.endpoint in used:
                message = f"interface {at.endpoint} is already used by {used[at.endpoint]}"
                self.report(at.path, at.line, message)
                valid.append(False)
            used.setdefault(at.endpoint, path)
        return Link(ends[0].endpoint, ends[1].endpoint, mtu) if all(valid) else None

    def endpoints(
        self, entries: dict[str, YamlValue], path: str, line: int, *, extended: bool
    ) -> list[_EndpointAt] | None:
        y = self.required(entries, "endpoints", path, line)
        if y is None:
            return None
        path = key_path(path, "endpoints")
        if not isinstance(y.value, list) or len(y.value) != 2:
            count = f"{len(y.value)}" if isinstance(y.value, list) else describe(y.value)
            self.report(path, y.line, f"must list exactly 2 endpoints, not {count}")
            return None
        parse = self.extended_endpoint if extended else self.brief_endpoint
        ends = [parse(item, item_path(path, index)) for index, item in enumerate(y.value)]
        return [end for end in ends if end is not None] if all(ends) else None

    def brief_endpoint(self, y: YamlValue, path: str) -> _EndpointAt | None:
        if not isinstance(y.value, str) or not BRIEF_ENDPOINT.match(y.value):
            shown = repr(y.value) if isinstance(y.value, str) else describe(y.value)
            self.report(path, y.line, f"endpoint must be a 'node:interface' string, not {shown}")
            return None
        node, interface = y.value.split(":", 1)
        return _EndpointAt(Endpoint(node, interface), path, y.line)

    def extended_endpoint(self, y: YamlValue, path: str) -> _EndpointAt | None:
        entries = self.mapping(y, path)
        if entries is None:
            return None
        self.known_keys(entries, EXTENDED_ENDPOINT_KEYS, path)
        found = [self.required(entries, key, path, y.line) for key in ("node", "interface")]
        node, interface = (self.string(entries, key, path) for key in ("node", "interface"))
        if not all(found) or node is None or interface is None:
            return None
        return _EndpointAt(Endpoint(node, interface), path, y.line)

    def endpoint_ok(self, at: _EndpointAt, nodes: Mapping[str, Node | None]) -> bool:
        endpoint, ok = at.endpoint, True
        if endpoint.node not in nodes:
            message = f"node {endpoint.node!r} is not defined in topology.nodes"
            self.report(at.path, at.line, message + did_you_mean(endpoint.node, nodes))
            ok = False
        problem = _ifname_problem(endpoint.interface)
        if problem:
            self.report(at.path, at.line, problem)
            return False
        node = nodes.get(endpoint.node)
        if endpoint.interface == "eth0" and (node is None or node.kind not in NON_CONTAINER_KINDS):
            message = f"{endpoint}: eth0 is reserved for the management network; use eth1 or up"
            self.report(at.path, at.line, message)
            return False
        return ok
