"""Typed values from a lab node's fabric.* labels."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from fabric_lab.node import LabError
from fabric_lab.topology_model import Node


def underlay_address(node: Node, label: str, what: str) -> IPv4Address | IPv6Address:
    """The label's IP address; the loopback or an unspecified address can never be an underlay."""
    text = node.labels.get(label, "").strip()
    try:
        address = ip_address(text)
    except ValueError:
        raise LabError(f"node {node.name}: label {label} must be {what}, not {text!r}") from None
    if address.is_unspecified or address.is_loopback:
        raise LabError(f"node {node.name}: label {label} must be an underlay address, not {text}")
    return address
