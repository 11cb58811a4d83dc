"""Settling claims against each other, one prefix at a time, and the order of refusals.

Routes are ordered by `fabricd.routes.model.route_key`: the lowest route of a prefix wins.

- Duplicate owners: a prefix claimed by two owners ((project, network, instance) of the origin)
  is refused for all of them; one owner claiming it twice is announced once.
- Overlaps: a prefix strictly inside, or around, a prefix claimed for a different network is
  refused on both sides: a tenant never takes over part of another network's space with a more
  specific route. Inside one network (an OVN subnet and its NICs' external routes) it is fine.
Only live claims count (owner running somewhere in the cluster, prefix within policy), so every
member reaches the same verdict, and a stopped copy of an instance does not block the original.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Collection
from dataclasses import dataclass

from fabricd.routes.model import IPNetwork, Refusal, Route, route_key
from fabricd.routes.networks import NetworkKey
from fabricd.routes.policy import span
from fabricd.routes.sources import Claim

_NAMED = 3  # owners named in a reason; the rest are counted
_WIDTH = {4: 32, 6: 128}

RefusalKey = tuple[str, str, str, str, str, str, str]


def refusal_key(refusal: Refusal) -> RefusalKey:
    """Refusal's own order, as plain values."""
    o = refusal.origin
    return (refusal.prefix, o.kind, o.project, o.network, o.instance, o.key, refusal.reason)


def owner_label(owner: tuple[str, str, str]) -> str:
    return "/".join(part for part in owner if part)


def _named(labels: list[str]) -> str:
    more = f" and {len(labels) - _NAMED} more" if len(labels) > _NAMED else ""
    return ", ".join(labels[:_NAMED]) + more


@dataclass(frozen=True, slots=True)
class PrefixOutcome:
    route: Route | None = None
    refused: tuple[Refusal, ...] = ()
    withheld: tuple[Refusal, ...] = ()


def resolve_prefix(prefix: IPNetwork, claims: Collection[Claim], nesting: Collection[Claim]) -> PrefixOutcome:
    """The verdict on one prefix from its claims and the live claims of nesting prefixes.

    Independent of the order and multiplicity of both inputs.
    """
    if len(claims) == 1:  # the common case, without the bookkeeping below
        claim = next(iter(claims))
        if not claim.live or all(other.network == claim.network for other in nesting):
            if claim.route is not None:
                return PrefixOutcome(claim.route)
            refusal = (Refusal(str(prefix), claim.origin, claim.reason),)
            return PrefixOutcome(None, (), refusal) if claim.withheld else PrefixOutcome(None, refusal)
    owners = sorted({c.owner for c in claims if c.live})
    around: dict[NetworkKey, set[str]] = {}
    if owners:
        for other in nesting:
            around.setdefault(other.network, set()).add(f"{other.prefix} of {owner_label(other.owner)}")
    overlap_reasons: dict[NetworkKey, str | None] = {}
    text = str(prefix)
    routes: list[Route] = []
    refused: set[Refusal] = set()
    withheld: set[Refusal] = set()
    for claim in claims:
        conflict = None
        if claim.live and len(owners) > 1:
            others = [owner_label(o) for o in owners[: _NAMED + 1] if o != claim.owner][:_NAMED]
            more = len(owners) - 1 - len(others)
            conflict = f"also claimed by {', '.join(others)}" + (f" and {more} more" if more else "")
        elif claim.live and around:
            if claim.network not in overlap_reasons:
                found = sorted(
                    label for net, labels in around.items() if net != claim.network for label in labels
                )
                overlap_reasons[claim.network] = f"overlaps {_named(found)}" if found else None
            conflict = overlap_reasons[claim.network]
        if conflict is not None:
            refused.add(Refusal(text, claim.origin, conflict))
        elif claim.route is not None:
            routes.append(claim.route)
        else:
            (withheld if claim.withheld else refused).add(Refusal(text, claim.origin, claim.reason))
    route = min(routes, key=route_key) if routes else None
    return PrefixOutcome(
        route, tuple(sorted(refused, key=refusal_key)), tuple(sorted(withheld, key=refusal_key))
    )


class _Level:
    """Live prefixes of one family and length, by first address; sorted lazily for range scans."""

    __slots__ = ("edits", "members", "ordered")

    def __init__(self) -> None:
        self.members: dict[int, IPNetwork] = {}
        self.ordered: list[int] | None = []
        self.edits = 0  # in-place edits since begin(); past a bound, re-sort on next scan instead


class LiveIndex:
    """Prefixes that have live claims, for finding nesting prefixes in O(lengths in use)."""

    EDIT_BOUND = 256

    def __init__(self) -> None:
        self._levels: dict[tuple[int, int], _Level] = {}

    def begin(self) -> None:
        for level in self._levels.values():
            level.edits = 0

    def _edit(self, level: _Level, first: int, add: bool) -> None:
        if level.ordered is None:
            return
        level.edits += 1
        if level.edits > self.EDIT_BOUND:
            level.ordered = None
        elif add:
            insort(level.ordered, first)
        else:
            del level.ordered[bisect_left(level.ordered, first)]

    def add(self, prefix: IPNetwork) -> None:
        level = self._levels.setdefault((prefix.version, prefix.prefixlen), _Level())
        first = int(prefix.network_address)
        if first not in level.members:
            level.members[first] = prefix
            self._edit(level, first, True)

    def discard(self, prefix: IPNetwork) -> None:
        key = (prefix.version, prefix.prefixlen)
        level = self._levels.get(key)
        first = int(prefix.network_address)
        if level is None or level.members.pop(first, None) is None:
            return
        if level.members:
            self._edit(level, first, False)
        else:
            del self._levels[key]

    def nesting(self, prefix: IPNetwork) -> list[IPNetwork]:
        """Indexed prefixes strictly containing or strictly inside `prefix`."""
        found: list[IPNetwork] = []
        version, length = prefix.version, prefix.prefixlen
        first, last = span(prefix)
        for (v, other_length), level in self._levels.items():
            if v != version or other_length == length:
                continue
            if other_length < length:
                shift = _WIDTH[v] - other_length
                around = level.members.get(first >> shift << shift)
                if around is not None:
                    found.append(around)
                continue
            if level.ordered is None:
                level.ordered = sorted(level.members)
            ordered = level.ordered
            low = bisect_left(ordered, first)
            if low == len(ordered) or ordered[low] > last:  # the usual answer: nothing inside
                continue
            members = level.members
            found.extend(members[x] for x in ordered[low : bisect_right(ordered, last, low)])
        return found
