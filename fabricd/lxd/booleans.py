"""LXD's reading of a boolean config value: the one rule for every LXD key fabricd reads.

LXD's shared.IsTrue reads "true", "1", "yes" and "on" as true and shared.IsFalse reads "false",
"0", "no" and "off" as false, both case-insensitively; any other value is neither. Where LXD
itself reads a key with IsTrue (ipv4.nat, features.networks), anything but a true word counts as
false: `lxd_bool(text) is True`. Where fabricd defines the key (user.fabric.*), a value that is
neither is refused with a reason. Surrounding white space is ignored (LXD validates its own keys,
so only hand-written user.* values can carry it).
"""

from __future__ import annotations

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def lxd_bool(text: object) -> bool | None:
    """True or False as LXD reads `text`; None when it is neither (unset, blank, another word, or
    not a string at all, as a config value in LXD's JSON never is)."""
    if not isinstance(text, str):
        return None
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None
