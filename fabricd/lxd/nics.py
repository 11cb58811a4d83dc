"""What an instance NIC's config and volatile data say, read one way for routes and overlay alike."""

from __future__ import annotations

import re

from fabricd.lxd.records import NicRecord

_MAC = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")


def nic_network(nic: NicRecord) -> str:
    """The managed network or bridge a NIC is on: its `network`, or for an old-style bridged NIC
    (`nictype` bridged, no `network`) its `parent`; "" when neither. LXD refuses `parent` and
    `nictype` next to `network`, so the two never disagree."""
    name = (nic.network or "").strip()
    if not name and nic.config.get("nictype") == "bridged":
        name = nic.config.get("parent", "").strip()
    return name


def on_bridge(nic: NicRecord, bridge: str) -> bool:
    """Whether the NIC is attached to `bridge`, by managed network or bridged parent."""
    return nic_network(nic) == bridge


def normalize_mac(text: str | None) -> tuple[str | None, str]:
    """(lower-case colon-form MAC, "") for a valid unicast MAC, else (None, reason)."""
    if text is None or not text.strip():
        return None, "no MAC address known"
    mac = text.strip().lower()
    if not _MAC.fullmatch(mac):
        return None, f"malformed MAC address {text!r}"
    mac = mac.replace("-", ":")
    if mac == "00:00:00:00:00:00":
        return None, f"all-zeros MAC address {mac}"
    if int(mac[:2], 16) & 1:
        return None, f"multicast MAC address {mac}"
    return mac, ""
