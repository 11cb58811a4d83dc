"""YAML composed into nodes that keep their source lines, for readers that report problems by line.

Shared by the config loader and the lab topology validator. Each keeps its own problem type and
wording; this module only composes the document and supplies lines, key paths and suggestions.
Composed graphs can be recursive (an alias inside its own anchor), so walkers must guard for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import yaml
from yaml.nodes import Node

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


def closest_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice a mistyped word most likely meant, for did-you-mean hints."""
    # Ties go to the greater string whatever the order of choices, so callers need not sort.
    match = difflib.get_close_matches(word, list(choices), n=1)
    return match[0] if match else None
