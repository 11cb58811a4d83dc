"""Keys an older fabricd took that this one does not, each with what replaced it.

An old config then fails `check-config` with a message naming the change instead of a bare
"unknown key". Keyed by (the mapping's path with list indexes written `[]`, the old key).
"""

from __future__ import annotations

import re

CHANGED_KEYS: dict[tuple[str, str], str] = {
    ("services[]", "address"): (
        "'address' became 'addresses', a list of IPv4 and IPv6 addresses (address: X -> addresses: [X])"
    ),
    ("services[]", "instance"): (
        "'instance' became 'backends' (instance: NAME -> backends: {instances: [NAME]})"
    ),
}


def changed_key_message(mapping_path: str, key: str) -> str | None:
    """Why `key` is no longer taken in the mapping at `mapping_path`, or None."""
    return CHANGED_KEYS.get((re.sub(r"\[\d+\]", "[]", mapping_path), key))
