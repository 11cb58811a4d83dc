"""Anycast services on LXD instances: the `user.fabric.anycast.*` key scheme.

    user.fabric.anycast.<service>=true|false       join (or, false, leave) a service
    user.fabric.anycast.<service>.<setting>=VALUE  define the service, and join it

`<setting>` is a key path of a `services:` entry in fabricd.yaml, dots for nesting, minus `name`
and `backends` (the key names the service; its backends are the instances of the project that
define or join it):

    user.fabric.anycast.dns.addresses=10.250.0.53, 2001:db8:250::53
    user.fabric.anycast.dns.check.type=dns
    user.fabric.anycast.dns.check.query=dns.fabric.internal
    user.fabric.anycast.dns.med=20

Lists (addresses, communities, degraded_communities, check.status) are separated by commas or
blanks; `check.command` is split as a shell would split it, but never run by a shell;
`check.send`, `check.expect`, `check.query` and `check.path` are text taken exactly as written,
spaces included. Other values are read as YAML scalars, so numbers and true/false mean what they
mean in the file.

The settings are read by the config section's own parser (`fabricd.config.sections.services`),
so the rules and messages are the file's, with the key as the path. Whatever is wrong refuses
that instance for that service, with the key and the reason; nothing here raises.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fabricd.config.model import BackendSelector, ServiceConfig
from fabricd.config.reader import Context, Invalid, Value
from fabricd.config.sections.services import INSTANCE_SERVICE_KEYS, service_body
from fabricd.lxd.booleans import lxd_bool
from fabricd.routes.policy import shown

PREFIX = "user.fabric.anycast."
MAX_KEYS = 64  # per instance: more is junk, not a service definition
MAX_VALUE = 4096
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SETTING = re.compile(r"[a-z_]+(?:\.[a-z_]+)*")
_LISTS = frozenset({"addresses", "communities", "degraded_communities", "check.status"})
# Text taken exactly as written, spaces included: a payload may need them, and `null` or `true`
# is a name to ask for, not a YAML value (the file's text keys take any scalar as written too).
_TEXT = frozenset({"check.send", "check.expect", "check.query", "check.path"})
_SPLIT = re.compile(r"[\s,]+")
_MARK = yaml.Mark("instance", 0, 0, 0, "", 0)
# YAML's own reading of a plain scalar (int, float, bool, null or str), as in the file.
_resolve: Callable[[type[Node], str, tuple[bool, bool]], str] = yaml.resolver.Resolver().resolve
_Tree = dict[str, "_Tree | Node"]


@dataclass(frozen=True, slots=True)
class InstanceAnycast:
    """What one instance's anycast keys say, per service name."""

    joins: Mapping[str, bool] = field(default_factory=dict)  # user.fabric.anycast.<service>
    defines: Mapping[str, ServiceConfig] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)  # service (or the bad name) -> why

    def member(self, service: str) -> bool | None:
        """True: joins or defines it; False: opted out; None: says nothing about it."""
        joined = self.joins.get(service)
        if joined is not None:
            return joined
        return True if service in self.defines else None


EMPTY = InstanceAnycast()


def read_instance(project: str, config: Mapping[str, str]) -> InstanceAnycast:
    """Read an instance's `user.fabric.anycast.*` keys; `config` may hold any other keys too."""
    keys = {k: v for k, v in config.items() if k.startswith(PREFIX)}
    if not keys:
        return EMPTY
    if len(keys) > MAX_KEYS:
        return InstanceAnycast(refused={"*": f"{len(keys)} {PREFIX}* keys, more than {MAX_KEYS}"})
    joins: dict[str, bool] = {}
    settings: dict[str, dict[str, str]] = {}
    refused: dict[str, str] = {}
    for key in sorted(keys):
        name, _, setting = key[len(PREFIX) :].partition(".")
        value = keys[key]
        if not _NAME.fullmatch(name):
            refused.setdefault(shown(name), f"{shown(key)}: '{shown(name)}' is not a service name")
        elif not setting:
            joined = lxd_bool(value)
            if joined is None:
                refused.setdefault(name, f"{key}: expected true or false, got '{shown(value)}'")
            else:
                joins[name] = joined
        elif not _SETTING.fullmatch(setting):
            refused.setdefault(name, f"{shown(key)}: not a setting")
        elif len(value) > MAX_VALUE:
            refused.setdefault(name, f"{key}: longer than {MAX_VALUE} characters")
        else:
            settings.setdefault(name, {})[setting] = value
    defines: dict[str, ServiceConfig] = {}
    for name, values in settings.items():
        if name in refused or joins.get(name) is False:
            continue  # opted out: the definition is not read at all
        service = _define(project, name, values)
        if isinstance(service, str):
            refused[name] = service
        else:
            defines[name] = service
    return InstanceAnycast(joins, defines, refused)


def _define(project: str, name: str, values: Mapping[str, str]) -> ServiceConfig | str:
    root = f"{PREFIX}{name}"
    node = _tree(values, root)
    if isinstance(node, str):
        return node
    ctx = Context("instance")
    try:
        m = Value(ctx, root, node).mapping(INSTANCE_SERVICE_KEYS)
        return service_body(m, name, BackendSelector(project=project, key=True))
    except Invalid:
        pass
    if not ctx.problems:  # service_body reports before it raises; never leave an empty reason
        return f"{root}: not a valid service definition"
    return "; ".join(f"{p.key_path}: {p.message}" for p in ctx.problems)


def _tree(values: Mapping[str, str], root: str) -> MappingNode | str:
    """The settings as the YAML mapping the file would hold, or why they cannot be one."""
    tree: _Tree = {}
    for setting in sorted(values):
        *parents, last = setting.split(".")
        here = tree
        for step in parents:
            child = here.setdefault(step, {})
            if not isinstance(child, dict):
                return f"{root}.{setting}: {root}.{'.'.join(parents)} is set as a value too"
            here = child
        if isinstance(here.get(last), dict):
            return f"{root}.{setting}: is also a group of keys"
        node = _value_node(setting, values[setting])
        if isinstance(node, str):
            return f"{root}.{setting}: {node}"
        here[last] = node
    return _mapping(tree)


def _mapping(tree: _Tree) -> MappingNode:
    pairs: list[tuple[Node, Node]] = []
    for key, value in tree.items():
        node = _mapping(value) if isinstance(value, dict) else value
        pairs.append((_scalar(key, str_tag=True), node))
    return MappingNode("tag:yaml.org,2002:map", pairs, _MARK, _MARK)


def _value_node(setting: str, text: str) -> Node | str:
    if setting == "check.command":
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            return f"cannot split the command: {exc}"
        return SequenceNode("tag:yaml.org,2002:seq", [_scalar(a, str_tag=True) for a in argv], _MARK, _MARK)
    if setting in _TEXT:
        return _scalar(text, str_tag=True)
    if setting in _LISTS:
        items = [item for item in _SPLIT.split(text.strip()) if item]
        return SequenceNode("tag:yaml.org,2002:seq", [_scalar(i) for i in items], _MARK, _MARK)
    return _scalar(text.strip())


def _scalar(text: str, *, str_tag: bool = False) -> ScalarNode:
    tag = "tag:yaml.org,2002:str" if str_tag else _resolve(ScalarNode, text, (True, False))
    return ScalarNode(tag, text, _MARK, _MARK)
