"""Typed reads of a topology file's values: each reports a wrong type at its key path and line."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from fabric_lab.topology_document import Report, YamlValue
from fabricd.yaml_lines import closest_match, item_path, key_path


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint to append to a message about a mistyped word, or "" when nothing is close."""
    match = closest_match(word, choices)
    return f"; did you mean {match!r}?" if match else ""


def _as_int(value: object) -> int | None:
    # bool is an int subclass, but `true` is not a number.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def describe(value: object) -> str:
    """How a value of the wrong type is shown after 'not'."""
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


class StringItem(NamedTuple):
    """One string of a list of strings, with where it is."""

    value: str
    path: str
    line: int


class FieldChecker:
    """Typed access to a read document; each method reports a wrong type at the key and returns None."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def mapping(self, y: YamlValue, path: str) -> dict[str, YamlValue] | None:
        if isinstance(y.value, dict):
            return y.value
        self.report(path, y.line, f"must be a mapping, not {describe(y.value)}")
        return None

    def known_keys(self, entries: dict[str, YamlValue], allowed: Collection[str], path: str) -> None:
        for key, y in entries.items():
            if key not in allowed:
                self.report(key_path(path, key), y.line, f"unknown key {key!r}{did_you_mean(key, allowed)}")

    def required(self, entries: dict[str, YamlValue], key: str, path: str, line: int) -> YamlValue | None:
        if key not in entries:
            self.report(key_path(path, key), line, f"missing required key {key!r}")
        return entries.get(key)

    def string(self, entries: dict[str, YamlValue], key: str, parent: str) -> str | None:
        y = entries.get(key)
        if y is None:
            return None
        if isinstance(y.value, str):
            return y.value
        self.report(key_path(parent, key), y.line, f"must be a string, not {describe(y.value)}")
        return None

    def string_items(self, entries: dict[str, YamlValue], key: str, parent: str) -> list[StringItem] | None:
        """Each string item of a list of strings, with where it is."""
        y, path = entries.get(key), key_path(parent, key)
        if y is None:
            return None
        if not isinstance(y.value, list):
            self.report(path, y.line, f"must be a list of strings, not {describe(y.value)}")
            return None
        items = []
        for index, item in enumerate(y.value):
            if isinstance(item.value, str):
                items.append(StringItem(item.value, item_path(path, index), item.line))
            else:
                message = f"must be a string, not {describe(item.value)}"
                self.report(item_path(path, index), item.line, message)
        return items

    def string_list(self, entries: dict[str, YamlValue], key: str, parent: str) -> tuple[str, ...] | None:
        items = self.string_items(entries, key, parent)
        return None if items is None else tuple(item.value for item in items)

    def string_map(self, entries: dict[str, YamlValue], key: str, parent: str) -> dict[str, str]:
        y, path = entries.get(key), key_path(parent, key)
        values = self.mapping(y, path) if y is not None else {}
        result = {}
        for name, item in (values or {}).items():
            number = isinstance(item.value, int | float) and not isinstance(item.value, bool)
            if isinstance(item.value, str) or number:
                result[name] = item.text if item.text is not None else str(item.value)
            else:
                hint = f'; quote it: "{item.text}"' if isinstance(item.value, bool) else ""
                message = f"must be a string or number, not {describe(item.value)}{hint}"
                self.report(key_path(path, name), item.line, message)
        return result

    def integer(
        self,
        entries: dict[str, YamlValue],
        key: str,
        parent: str,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int | None:
        y = entries.get(key)
        if y is None:
            return None
        number = _as_int(y.value)
        if number is not None and number >= minimum and (maximum is None or number <= maximum):
            return number
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        shown = y.text or describe(y.value)
        self.report(key_path(parent, key), y.line, f"must be an integer {bounds}, not {shown}")
        return None

    def boolean(self, entries: dict[str, YamlValue], key: str, parent: str) -> None:
        y = entries.get(key)
        if y is not None and not isinstance(y.value, bool):
            self.report(key_path(parent, key), y.line, f"must be true or false, not {describe(y.value)}")
