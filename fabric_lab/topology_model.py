"""The containerlab topology model: frozen values a validated topology file is turned into.

Also the naming rules the model relies on: lab and node names become network namespace names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

# Lab and node names end up in network namespace names (fl-<lab>-<node>).
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LENGTH: Final = 20
TRUE_WORDS: Final = ("true", "yes", "1")
FALSE_WORDS: Final = ("false", "no", "0")
BIND_OPTIONS: Final = frozenset({"ro", "rw", "z", "Z"})


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
        problem = name_problem(value)
        if problem:
            raise ValueError(f"{what} name {value!r} {problem}")
    return f"fl-{lab_name}-{node_name}"


def _host_path(directory: Path, text: str) -> Path:
    return (directory / Path(text).expanduser()).resolve()


def name_problem(name: str) -> str | None:
    """Why a lab or node name cannot be part of a namespace name, or None when it can."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return f"must be 1-{MAX_NAME_LENGTH} characters (it is part of a network namespace name)"
    if not NAME_PATTERN.match(name):
        return "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
    return None
