"""What may be announced: reading LXD's prefix text, sanity limits and the allowed ranges.

Every check returns a reason instead of raising, so one bad value refuses only its own route.

Allowed ranges. A route must lie inside the union of its network's allowed ranges:
- routes of an OVN network (its subnet, its NICs' external routes, its forwards and load
  balancers): the uplink's `ipv4.routes` / `ipv6.routes` prefixes, the uplink's `ipv4.ovn.ranges` /
  `ipv6.ovn.ranges` (`start-end`, summarized into prefixes), plus `routes.allowed_ranges`;
- routes of a bridge network (NIC external routes, forwards, load balancers, instance addresses,
  `user.fabric.routes`): `routes.allowed_ranges` plus the bridge's own `ipv4.address` /
  `ipv6.address` subnet and its `ipv4.routes` / `ipv6.routes` (prefixes LXD routes to the bridge).
A range allows itself and what lies inside it, never anything broader: a tenant subnet covering
the uplink's ranges is outside them. Unreadable range entries are skipped, which can only narrow
what is allowed. Whatever the ranges say, /0 and special-purpose space (loopback, link-local,
multicast, 0/8, 240/4) are refused.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    summarize_address_range,
)

from fabricd.config.model import RoutesConfig
from fabricd.routes.model import IPAddress, IPNetwork

# One LXD key may list this many prefixes; beyond it the whole key is refused, so a hostile
# list costs one refusal instead of a million.
MAX_ENTRIES_PER_KEY = 4096
_SHOWN_LENGTH = 60
_WIDTH = {4: 32, 6: 128}

_SPECIAL = {
    4: ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"),  # 224/3: multicast and 240/4
    6: ("::/128", "::1/128", "fe80::/10", "ff00::/8"),
}


def shown(text: str) -> str:
    """LXD text as it may appear in a reason: short, printable, never a wall of junk."""
    cut = text[:_SHOWN_LENGTH]
    if not cut.isprintable():
        cut = cut.encode("unicode_escape").decode("ascii")
    return cut + ("..." if len(text) > _SHOWN_LENGTH else "")


def split_list(text: str) -> list[str]:
    """LXD's comma-separated lists: blanks dropped, "none" or "" meaning empty."""
    stripped = text.strip()
    if stripped.lower() in ("", "none"):
        return []
    return [entry for entry in (part.strip() for part in stripped.split(",")) if entry]


def span(prefix: IPNetwork) -> tuple[int, int]:
    """First and last address of a prefix as integers: range tests without ipaddress overhead."""
    first = int(prefix.network_address)
    return first, first + (1 << (_WIDTH[prefix.version] - prefix.prefixlen)) - 1


_SPECIAL_SPANS = {
    version: tuple((*span(IPv6Network(b) if version == 6 else IPv4Network(b)), b) for b in blocks)
    for version, blocks in _SPECIAL.items()
}


def host_prefix(address: IPAddress) -> IPNetwork:
    if isinstance(address, IPv4Address):
        return IPv4Network((int(address), 32))
    return IPv6Network((int(address), 128))


def _plain(text: str) -> bool:
    return text.isascii() and "%" not in text and " " not in text


def parse_prefix(text: str, version: int | None = None) -> IPNetwork | str:
    """A prefix in network form ("10.1.0.0/24"), or the reason it is not one."""
    address, slash, length = text.partition("/")
    if not (slash and _plain(text) and length.isdigit() and len(length) <= 3):
        return f"'{shown(text)}' is not a prefix"
    kind: type[IPv4Network] | type[IPv6Network] = IPv6Network if ":" in address else IPv4Network
    try:
        prefix: IPNetwork = _fast_v4(text) or kind(text)
    except ValueError:
        try:
            kind(text, strict=False)
        except ValueError:
            return f"'{shown(text)}' is not a prefix"
        return f"{shown(text)} has host bits set"
    if version is not None and prefix.version != version:
        return f"{prefix} is not an IPv{version} prefix"
    return prefix


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_PREFIX = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}/(3[0-2]|[12]?[0-9])")


def _fast_v4(text: str) -> IPv4Network | None:
    """The common case, "a.b.c.d/n" in plain decimal, at a third of ipaddress's cost."""
    match = _V4_PREFIX.fullmatch(text)
    if match is None:
        return None
    a, b, c, d, length = map(int, match.groups())
    return IPv4Network((a << 24 | b << 16 | c << 8 | d, length))  # strict: raises on host bits


def parse_address(text: str) -> IPAddress | None:
    text = text.strip()
    if not _plain(text) or not text:
        return None
    try:
        return IPv6Address(text) if ":" in text else IPv4Address(text)
    except ValueError:
        return None


def parse_interface(text: str, *, need_length: bool = True) -> IPv4Interface | IPv6Interface | None:
    """An "address/length" as LXD stores network and instance addresses."""
    text = text.strip()
    if not _plain(text) or not text or (need_length and "/" not in text):
        return None
    try:
        return IPv6Interface(text) if ":" in text else IPv4Interface(text)
    except ValueError:
        return None


def _special_block(version: int, first: int, last: int) -> str | None:
    for block_first, block_last, block in _SPECIAL_SPANS[version]:
        if first <= block_last and block_first <= last:
            return block
    return None


def check_prefix(prefix: IPNetwork, routes: RoutesConfig, allowed: Ranges, owner: str) -> str | None:
    """Why `prefix` may not be announced for a network whose allowed ranges are `allowed`."""
    length, v = prefix.prefixlen, prefix.version
    if length == 0:
        return "default route is never announced"
    low, high = (
        (routes.min_prefix_length_v4, routes.max_prefix_length_v4)
        if v == 4
        else (routes.min_prefix_length_v6, routes.max_prefix_length_v6)
    )
    if length < low:
        return f"{prefix} is shorter than /{low} (routes.min_prefix_length_v{v})"
    if length > high:
        return f"{prefix} is longer than /{high} (routes.max_prefix_length_v{v})"
    first, last = span(prefix)
    block = _special_block(v, first, last)
    if block is not None:
        return f"{prefix} overlaps special-purpose range {block}"
    if not allowed.covers(first, last):
        return f"{prefix} is outside the allowed ranges of {owner}"
    return None


def next_hop_problem(next_hop: IPAddress, version: int, source: str) -> str | None:
    """Why `next_hop`, read from `source`, cannot carry IPv`version` routes."""
    if next_hop.version != version:
        return f"next hop {next_hop} ({source}) is IPv{next_hop.version}, not IPv{version}"
    if _special_block(version, int(next_hop), int(next_hop)) is not None:
        return f"next hop {next_hop} ({source}) is not a usable unicast address"
    return None


@dataclass(frozen=True, slots=True)
class Ranges:
    """Allowed space of one family: sorted, merged, inclusive (first, last) address integers."""

    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, networks: Iterable[IPNetwork]) -> Ranges:
        merged: list[list[int]] = []
        for first, last in sorted(span(n) for n in networks):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        return cls(tuple((first, last) for first, last in merged))

    def covers(self, first: int, last: int) -> bool:
        i = bisect_right(self.spans, (first, 1 << 129)) - 1
        return i >= 0 and self.spans[i][1] >= last


def prefixes_from_list(text: str | None, version: int) -> list[IPNetwork]:
    """The readable prefixes of a range list (an uplink's ipv4.routes); junk entries are skipped."""
    entries = split_list(text or "")[:MAX_ENTRIES_PER_KEY]
    parsed = (parse_prefix(entry, version) for entry in entries)
    return [p for p in parsed if not isinstance(p, str)]


def prefixes_from_address_ranges(text: str | None, version: int) -> list[IPNetwork]:
    """An uplink's ipv4.ovn.ranges ("start-end,...") as prefixes; junk entries are skipped."""
    found: list[IPNetwork] = []
    for entry in split_list(text or "")[:MAX_ENTRIES_PER_KEY]:
        start_text, dash, end_text = entry.partition("-")
        start, end = parse_address(start_text), parse_address(end_text)
        if dash and start is not None and end is not None and start.version == version:
            found.extend(_summarized(start, end))
    return found


def _summarized(start: IPAddress, end: IPAddress) -> list[IPNetwork]:
    if isinstance(start, IPv4Address) and isinstance(end, IPv4Address):
        return list(summarize_address_range(start, end)) if start <= end else []
    if isinstance(start, IPv6Address) and isinstance(end, IPv6Address):
        return list(summarize_address_range(start, end)) if start <= end else []
    return []
