"""The control socket's wire format: one JSON request line, one JSON reply line.

Shared by the agent (server) and fabricctl (client) so both sides agree on framing and limits.
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a status with 50k routes fits comfortably
COMMANDS = ("status", "sections", "health", "routes", "events", "leases")
# Keys every status reply carries; later features fill the lists.
STATUS_KEYS = ("host", "bgp_peers", "routes", "overlay_peers", "authority")


class ProtocolError(Exception):
    """A malformed request or reply."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("expected a JSON object")
    return message
