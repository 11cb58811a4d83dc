"""Containerlab topology files (``labs/*.clab.yml``): a frozen model and a validator with line numbers.

The same file must run under real containerlab and under ``fabric-lab`` (network namespaces), so the
validator enforces containerlab's schema plus what the namespace runner needs (safe names, veth links).

Problem key paths are dotted from the document root, list indices in brackets:
``topology.nodes.r1.binds[1]``, ``topology.links[2].endpoints[0]``. Line numbers are 1-based and point
at the key (for mapping entries) or the item (for list entries).
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

import yaml

__all__ = [
    "CONTAINERLAB_KINDS",
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

CONTAINERLAB_KINDS: Final = frozenset(
    {
        "srl", "nokia_srlinux", "ceos", "arista_ceos", "crpd", "juniper_crpd", "sonic-vs", "sonic-vm",
        "vr-sros", "nokia_sros", "vr-nokia_sros", "vr-vmx", "vr-juniper_vmx", "juniper_vmx", "vr-vqfx",
        "juniper_vqfx", "vr-vsrx", "juniper_vsrx", "juniper_vjunosrouter", "juniper_vjunosswitch",
        "juniper_vjunosevolved", "vr-xrv", "cisco_xrv", "vr-xrv9k", "cisco_xrv9k", "vr-veos",
        "arista_veos", "vr-csr", "cisco_csr1000v", "vr-pan", "paloalto_panos", "vr-ros", "mikrotik_ros",
        "vr-n9kv", "cisco_n9kv", "cisco_ftdv", "dell_ftosv", "dell_sonic", "vr-aoscx", "aruba_aoscx",
        "linux", "bridge", "ovs-bridge", "border0", "host", "keysight_ixia-c-one", "ipinfusion_ocnos",
        "checkpoint_cloudguard", "ext-container", "xrd", "rare", "cisco_xrd", "c8000", "cisco_c8000",
        "cisco_c8000v", "cisco_cat9kv", "cisco_iol", "cvx", "cumulus_cvx", "openbsd", "freebsd",
        "generic_vm", "fortinet_fortigate", "k8s-kind",
    }
)  # fmt: skip
# Our runner's extension: an FRR router without containerlab's linux + image convention.
RUNNER_KINDS: Final = CONTAINERLAB_KINDS | {"frr"}
FRR_KIND_MESSAGE: Final = "'frr' is not a containerlab kind; use kind: linux with an frrouting/frr image"
# Kinds that are not containers, so they have no management eth0 to protect.
NON_CONTAINER_KINDS: Final = frozenset({"bridge", "ovs-bridge", "host"})

# Lab and node names end up in network namespace names (fl-<lab>-<node>).
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LENGTH: Final = 20
TRUE_WORDS: Final = ("true", "yes", "1")
FALSE_WORDS: Final = ("false", "no", "0")
IFNAME_MAX: Final = 15  # IFNAMSIZ - 1
MTU_MIN: Final = 68
MTU_MAX: Final = 65535

ROOT_KEYS: Final = ("name", "prefix", "mgmt", "settings", "topology")
TOPOLOGY_KEYS: Final = ("nodes", "kinds", "defaults", "groups", "links")
NODE_CONFIG_KEYS: Final = (
    "image", "image-pull-policy", "kind", "license", "type", "group", "startup-config", "startup-delay",
    "enforce-startup-config", "suppress-startup-config", "auto-remove", "restart-policy", "exec", "binds",
    "ports", "env", "env-files", "user", "entrypoint", "cmd", "publish", "labels", "runtime", "mgmt-ipv4",
    "mgmt-ipv6", "network-mode", "cpu", "memory", "cpu-set", "sandbox", "kernel", "extras", "config",
    "stages", "dns", "certificate", "healthcheck", "wait-for", "aliases", "devices", "cap-add", "shm-size",
    "sysctls", "components",
)  # fmt: skip
OTHER_STRING_KEYS: Final = ("cmd", "entrypoint", "type", "mgmt-ipv4", "mgmt-ipv6")
OTHER_STRING_LIST_KEYS: Final = ("ports", "publish", "wait-for", "env-files")
INTEGER_KEYS: Final = ("startup-delay", "cpu")
BOOLEAN_KEYS: Final = ("enforce-startup-config", "suppress-startup-config", "auto-remove")
LINK_KEYS: Final = ("type", "endpoints", "vars", "mtu", "labels")
EXTENDED_ENDPOINT_KEYS: Final = ("node", "interface", "mac")
BRIEF_ENDPOINT: Final = re.compile(r"^\S+:\S+$")
BIND_OPTIONS: Final = frozenset({"ro", "rw", "z", "Z"})


# --------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a topology file, located by key path and line."""

    file: str
    key_path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key_path}: {self.message}" if self.key_path else f"{where}: {self.message}"


class TopologyError(Exception):
    """A topology file failed validation; carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))

    def __reduce__(self) -> tuple[type[TopologyError], tuple[tuple[Problem, ...]]]:
        # The default pickling would call __init__ with the message string.
        return type(self), (self.problems,)


@dataclass(frozen=True, slots=True)
class Bind:
    source: Path  # absolute and resolved on the host
    target: str  # absolute path inside the node
    read_only: bool


def _frozen_map(items: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    kind: str
    image: str | None = None
    binds: tuple[Bind, ...] = ()
    exec: tuple[str, ...] = ()
    # Read-only views; excluded from the hash because mapping proxies are unhashable.
    labels: Mapping[str, str] = field(default_factory=_frozen_map, hash=False)
    env: Mapping[str, str] = field(default_factory=_frozen_map, hash=False)
    directory: Path = Path()  # the topology file's directory, for relative label paths

    def __post_init__(self) -> None:
        # Copy so a caller's dict cannot change a frozen node behind its back.
        object.__setattr__(self, "labels", _frozen_map(self.labels))
        object.__setattr__(self, "env", _frozen_map(self.env))
        object.__setattr__(self, "binds", tuple(self.binds))
        object.__setattr__(self, "exec", tuple(self.exec))

    @property
    def router(self) -> Literal["frr", "bird"] | None:
        if self.kind == "frr":
            return "frr"
        if self.kind != "linux" or not self.image:
            return None
        repository = image_repository(self.image)
        if "frrouting/frr" in repository or repository.rsplit("/", 1)[-1] == "frr":
            return "frr"
        if "bird" in repository:
            return "bird"
        return None

    @property
    def runs_lxd(self) -> bool:
        return self.labels.get("fabric.lxd", "").strip().lower() in TRUE_WORDS

    @property
    def agent_config(self) -> Path | None:
        value = self.labels.get("fabric.agent", "").strip()
        return _host_path(self.directory, value) if value else None


@dataclass(frozen=True, slots=True)
class Endpoint:
    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True, slots=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    prefix: str | None
    source: Path
    directory: Path
    nodes: tuple[Node, ...]  # file order
    links: tuple[Link, ...]  # file order

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(node.name for node in self.nodes) or "none"
        raise KeyError(f"lab {self.name!r} has no node {name!r} (nodes: {known})")

    def links_of(self, node_name: str) -> tuple[Link, ...]:
        self.node(node_name)  # an unknown name is a caller bug, not "no links"
        return tuple(link for link in self.links if node_name in (link.a.node, link.b.node))


# ------------------------------------------------------------------------------------ public helpers


def image_repository(image: str) -> str:
    """``quay.io/frrouting/frr:9.1@sha256:..`` -> ``quay.io/frrouting/frr`` (a registry port stays)."""
    name = image.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


def parse_bind(spec: str, directory: Path) -> Bind:
    """Parse ``src:dst[:options]``; a relative ``src`` is relative to ``directory``. ValueError if bad."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"bind {spec!r} must be 'source:target' or 'source:target:options'")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [option for option in options if option not in BIND_OPTIONS]
    if unknown:
        shown = ", ".join(map(repr, unknown))
        raise ValueError(f"bind {spec!r} has unknown option(s) {shown}; use ro, rw, z or Z")
    if {"ro", "rw"} <= set(options):
        raise ValueError(f"bind {spec!r} cannot be both ro and rw")
    if not target.startswith("/"):
        raise ValueError(f"bind target {target!r} must be an absolute path")
    return Bind(_host_path(directory, source), target, "ro" in options)


def namespace_name(lab_name: str, node_name: str) -> str:
    """The network namespace of a lab node: ``fl-{lab}-{node}``. ValueError for unsafe names."""
    for what, value in (("lab", lab_name), ("node", node_name)):
        problem = _name_problem(value)
        if problem:
            raise ValueError(f"{what} name {value!r} {problem}")
    return f"fl-{lab_name}-{node_name}"


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


# ----------------------------------------------------------------------------------- small helpers


def _host_path(directory: Path, text: str) -> Path:
    return (directory / Path(text).expanduser()).resolve()


def _name_problem(name: str) -> str | None:
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return f"must be 1-{MAX_NAME_LENGTH} characters (it is part of a network namespace name)"
    if not NAME_PATTERN.match(name):
        return "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
    return None


def _ifname_problem(name: str) -> str | None:
    if not 1 <= len(name) <= IFNAME_MAX:
        return f"interface name {name!r} must be 1-{IFNAME_MAX} characters"
    if name in (".", "..") or any(char in "/:" or char.isspace() for char in name):
        return f"interface name {name!r} is not a valid Linux name (no '/', ':' or whitespace)"
    return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _as_int(value: object) -> int | None:
    # bool is an int subclass, but `true` is not a number.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _describe(value: object) -> str:
    if value is None:
        return "null"
    # bool before int: bool is an int subclass.
    for kind, words in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return words
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


# --------------------------------------------------------------------------------- YAML with lines


@dataclass(slots=True)
class _Y:
    """A YAML value and its line: scalars constructed, mappings dict[str, _Y], sequences list[_Y]."""

    value: object
    line: int
    text: str | None = None  # a scalar's source text: keeps "1.10" as written


class _Reader:
    """Turns a composed node tree into _Y values, reporting what PyYAML lets pass (duplicate keys)."""

    def __init__(self, report: _Report) -> None:
        self._report = report
        self._constructor = yaml.constructor.SafeConstructor()
        self._open: set[int] = set()  # nodes being read, to stop on recursive aliases

    def read(self, node: yaml.Node, path: str, line: int) -> _Y:
        if id(node) in self._open:
            self._report(path, line, "recursive YAML alias")
            return _Y(None, line)
        self._open.add(id(node))
        try:
            return self._read(node, path, line)
        finally:
            self._open.discard(id(node))

    def _read(self, node: yaml.Node, path: str, line: int) -> _Y:
        if isinstance(node, yaml.MappingNode):
            return _Y(self._mapping(node, path), line)
        if isinstance(node, yaml.SequenceNode):
            items = [self.read(item, f"{path}[{i}]", _line(item)) for i, item in enumerate(node.value)]
            return _Y(items, line)
        try:
            return _Y(self._constructor.construct_object(node), line, str(node.value))
        except yaml.YAMLError as error:
            self._report(path, line, f"invalid value: {error}")
            return _Y(None, line)

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, _Y]:
        entries: dict[str, _Y] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
            elif not isinstance(key_node, yaml.ScalarNode):
                self._report(path, _line(key_node), "mapping keys must be plain scalars")
            elif str(key_node.value) in entries:
                key = str(key_node.value)
                message = f"duplicate key {key!r} (first at line {entries[key].line})"
                self._report(_join(path, key), _line(key_node), message)
            else:
                # The key's source text, not its YAML 1.1 value: containerlab reads `on:` as "on", not True.
                key = str(key_node.value)
                entries[key] = self.read(value_node, _join(path, key), _line(key_node))
        for merge in merges:
            self._merge(entries, merge, path)
        return entries

    def _merge(self, entries: dict[str, _Y], merge: yaml.Node, path: str) -> None:
        # `<<: *anchor` or `<<: [*a, *b]`; explicit keys win, then earlier merge sources.
        sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
        for source in sources:
            merged = self.read(source, path, _line(source)).value  # read() guards against recursion
            if not isinstance(merged, dict):
                self._report(path, _line(source), "'<<' must merge a mapping or a list of mappings")
                continue
            for key, value in merged.items():
                entries.setdefault(key, value)


class _Report:
    """Collects problems for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def __call__(self, key_path: str, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.file, key_path, line, message))

    def result(self) -> tuple[Problem, ...]:
        # Aliased anchors can report the same problem twice; keep one, in file order.
        unique = dict.fromkeys(self.problems)
        return tuple(sorted(unique, key=lambda problem: problem.line or 0))


# ---------------------------------------------------------------------------------------- checking


@dataclass(slots=True)
class _Section:
    """A node-config (node, group, kind or defaults) after type checks; bad values are left unset."""

    kind: str | None = None
    group: str | None = None
    image: str | None = None
    exec: tuple[str, ...] | None = None
    binds: tuple[Bind, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class _Item(NamedTuple):
    value: str
    path: str
    line: int


class _At(NamedTuple):
    endpoint: Endpoint
    path: str
    line: int


class _Checker:
    """Validates a read document and builds the model; the model is only used when nothing was reported."""

    def __init__(self, report: _Report, directory: Path, *, strict: bool) -> None:
        self.report = report
        self.directory = directory
        self.strict = strict

    # --- typed access; each reports a wrong type at the key and returns None

    def mapping(self, y: _Y, path: str) -> dict[str, _Y] | None:
        if isinstance(y.value, dict):
            return y.value
        self.report(path, y.line, f"must be a mapping, not {_describe(y.value)}")
        return None

    def known_keys(self, entries: dict[str, _Y], allowed: Collection[str], path: str) -> None:
        for key, y in entries.items():
            if key not in allowed:
                self.report(_join(path, key), y.line, f"unknown key {key!r}{_did_you_mean(key, allowed)}")

    def required(self, entries: dict[str, _Y], key: str, path: str, line: int) -> _Y | None:
        if key not in entries:
            self.report(_join(path, key), line, f"missing required key {key!r}")
        return entries.get(key)

    def string(self, entries: dict[str, _Y], key: str, parent: str) -> str | None:
        y = entries.get(key)
        if y is None:
            return None
        if isinstance(y.value, str):
            return y.value
        self.report(_join(parent, key), y.line, f"must be a string, not {_describe(y.value)}")
        return None

    def string_items(self, entries: dict[str, _Y], key: str, parent: str) -> list[_Item] | None:
        """Each string item of a list of strings, with where it is."""
        y, path = entries.get(key), _join(parent, key)
        if y is None:
            return None
        if not isinstance(y.value, list):
            self.report(path, y.line, f"must be a list of strings, not {_describe(y.value)}")
            return None
        items = []
        for index, item in enumerate(y.value):
            if isinstance(item.value, str):
                items.append(_Item(item.value, f"{path}[{index}]", item.line))
            else:
                self.report(f"{path}[{index}]", item.line, f"must be a string, not {_describe(item.value)}")
        return items

    def string_list(self, entries: dict[str, _Y], key: str, parent: str) -> tuple[str, ...] | None:
        items = self.string_items(entries, key, parent)
        return None if items is None else tuple(item.value for item in items)

    def string_map(self, entries: dict[str, _Y], key: str, parent: str) -> dict[str, str]:
        y, path = entries.get(key), _join(parent, key)
        values = self.mapping(y, path) if y is not None else {}
        result = {}
        for name, item in (values or {}).items():
            number = isinstance(item.value, int | float) and not isinstance(item.value, bool)
            if isinstance(item.value, str) or number:
                result[name] = item.text if item.text is not None else str(item.value)
            else:
                hint = f'; quote it: "{item.text}"' if isinstance(item.value, bool) else ""
                message = f"must be a string or number, not {_describe(item.value)}{hint}"
                self.report(_join(path, name), item.line, message)
        return result

    def integer(
        self, entries: dict[str, _Y], key: str, parent: str, minimum: int = 0, maximum: int | None = None
    ) -> int | None:
        y = entries.get(key)
        if y is None:
            return None
        number = _as_int(y.value)
        if number is not None and number >= minimum and (maximum is None or number <= maximum):
            return number
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        shown = y.text or _describe(y.value)
        self.report(_join(parent, key), y.line, f"must be an integer {bounds}, not {shown}")
        return None

    def boolean(self, entries: dict[str, _Y], key: str, parent: str) -> None:
        y = entries.get(key)
        if y is not None and not isinstance(y.value, bool):
            self.report(_join(parent, key), y.line, f"must be true or false, not {_describe(y.value)}")

    # --- the document

    def root(self, y: _Y) -> tuple[str, str | None, list[Node], list[Link]] | None:
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

    def check_name(self, name: str, path: str, line: int, what: str) -> None:
        problem = _name_problem(name)
        if problem:
            self.report(path, line, f"{what} {name!r} {problem}")

    def check_kind(self, kind: str, path: str, line: int) -> None:
        if kind == "frr":
            if self.strict:
                self.report(path, line, FRR_KIND_MESSAGE)
        elif kind not in CONTAINERLAB_KINDS:
            choices = CONTAINERLAB_KINDS if self.strict else RUNNER_KINDS
            self.report(path, line, f"unknown kind {kind!r}{_did_you_mean(kind, choices)}")

    def topology(self, y: _Y) -> tuple[list[Node], list[Link]]:
        path = "topology"
        entries = self.mapping(y, path)
        if entries is None:
            return [], []
        self.known_keys(entries, TOPOLOGY_KEYS, path)
        defaults_y = entries.get("defaults")
        defaults = self.section(defaults_y, "topology.defaults") if defaults_y is not None else _Section()
        kinds = self.named_sections(entries.get("kinds"), "topology.kinds", kind_keys=True)
        groups = self.named_sections(entries.get("groups"), "topology.groups", kind_keys=False)
        nodes_y = self.required(entries, "nodes", path, y.line)
        nodes = self.nodes(nodes_y, defaults, kinds, groups) if nodes_y is not None else {}
        links = self.links(entries.get("links"), nodes)
        return [node for node in nodes.values() if node is not None], links

    def section(self, y: _Y, path: str) -> _Section:
        entries = self.mapping(y, path) if y.value is not None else {}
        if entries is None:
            return _Section()
        self.known_keys(entries, NODE_CONFIG_KEYS, path)
        section = _Section(
            kind=self.string(entries, "kind", path),
            group=self.string(entries, "group", path),
            image=self.string(entries, "image", path),
            exec=self.string_list(entries, "exec", path),
            binds=self.binds(entries, path),
            labels=self.string_map(entries, "labels", path),
            env=self.string_map(entries, "env", path),
        )
        for key in OTHER_STRING_KEYS:
            self.string(entries, key, path)
        for key in OTHER_STRING_LIST_KEYS:
            self.string_list(entries, key, path)
        for key in INTEGER_KEYS:
            self.integer(entries, key, path)
        for key in BOOLEAN_KEYS:
            self.boolean(entries, key, path)
        if section.kind is not None:
            self.check_kind(section.kind, _join(path, "kind"), entries["kind"].line)
        self.check_runner_labels(entries, path)
        return section

    def check_runner_labels(self, entries: dict[str, _Y], path: str) -> None:
        # A typo such as "ture" would silently run the node without LXD.
        labels = entries["labels"].value if "labels" in entries else None
        lxd = labels.get("fabric.lxd") if isinstance(labels, dict) else None
        if lxd is None or not isinstance(lxd.value, str):
            return
        if lxd.value.strip().lower() not in TRUE_WORDS + FALSE_WORDS:
            message = f"must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, not {lxd.value!r}"
            self.report(_join(path, "labels.fabric.lxd"), lxd.line, message)

    def binds(self, entries: dict[str, _Y], parent: str) -> tuple[Bind, ...]:
        binds: list[Bind] = []
        seen_specs: dict[str, str] = {}
        seen_targets: dict[str, str] = {}
        for spec, path, line in self.string_items(entries, "binds", parent) or []:
            if spec in seen_specs:
                self.report(path, line, f"duplicate bind {spec!r} (also {seen_specs[spec]})")
                continue
            seen_specs[spec] = path
            try:
                bind = parse_bind(spec, self.directory)
            except ValueError as error:
                self.report(path, line, str(error))
                continue
            target = posixpath.normpath(bind.target)
            if target in seen_targets:
                self.report(path, line, f"target {bind.target!r} is already bound by {seen_targets[target]}")
                continue
            seen_targets[target] = path
            binds.append(bind)
        return tuple(binds)

    def named_sections(self, y: _Y | None, path: str, *, kind_keys: bool) -> dict[str, _Section]:
        entries = self.mapping(y, path) if y is not None else {}
        sections = {}
        for name, item in (entries or {}).items():
            if kind_keys:
                self.check_kind(name, _join(path, name), item.line)
            sections[name] = self.section(item, _join(path, name))
        return sections

    def nodes(
        self, y: _Y, defaults: _Section, kinds: dict[str, _Section], groups: dict[str, _Section]
    ) -> dict[str, Node | None]:
        """Every node name (so links can refer to it) and its model, None where it cannot be built."""
        path = "topology.nodes"
        entries = self.mapping(y, path) or {}
        nodes: dict[str, Node | None] = {}
        for name, item in entries.items():
            node_path = _join(path, name)
            self.check_name(name, node_path, item.line, "node name")
            section = self.section(item, node_path)
            group = None
            if section.group is not None:
                group = groups.get(section.group)
                if group is None:
                    known = _did_you_mean(section.group, groups)
                    message = f"group {section.group!r} is not defined in topology.groups{known}"
                    self.report(_join(node_path, "group"), self.line_of(item, "group"), message)
            nodes[name] = self.resolve(name, node_path, item.line, (section, group, defaults), kinds)
        return nodes

    @staticmethod
    def line_of(y: _Y, key: str) -> int:
        child = y.value.get(key) if isinstance(y.value, dict) else None
        return child.line if child is not None else y.line

    def resolve(
        self,
        name: str,
        path: str,
        line: int,
        layers: tuple[_Section, _Section | None, _Section],
        kinds: dict[str, _Section],
    ) -> Node | None:
        """Merge node > group > kind > defaults, as containerlab does; the kind comes from the others."""
        node, group, defaults = layers
        kind = next((layer.kind for layer in layers if layer is not None and layer.kind), None)
        if kind is None:
            self.report(path, line, "no kind: set 'kind' on the node, its group or topology.defaults")
            return None
        ordered = [layer for layer in (node, group, kinds.get(kind), defaults) if layer is not None]
        image = next((layer.image for layer in ordered if layer.image is not None), None)
        exec_ = next((layer.exec for layer in ordered if layer.exec is not None), ())
        binds: dict[str, Bind] = {}
        labels: dict[str, str] = {}
        env: dict[str, str] = {}
        for layer in reversed(ordered):  # lowest first, so higher layers overwrite
            binds.update((posixpath.normpath(bind.target), bind) for bind in layer.binds)
            labels.update(layer.labels)
            env.update(layer.env)
        return Node(name, kind, image, tuple(binds.values()), exec_, labels, env, self.directory)

    # --- links

    def links(self, y: _Y | None, nodes: Mapping[str, Node | None]) -> list[Link]:
        if y is None:
            return []
        if not isinstance(y.value, list):
            self.report("topology.links", y.line, f"must be a list, not {_describe(y.value)}")
            return []
        used: dict[Endpoint, str] = {}
        links = []
        for index, item in enumerate(y.value):
            link = self.link(item, f"topology.links[{index}]", nodes, used)
            if link is not None:
                links.append(link)
        return links

    def link(
        self, y: _Y, path: str, nodes: Mapping[str, Node | None], used: dict[Endpoint, str]
    ) -> Link | None:
        entries = self.mapping(y, path)
        if entries is None:
            return None
        self.known_keys(entries, LINK_KEYS, path)
        link_type = self.string(entries, "type", path)
        if link_type is not None and link_type != "veth":
            message = f"link type {link_type!r} is not supported; use veth"
            self.report(_join(path, "type"), entries["type"].line, message)
            return None
        mtu = self.integer(entries, "mtu", path, MTU_MIN, MTU_MAX)
        if "vars" in entries:
            self.mapping(entries["vars"], _join(path, "vars"))
        self.string_map(entries, "labels", path)
        ends = self.endpoints(entries, path, y.line, extended=link_type is not None)
        if ends is None:
            return None
        valid = [self.endpoint_ok(at, nodes) for at in ends]  # a list, so both ends are checked
        if ends[0].endpoint == ends[1].endpoint:
            self.report(_join(path, "endpoints"), ends[1].line, f"link connects {ends[0].endpoint} to itself")
            return None
        for at in ends:
            if at.endpoint in used:
                message = f"interface {at.endpoint} is already used by {used[at.endpoint]}"
                self.report(at.path, at.line, message)
                valid.append(False)
            used.setdefault(at.endpoint, path)
        return Link(ends[0].endpoint, ends[1].endpoint, mtu) if all(valid) else None

    def endpoints(self, entries: dict[str, _Y], path: str, line: int, *, extended: bool) -> list[_At] | None:
        y = self.required(entries, "endpoints", path, line)
        if y is None:
            return None
        path = _join(path, "endpoints")
        if not isinstance(y.value, list) or len(y.value) != 2:
            count = f"{len(y.value)}" if isinstance(y.value, list) else _describe(y.value)
            self.report(path, y.line, f"must list exactly 2 endpoints, not {count}")
            return None
        parse = self.extended_endpoint if extended else self.brief_endpoint
        ends = [parse(item, f"{path}[{index}]") for index, item in enumerate(y.value)]
        return [end for end in ends if end is not None] if all(ends) else None

    def brief_endpoint(self, y: _Y, path: str) -> _At | None:
        if not isinstance(y.value, str) or not BRIEF_ENDPOINT.match(y.value):
            shown = repr(y.value) if isinstance(y.value, str) else _describe(y.value)
            self.report(path, y.line, f"endpoint must be a 'node:interface' string, not {shown}")
            return None
        node, interface = y.value.split(":", 1)
        return _At(Endpoint(node, interface), path, y.line)

    def extended_endpoint(self, y: _Y, path: str) -> _At | None:
        entries = self.mapping(y, path)
        if entries is None:
            return None
        self.known_keys(entries, EXTENDED_ENDPOINT_KEYS, path)
        found = [self.required(entries, key, path, y.line) for key in ("node", "interface")]
        node, interface = (self.string(entries, key, path) for key in ("node", "interface"))
        if not all(found) or node is None or interface is None:
            return None
        return _At(Endpoint(node, interface), path, y.line)

    def endpoint_ok(self, at: _At, nodes: Mapping[str, Node | None]) -> bool:
        endpoint, ok = at.endpoint, True
        if endpoint.node not in nodes:
            message = f"node {endpoint.node!r} is not defined in topology.nodes"
            self.report(at.path, at.line, message + _did_you_mean(endpoint.node, nodes))
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


# ------------------------------------------------------------------------------------------ loading


def _load(path: str | Path, *, strict: bool) -> tuple[Topology | None, tuple[Problem, ...]]:
    report = _Report(str(path))
    source = Path(path).expanduser().resolve()
    document = _read_document(source, report)
    if document is None:
        return None, report.result()
    checker = _Checker(report, source.parent, strict=strict)
    parts = checker.root(document)
    problems = report.result()
    if problems or parts is None:
        return None, problems
    name, prefix, nodes, links = parts
    return Topology(name, prefix, source, source.parent, tuple(nodes), tuple(links)), ()


def _read_document(source: Path, report: _Report) -> _Y | None:
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        report("", None, f"cannot read the topology file: {error}")
        return None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        details = ", ".join(part for part in (error.context, error.problem) if part)
        report("", _line_of_mark(mark), f"invalid YAML: {details}")
        return None
    except yaml.YAMLError as error:
        report("", None, f"invalid YAML: {error}")
        return None
    if root is None:
        report("", None, "the file is empty; a topology needs 'name' and 'topology'")
        return None
    return _Reader(report).read(root, "", _line(root))


def _line_of_mark(mark: yaml.Mark | None) -> int | None:
    return None if mark is None else int(mark.line) + 1
