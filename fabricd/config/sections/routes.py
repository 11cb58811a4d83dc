"""The `routes` section: which prefixes are accepted and announced."""

from __future__ import annotations

from fabricd.config import converters as convert
from fabricd.config.model import OvnMode, OvnUplinkConfig, RoutesConfig, UnusableNextHop
from fabricd.config.reader import Invalid, Unique, Value, convert_all

_ROUTES_KEYS = (
    "allowed_ranges",
    "max_prefix_length_v4",
    "max_prefix_length_v6",
    "min_prefix_length_v4",
    "min_prefix_length_v6",
    "max_prefixes",
    "announce_instance_addresses",
    "communities",
    "large_communities",
    "med",
    "local_pref",
    "ovn_default_mode",
    "ovn_uplinks",
)
OVN_MODES: tuple[OvnMode, ...] = ("all-members", "active-chassis")
UNUSABLE_NEXT_HOP: tuple[UnusableNextHop, ...] = ("self", "withhold")


def parse_routes(value: Value) -> RoutesConfig:
    m = value.mapping(_ROUTES_KEYS)
    default = RoutesConfig()
    allowed = m.get("allowed_ranges", convert.list_of(convert.network), default.allowed_ranges)
    max_v4 = m.get("max_prefix_length_v4", convert.integer(0, 32), default.max_prefix_length_v4)
    max_v6 = m.get("max_prefix_length_v6", convert.integer(0, 128), default.max_prefix_length_v6)
    min_v4 = m.get("min_prefix_length_v4", convert.integer(0, 32), default.min_prefix_length_v4)
    min_v6 = m.get("min_prefix_length_v6", convert.integer(0, 128), default.min_prefix_length_v6)
    max_prefixes = m.get("max_prefixes", convert.integer(1, 2**31 - 1), default.max_prefixes)
    announce = m.get("announce_instance_addresses", convert.boolean, default.announce_instance_addresses)
    communities = m.get("communities", convert.list_of(convert.community), default.communities)
    large = m.get("large_communities", convert.list_of(convert.large_community), default.large_communities)
    med = m.get("med", convert.med, default.med)
    local_pref = m.get("local_pref", convert.local_pref, default.local_pref)
    ovn_default_mode = m.get("ovn_default_mode", convert.choice(OVN_MODES), default.ovn_default_mode)
    ovn_uplinks = m.get("ovn_uplinks", _parse_ovn_uplinks, default.ovn_uplinks)
    if not m.clean():  # compare lengths only once each is known to be valid
        raise Invalid
    for low, high, family in ((min_v4, max_v4, "v4"), (min_v6, max_v6, "v6")):
        if low > high:
            m.fail_at(f"min_prefix_length_{family}", f"{low} is above max_prefix_length_{family} ({high})")
    if not m.clean():
        raise Invalid
    return RoutesConfig(
        allowed, max_v4, max_v6, min_v4, min_v6, max_prefixes, announce,
        communities, large, med, local_pref, ovn_default_mode, ovn_uplinks,
    )  # fmt: skip


def _parse_ovn_uplinks(value: Value) -> tuple[OvnUplinkConfig, ...]:
    seen = Unique("uplink")
    return convert_all(value.items(), lambda item: _parse_ovn_uplink(item, seen))


def _parse_ovn_uplink(value: Value, seen: Unique) -> OvnUplinkConfig:
    m = value.mapping(("uplink", "mode", "unusable_next_hop"))
    uplink = m.require("uplink", convert.name)
    mode = m.get("mode", convert.choice(OVN_MODES), None)
    unusable = m.get(
        "unusable_next_hop", convert.choice(UNUSABLE_NEXT_HOP), OvnUplinkConfig("").unusable_next_hop
    )
    if uplink is not None:
        seen.check(m, "uplink", uplink)
    if not m.clean() or uplink is None:
        raise Invalid
    return OvnUplinkConfig(uplink, mode, unusable)
