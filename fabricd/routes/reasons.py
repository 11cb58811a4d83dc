"""Route reasons in a few fixed classes: a metrics label must not carry free text (one series per
prefix would be the result), yet "refused, outside the allowed ranges" is what an alert needs."""

from __future__ import annotations

# First match wins; checked against the reason text the planner and status write.
_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no_bgp", ("no bgp section",)),
    ("awaiting_ack", ("not yet acknowledged", "waiting for")),
    ("no_peer_for_family", ("no bgp peer takes",)),
    ("session_down", ("no session it is meant for is up",)),
    ("outside_allowed_ranges", ("outside the allowed ranges", "outside the subnet")),
    ("conflict", ("also claimed by", "already announced for", "overlaps")),
    ("limit", ("max_prefixes", "more than")),
    ("policy", ("default route", "shorter than", "longer than", "special-purpose")),
    ("nat", (".nat is on",)),
    ("elsewhere", ("instance is", "runs on member", "belongs to member", "chassis")),
    ("next_hop", ("next hop", "nexthop", "uplink")),
    ("invalid", ("is not a", "is not an", "host bits", "reported", "could not plan", "not found")),
)


def reason_class(state: str, reason: str | None) -> str:
    """A short fixed label for why a route is in `state`: "none" when announced."""
    if state == "announced" or not reason:
        return "none"
    text = reason.lower()
    for label, needles in _CLASSES:
        if any(needle in text for needle in needles):
            return label
    return "other"
