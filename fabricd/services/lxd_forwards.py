"""The LXD calls behind an OVN service's forward steps (blocking: run them in a worker thread)."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

from fabricd.lxd.api import LXDApi
from fabricd.services.model import OWNED_FORWARD, ForwardStep


class ForwardWriter(Protocol):
    def apply(self, step: ForwardStep) -> None: ...


class LXDForwards:
    """Create, retarget or delete a network forward. A retarget is a PUT conditional on the ETag
    just read, keeping the forward's port entries: a concurrent writer makes it fail, not vanish."""

    def __init__(self, api: LXDApi) -> None:
        self._api = api

    def apply(self, step: ForwardStep) -> None:
        project = step.network.project
        collection = f"/networks/{quote(step.network.network, safe='')}/forwards"
        path = f"{collection}/{quote(step.listen, safe='')}"
        if step.action == "create":
            body = {"listen_address": step.listen, "description": OWNED_FORWARD,
                    "config": {"target_address": step.target}}  # fmt: skip
            self._api.post(collection, body, project=project)
        elif step.action == "update":
            current = self._api.get_versioned(path, project=project)
            metadata = current.metadata if isinstance(current.metadata, dict) else {}
            body = {
                "description": metadata.get("description", OWNED_FORWARD),
                "config": {**(metadata.get("config") or {}), "target_address": step.target},
                "ports": metadata.get("ports") or [],
            }
            self._api.write("PUT", path, body, current.etag, project=project)
        else:
            self._api.delete(path, project=project)
