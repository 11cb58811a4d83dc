"""A hashable, immutable mapping for config dictionaries inside frozen records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

_V = TypeVar("_V")


class FrozenMap(Mapping[str, _V]):
    """Immutable, hashable and ordered by key, so equal inputs give equal records."""

    __slots__ = ("_hash", "_items")

    def __init__(self, source: Mapping[str, _V] | None = None) -> None:
        self._items: dict[str, _V] = dict(sorted((source or {}).items()))
        self._hash: int | None = None

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"
