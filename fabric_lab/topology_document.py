"""A topology file read into plain values that keep their lines, and the problems found on the way."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from fabric_lab.topology_model import Problem
from fabricd.yaml_lines import (
    YamlSyntaxError,
    compose,
    item_path,
    key_path,
    merge_sources,
    node_line,
    written_pairs,
)


@dataclass(slots=True)
class YamlValue:
    """A YAML value and its line: scalars constructed, mappings dict[str, YamlValue], sequences lists."""

    value: object
    line: int
    text: str | None = None  # a scalar's source text: keeps "1.10" as written


class _DocumentReader:
    """Turns a composed node tree into YamlValues, reporting what PyYAML lets pass (duplicate keys)."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._constructor = yaml.constructor.SafeConstructor()
        self._open: set[int] = set()  # nodes being read, to stop on recursive aliases

    def read(self, node: yaml.Node, path: str, line: int) -> YamlValue:
        if id(node) in self._open:
            self._report(path, line, "recursive YAML alias")
            return YamlValue(None, line)
        self._open.add(id(node))
        try:
            return self._read(node, path, line)
        finally:
            self._open.discard(id(node))

    def _read(self, node: yaml.Node, path: str, line: int) -> YamlValue:
        if isinstance(node, yaml.MappingNode):
            return YamlValue(self._mapping(node, path), line)
        if isinstance(node, yaml.SequenceNode):
            items = [
                self.read(item, item_path(path, i), node_line(item)) for i, item in enumerate(node.value)
            ]
            return YamlValue(items, line)
        try:
            return YamlValue(self._constructor.construct_object(node), line, str(node.value))
        except yaml.YAMLError as error:
            self._report(path, line, f"invalid value: {error}")
            return YamlValue(None, line)

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, YamlValue]:
        entries: dict[str, YamlValue] = {}
        for key_node, value_node in written_pairs(node):
            if not isinstance(key_node, yaml.ScalarNode):
                self._report(path, node_line(key_node), "mapping keys must be plain scalars")
            elif str(key_node.value) in entries:
                key = str(key_node.value)
                message = f"duplicate key {key!r} (first at line {entries[key].line})"
                self._report(key_path(path, key), node_line(key_node), message)
            else:
                # The key's source text, not its YAML 1.1 value: containerlab reads `on:` as "on", not True.
                key = str(key_node.value)
                entries[key] = self.read(value_node, key_path(path, key), node_line(key_node))

        # `<<: *anchor` or `<<: [*a, *b]`; explicit keys win, then earlier merge sources.
        for source in merge_sources(node, partial(self._bad_merge, path), self._open):
            merged = self.read(source, path, node_line(source)).value
            if isinstance(merged, dict):  # always: a mapping not being read reads as one
                for key, value in merged.items():
                    entries.setdefault(key, value)
        return entries

    def _bad_merge(self, path: str, source: yaml.Node, recursive: bool) -> None:
        line = node_line(source)
        if recursive:
            self._report(path, line, "recursive YAML alias")
        else:
            self.read(source, path, line)  # what it holds is checked like any other value
        self._report(path, line, "'<<' must merge a mapping or a list of mappings")


class Report:
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


def read_document(source: Path, report: Report) -> YamlValue | None:
    """The file's root value, or None once the reason is reported."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        report("", None, f"cannot read the topology file: {error}")
        return None
    try:
        root = compose(text)
    except YamlSyntaxError as error:
        report("", error.line, f"invalid YAML: {', '.join(error.details)}")
        return None
    if root is None:
        report("", None, "the file is empty; a topology needs 'name' and 'topology'")
        return None
    return _DocumentReader(report).read(root, "", node_line(root))
