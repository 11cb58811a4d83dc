"""BGP attributes and opt-ins a network asks for through its `user.fabric.*` config keys.

Keys (on an OVN or bridge network):
- user.fabric.communities        "65000:100, 65000:200" (comma or space separated, each part 0..65535)
- user.fabric.large-communities  "65000:1:2 65000:1:3" (each part 0..4294967295)
- user.fabric.med                0..4294967295
- user.fabric.local-pref         0..4294967295
- user.fabric.announce-addresses true/false (as LXD reads booleans: also on/off, yes/no, 1/0):
  announce instance addresses on this bridge
A key replaces the config default (`routes.communities`...) for that attribute only; "none" sets
it empty, an unset or blank key keeps the default. A malformed key refuses the network's routes
with a reason naming the key, rather than announcing them without, say, a no-export community.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from fabricd.config.model import RoutesConfig
from fabricd.lxd.booleans import lxd_bool
from fabricd.routes.model import RouteAttributes
from fabricd.routes.policy import shown

COMMUNITIES = "user.fabric.communities"
LARGE_COMMUNITIES = "user.fabric.large-communities"
MED = "user.fabric.med"
LOCAL_PREF = "user.fabric.local-pref"
ANNOUNCE_ADDRESSES = "user.fabric.announce-addresses"

_MAX_COMMUNITIES = 255  # well inside one BGP attribute; more is junk, not policy
_UINT32 = 4294967295
_T = TypeVar("_T")
_SEPARATORS = re.compile(r"[\s,]+")


class _Bad(Exception):
    """A key's value could not be read; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class NetworkAttributes:
    attributes: RouteAttributes
    announce_addresses: bool | None  # None: follow routes.announce_instance_addresses
    problem: str | None  # the first unreadable key and why, refusing the network's routes


def _number(text: str, high: int) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= high):
        raise _Bad(f"'{shown(text)}' is not an integer 0..{high}")
    return int(text)


def _communities(text: str, parts: int, high: int) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for item in (i for i in _SEPARATORS.split(text) if i):
        fields = item.split(":")
        if len(fields) != parts:
            raise _Bad(f"'{shown(item)}' is not {':'.join('ABC'[:parts])}")
        found[":".join(str(_number(f, high)) for f in fields)] = None
        if len(found) > _MAX_COMMUNITIES:
            raise _Bad(f"more than {_MAX_COMMUNITIES} communities")
    return tuple(found)


def _boolean(text: str) -> bool:
    value = lxd_bool(text)
    if value is None:
        raise _Bad(f"'{shown(text)}' is not true or false")
    return value


def _value(
    config: Mapping[str, str],
    key: str,
    parse: Callable[[str], _T],
    none: _T,
    default: _T,
    problems: list[str],
) -> _T:
    text = config.get(key, "").strip()
    if not text:
        return default
    if text.lower() == "none":
        return none
    try:
        return parse(text)
    except _Bad as bad:
        problems.append(f"{key}: {bad}")
        return default


def _standard(text: str) -> tuple[str, ...]:
    return _communities(text, 2, 65535)


def _large(text: str) -> tuple[str, ...]:
    return _communities(text, 3, _UINT32)


def _uint32(text: str) -> int | None:
    return _number(text, _UINT32)


def network_attributes(config: Mapping[str, str], routes: RoutesConfig) -> NetworkAttributes:
    bad: list[str] = []
    standard = _value(config, COMMUNITIES, _standard, (), routes.communities, bad)
    large = _value(config, LARGE_COMMUNITIES, _large, (), routes.large_communities, bad)
    med = _value(config, MED, _uint32, None, routes.med, bad)
    local_pref = _value(config, LOCAL_PREF, _uint32, None, routes.local_pref, bad)
    announce = _value(config, ANNOUNCE_ADDRESSES, _boolean, None, None, bad)
    attributes = RouteAttributes(standard, large, med, local_pref)
    return NetworkAttributes(attributes, announce, "; ".join(bad) or None)
