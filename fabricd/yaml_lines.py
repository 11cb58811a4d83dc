"""YAML composed into nodes that keep their source lines, for readers that report problems by line.

Shared by the config loader and the lab topology validator. Each keeps its own problem type and
wording; this module only composes the document and supplies lines, key paths, merge keys and
suggestions. Composed graphs can be recursive (an alias inside its own anchor), so walkers must
guard for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

TAG_PREFIX = "tag:yaml.org,2002:"
MERGE_TAG = TAG_PREFIX + "merge"


class YamlSyntaxError(Exception):
    """The text is not YAML; `details` are the parser's phrases for the caller to join."""

    def __init__(self, line: int | None, details: tuple[str, ...]) -> None:
        super().__init__(line, details)
        self.line = line
        self.details = details


def compose(text: str) -> Node | None:
    """The document's node tree (None when empty); raises YamlSyntaxError for invalid YAML."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        details = tuple(part for part in (exc.context, exc.problem) if part)
        raise YamlSyntaxError(mark_line(mark), details) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, int(exc.position)) + 1
        raise YamlSyntaxError(line, (f"{exc.reason} (character {exc.character!r})",)) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, (str(exc),)) from exc


def mark_line(mark: yaml.Mark | None) -> int | None:
    return None if mark is None else int(mark.line) + 1


def node_line(node: Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def key_path(parent: str, key: str) -> str:
    """``a.b`` + ``c`` -> ``a.b.c``; a key at the root is its own path."""
    return f"{parent}.{key}" if parent else key


def item_path(parent: str, index: int) -> str:
    """``a.b`` + 1 -> ``a.b[1]``."""
    return f"{parent}[{index}]"


def written_pairs(node: MappingNode) -> list[tuple[Node, Node]]:
    """The (key, value) pairs written in a mapping itself: all but its merge keys (`<<`)."""
    return [(key, value) for key, value in node.value if key.tag != MERGE_TAG]


def merge_sources(
    node: MappingNode, bad_merge: Callable[[Node, bool], None], enclosing: Collection[int] = ()
) -> Iterator[MappingNode]:
    """The mappings a mapping's merge keys bring in (`<<: *a`, `<<: [*a, *b]`), earlier first.

    A source that is not a mapping, or that is one of `enclosing` (ids of the mappings being read
    around it, which an alias back into would never end), is skipped after `bad_merge(source,
    recursive)` is told. Sources come lazily, so the caller's reports stay in the order it meets
    them.
    """
    for key, value in node.value:
        if key.tag != MERGE_TAG:
            continue
        for source in value.value if isinstance(value, SequenceNode) else [value]:
            recursive = id(source) in enclosing
            if recursive or not isinstance(source, MappingNode):
                bad_merge(source, recursive)
                continue
            yield source


def mapping_pairs(
    node: MappingNode, bad_merge: Callable[[Node, bool], None], enclosing: Collection[int] = ()
) -> Iterator[tuple[Node, Node, bool]]:
    """A mapping's (key, value, merged) pairs, with YAML merge keys resolved.

    First the pairs written in the mapping, in order (merged is False); then those of each mapping
    it merges (merged is True), each source's own pairs before those it merges in turn. That is
    precedence order: where a key comes more than once the first counts, so keys written in the
    mapping override merged ones, as YAML specifies. Sources are checked as in `merge_sources`.
    """
    for key, value in written_pairs(node):
        yield key, value, False
    for source in merge_sources(node, bad_merge, enclosing):
        for key, value, _ in mapping_pairs(source, bad_merge, {*enclosing, id(source)}):
            yield key, value, True


def closest_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice a mistyped word most likely meant, for did-you-mean hints."""
    # Ties go to the greater string whatever the order of choices, so callers need not sort.
    match = difflib.get_close_matches(word, list(choices), n=1)
    return match[0] if match else None
