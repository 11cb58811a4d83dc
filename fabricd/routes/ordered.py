"""A sorted, reference-counted set for the incremental planner's output lists.

Values are counted so the same refusal reached from two places stays listed until both let go.
A few edits per update are placed with bisect (C-level list moves, microseconds at 50,000 items);
a burst of edits (the first update, a network change touching every instance) marks the list
stale and it is re-sorted once, on read, instead of paying a move per edit.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from operator import itemgetter
from typing import Generic, TypeVar

_T = TypeVar("_T")
_K = TypeVar("_K", bound=tuple[object, ...])


class SortedBag(Generic[_T, _K]):
    """Distinct values in `key` order (the key must tell distinct values apart).

    With a `limit`, values past it are "cut" (max_prefixes); `settle` reports what crossed.
    """

    BULK_EDITS = 256

    def __init__(self, key: Callable[[_T], _K], limit: int | None = None) -> None:
        self._key = key
        self._limit = limit
        self._counts: dict[_T, int] = {}
        self._keys: list[_K] = []
        self._items: list[_T] = []
        self._stale = False
        self._edits = 0
        self._cut: set[_T] = set()
        self._crossed: list[tuple[_T, bool]] = []
        self._view: tuple[_T, ...] | None = ()

    def __len__(self) -> int:
        return len(self._counts)

    def begin(self) -> None:
        self._edits = 0

    def add(self, item: _T) -> None:
        count = self._counts.get(item, 0)
        self._counts[item] = count + 1
        if not count:
            self._place(item, True)

    def discard(self, item: _T) -> None:
        count = self._counts[item]
        if count > 1:
            self._counts[item] = count - 1
            return
        del self._counts[item]
        self._place(item, False)

    def _place(self, item: _T, adding: bool) -> None:
        self._view = None
        if self._stale:
            return
        self._edits += 1
        if self._edits > self.BULK_EDITS:
            self._stale, self._keys, self._items = True, [], []
            return
        key = self._key(item)
        i = bisect_left(self._keys, key)
        limit = self._limit
        if adding:
            self._keys.insert(i, key)
            self._items.insert(i, item)
            if limit is not None and len(self._items) > limit:
                self._cross(item if i >= limit else self._items[limit], True)
        else:
            if limit is not None and len(self._items) > limit:
                # Leaving from inside the limit pulls the first cut value back in.
                self._cross(item if i >= limit else self._items[limit], False)
            del self._keys[i]
            del self._items[i]

    def _cross(self, item: _T, cut: bool) -> None:
        if cut:
            self._cut.add(item)
        else:
            self._cut.discard(item)
        self._crossed.append((item, cut))

    def settle(self) -> list[tuple[_T, bool]]:
        """Re-sort if stale; the values that crossed the limit since the last call, in order."""
        if self._stale:
            pairs = sorted(zip(map(self._key, self._counts), self._counts, strict=True), key=itemgetter(0))
            self._keys = list(map(itemgetter(0), pairs))
            self._items = list(map(itemgetter(1), pairs))
            self._stale = False
            if self._limit is not None:
                now = set(self._items[self._limit :])
                self._crossed += [(item, False) for item in self._cut - now]
                self._crossed += [(item, True) for item in now - self._cut]
                self._cut = now
        crossed, self._crossed = self._crossed, []
        return crossed

    def kept(self) -> tuple[_T, ...]:
        """The values inside the limit (all of them without one), in order."""
        if self._stale:
            raise RuntimeError("settle() the bag before reading it")
        if self._view is None:
            self._view = tuple(self._items[: self._limit])
        return self._view
