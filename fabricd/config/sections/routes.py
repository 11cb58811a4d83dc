"""The `routes` section: which prefixes are accepted and announced."""

from __future__ import annotations

from fabricd.config import converters as convert
from fabricd.config.model import RoutesConfig
from fabricd.config.reader import Invalid, Value

_ROUTES_KEYS = (
    "allowed_ranges",
    "max_prefix_length_v4",
    "max_prefix_length_v6",
    "min_prefix_length_v4",
    "min_prefix_length_v6",
    "max_prefixes",
    "announce_instance_addresses",
)


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
    if not m.clean():  # compare lengths only once each is known to be valid
        raise Invalid
    for low, high, family in ((min_v4, max_v4, "v4"), (min_v6, max_v6, "v6")):
        if low > high:
            m.fail_at(f"min_prefix_length_{family}", f"{low} is above max_prefix_length_{family} ({high})")
    if not m.clean():
        raise Invalid
    return RoutesConfig(allowed, max_v4, max_v6, min_v4, min_v6, max_prefixes, announce)
