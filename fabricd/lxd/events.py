"""LXD's event stream: what each lifecycle event asks fabricd to re-read.

Events are hints, not facts (their payload has no config, and a failed change can still emit one),
so an event only names the object to re-read; the object itself is always fetched again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from ws4py.client import WebSocketBaseClient

from fabricd.config.model import ALL_PROJECTS
from fabricd.lxd.api import LXDApi


@dataclass(frozen=True, slots=True)
class InstanceHint:
    project: str
    name: str


@dataclass(frozen=True, slots=True)
class NetworkHint:
    project: str
    name: str


@dataclass(frozen=True, slots=True)
class ResyncHint:
    reason: str


Hint = InstanceHint | NetworkHint | ResyncHint

# The DHCP/DNS authority's election records (fabricd.authority.lease_store): network ACLs named
# ELECTION_ACL + a sequence number, one created every half second, and the lease hand-over
# (fabricd.authority.handover), ELECTION_ACL + "leases"; attached to nothing, so their events carry
# nothing to re-read.
ELECTION_ACL = "fabricd-authority-"

# Changes that reach instances or networks indirectly: read everything again.
_RESYNC_PREFIXES = (
    "profile-",
    "project-",
    "cluster-member-",
    "config-updated",
    "network-renamed",  # the source names the new network; the old one must go too
    "network-acl-",
    "network-zone-",
)


def classify(event: Mapping[str, Any]) -> Hint | None:
    """The object a lifecycle event asks to re-read; None for other or unusable events. Never raises."""
    if not isinstance(event, Mapping) or event.get("type") != "lifecycle":
        return None
    metadata = event.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    action = str(metadata.get("action", ""))
    try:
        source = urlparse(str(metadata.get("source", "")))
    except ValueError:  # e.g. an unbalanced "[" read as an IPv6 host
        return None
    parts = [unquote(p) for p in source.path.split("/") if p]
    project = str(event.get("project") or parse_qs(source.query).get("project", ["default"])[0])
    if action.startswith("network-acl-") and len(parts) > 2 and parts[2].startswith(ELECTION_ACL):
        return None
    if action == "instance-renamed" or action.startswith(_RESYNC_PREFIXES):
        return ResyncHint(action)
    if len(parts) >= 3 and parts[:2] == ["1.0", "instances"]:
        return InstanceHint(project, parts[2])
    if len(parts) >= 3 and parts[:2] == ["1.0", "networks"]:
        return NetworkHint(project, parts[2])
    return None


class _EventSocket(WebSocketBaseClient):  # type: ignore[misc]
    """ws4py client that hands each JSON message to a callback (called on the reader thread)."""

    on_message: Callable[[bytes], None]
    on_close: Callable[[str], None]

    def received_message(self, message: Any) -> None:
        self.on_message(bytes(message.data))

    def closed(self, code: int, reason: str | None = None) -> None:
        self.on_close(f"events websocket closed ({code} {reason or ''})".strip())


class EventStream:
    """Runs the events websocket on its own thread; calls back for every message and on close."""

    def __init__(
        self, api: LXDApi, project: str, on_message: Callable[[bytes], None], on_close: Callable[[str], None]
    ) -> None:
        client = api.websocket_client_factory()
        self._socket: _EventSocket = client.events(websocket_client=_EventSocket)
        scope = "all-projects=true" if project == ALL_PROJECTS else f"project={project}"
        self._socket.resource = f"{self._socket.resource}?type=lifecycle&{scope}"
        self._socket.on_message = on_message
        self._socket.on_close = on_close
        self._thread = threading.Thread(target=self._run, name="lxd-events", daemon=True)

    def start(self) -> None:
        self._socket.connect()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._socket.run()
        except Exception as exc:  # the thread must always report its end
            self._socket.on_close(f"events websocket failed: {exc}")

    def close(self) -> None:
        try:
            self._socket.close()
        except Exception:  # already closed or never opened: nothing left to release
            return
