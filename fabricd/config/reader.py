"""The reader the config sections are parsed with: YAML nodes read as typed values, problems collected.

A conversion that finds a bad value records a problem and raises `Invalid`; the enclosing mapping
read catches it and moves on to the next key, so one pass finds every problem. A section with any
problem is itself invalid, which lets checks that depend on it (the BGP router ID defaulting to the
host's address, say) stay quiet instead of piling follow-on errors onto the real one.

Conventions: a key whose value is null (`key:` with nothing after it) counts as absent. Text
fields take any scalar as the text written, so `password: 1234` and `name: 2001` need no quotes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fabricd.config.errors import ConfigProblem
from fabricd.config.upgrades import changed_key_message
from fabricd.yaml_lines import TAG_PREFIX, closest_match, item_path, key_path, mapping_pairs, node_line

_T = TypeVar("_T")
_D = TypeVar("_D")

_NULL_TAG = TAG_PREFIX + "null"
_STR_TAG = TAG_PREFIX + "str"


class Invalid(Exception):
    """Raised once a problem is recorded, to abandon the value being read."""


class Context:
    """The file being read and the problems found in it so far."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []

    def report(self, path: str, line: int | None, message: str) -> Invalid:
        self.problems.append(ConfigProblem(self.file, path, line, message))
        return Invalid()


def _describe(node: Node) -> str:
    """How a wrong value is shown after 'got'."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "nothing"
    text = str(node.value)
    if len(text) > 60:
        text = text[:57] + "..."
    if not node.tag.startswith(TAG_PREFIX):
        return f"{text!r} tagged {node.tag}"
    return repr(text) if node.tag == _STR_TAG else text


@dataclass(frozen=True, slots=True)
class Value:
    """One YAML node and the key path that led to it."""

    ctx: Context
    path: str
    node: Node

    @property
    def line(self) -> int:
        return node_line(self.node)

    def fail(self, message: str) -> Invalid:
        """Record a problem with this value; the caller raises what this returns."""
        return self.ctx.report(self.path, self.line, message)

    def expected(self, what: str) -> Invalid:
        return self.fail(f"expected {what}, got {_describe(self.node)}")

    def text(self) -> str | None:
        """The scalar exactly as written, or None when this is not a (core-tagged, non-null) scalar."""
        node = self.node
        if isinstance(node, ScalarNode) and node.tag != _NULL_TAG and node.tag.startswith(TAG_PREFIX):
            return str(node.value)
        return None

    def items(self) -> list[Value]:
        if not isinstance(self.node, SequenceNode):
            raise self.expected("a list")
        return [Value(self.ctx, item_path(self.path, i), item) for i, item in enumerate(self.node.value)]

    def mapping(self, keys: Collection[str]) -> CheckedMapping:
        """Read this value as a mapping that may hold only `keys`, with YAML merge keys applied."""
        if not isinstance(self.node, MappingNode):
            raise self.expected("a mapping")
        result = CheckedMapping(self, keys)
        for key_node, value_node, merged in mapping_pairs(self.node, self._bad_merge):
            result.add(key_node, value_node, from_merge=merged)
        return result

    def _bad_merge(self, source: Node, recursive: bool) -> None:
        self.ctx.report(self.path, node_line(source), "expected a mapping (or list of mappings) to merge")


class CheckedMapping:
    """A mapping checked for unknown and duplicate keys, with typed reads of its values."""

    def __init__(self, value: Value, allowed: Collection[str]) -> None:
        self.value = value
        self.allowed = allowed
        self.entries: dict[str, Value] = {}
        self.key_lines: dict[str, int] = {}
        self.mark = len(value.ctx.problems)

    @property
    def path(self) -> str:
        return self.value.path

    @property
    def line(self) -> int:
        return self.value.line

    def report(self, path: str, line: int, message: str) -> None:
        self.value.ctx.report(path, line, message)

    def add(self, key_node: Node, value_node: Node, *, from_merge: bool) -> None:
        if not isinstance(key_node, ScalarNode):
            self.report(self.path, node_line(key_node), "keys must be plain strings")
            return
        key = str(key_node.value)
        path = key_path(self.path, key)
        if key in self.key_lines:
            # Keys written in the mapping itself override merged ones, as YAML specifies.
            if not from_merge:
                first = self.key_lines[key]
                self.report(path, node_line(key_node), f"duplicate key '{key}' (first given on line {first})")
            return
        self.key_lines[key] = node_line(key_node)
        if key not in self.allowed:
            changed = changed_key_message(self.path, key)
            message = f"{changed}; fabricd no longer takes '{key}'" if changed else None
            self.report(path, node_line(key_node), message or _unknown_key_message(key, self.allowed))
            return
        self.entries[key] = Value(self.value.ctx, path, value_node)

    def _present(self, key: str) -> Value | None:
        value = self.entries.get(key)
        if value is None or value.node.tag == _NULL_TAG:
            return None
        return value

    def has(self, key: str) -> bool:
        return self._present(key) is not None

    def get(self, key: str, convert: Callable[[Value], _T], default: _D) -> _T | _D:
        """The converted value; the default when absent or (after reporting it) invalid."""
        value = self._present(key)
        if value is None:
            return default
        try:
            return convert(value)
        except Invalid:
            return default

    def require(self, key: str, convert: Callable[[Value], _T], why: str = "") -> _T | None:
        """The converted value; None (after reporting it) when absent or invalid."""
        value = self._present(key)
        if value is None:
            self.missing(key, why)
            return None
        return self.get(key, convert, None)

    def missing(self, key: str, why: str = "") -> None:
        given_null = self.entries.get(key)
        if given_null is not None:
            given_null.fail(f"a value is required{why}")
        else:
            self.report(key_path(self.path, key), self.line, f"missing required key '{key}'{why}")

    def fail_at(self, key: str, message: str) -> None:
        """Report against one key: at its line when given, else at this mapping's line."""
        value = self.entries.get(key)
        self.report(key_path(self.path, key), self.line if value is None else value.line, message)

    def clean(self) -> bool:
        """No problems were found since this mapping was opened."""
        return len(self.value.ctx.problems) == self.mark


def _unknown_key_message(key: str, allowed: Collection[str]) -> str:
    message = f"unknown key '{key}'; expected one of: {', '.join(allowed)}"
    close = closest_match(key, allowed)
    return f"{message} (did you mean '{close}'?)" if close else message


@dataclass
class Unique:
    """Flags the second and later uses of a value that must be unique within a list."""

    what: str
    first_use: dict[object, str] = field(default_factory=dict)

    def check(self, mapping: CheckedMapping, key: str, item: object) -> bool:
        """True when this is the first use; otherwise report the duplicate."""
        first = self.first_use.setdefault(item, mapping.path)
        if first != mapping.path:
            mapping.fail_at(key, f"duplicate {self.what} '{item}'; already used by {first}")
            return False
        return True


def convert_all(items: list[Value], convert: Callable[[Value], _T]) -> tuple[_T, ...]:
    """Convert every item, reporting all bad ones before giving up on the list."""
    results: list[_T] = []
    failed = False
    for item in items:
        try:
            results.append(convert(item))
        except Invalid:
            failed = True
    if failed:
        raise Invalid
    return tuple(results)


# Takes a Value and returns the converted value, or records a problem and raises Invalid.
Convert = Callable[[Value], _T]
