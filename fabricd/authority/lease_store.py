"""The election's record in LXD: a network ACL that nothing uses, read and written with ETags.

Why an unattached network ACL: updating one stores its config in the cluster database and does
nothing else (LXD applies an ACL only to the OVN networks and NICs that use it; this one is used by
none), unlike a managed network, which LXD reconfigures on update, or a profile, which it applies
to every instance using it. LXD's database is Raft-replicated, so a member cut off from the
majority cannot write it. The LXD observer ignores this ACL's events
(`fabricd.lxd.events.ELECTION_ACL`), so renewals cause no reconcile pass on other hosts.

Blocking: call from a worker thread.
"""

from __future__ import annotations

from typing import Any

from fabricd.authority.election import LEASE_KEY, LeaseRecord, StoreRead, Write
from fabricd.lxd.api import LXDApi, LXDPreconditionFailed, LXDRequestFailed, LXDUnavailable
from fabricd.lxd.events import ELECTION_ACL

PROJECT = "default"
DESCRIPTION = "fabricd DHCP/DNS authority election record; attached to nothing, do not attach or edit"


class LeaseStore:
    def __init__(self, api: LXDApi, name: str = ELECTION_ACL, project: str = PROJECT) -> None:
        self._api = api
        self._path = f"/network-acls/{name}"
        self._name = name
        self._project = project
        self._object: dict[str, Any] = {}

    def read(self) -> StoreRead:
        try:
            try:
                versioned = self._api.get_versioned(self._path, project=self._project)
            except LXDRequestFailed as exc:
                if exc.status != 404:
                    raise
                self._create()
                versioned = self._api.get_versioned(self._path, project=self._project)
        except (LXDUnavailable, LXDRequestFailed) as exc:
            return StoreRead(None, None, str(exc))
        metadata = versioned.metadata if isinstance(versioned.metadata, dict) else {}
        self._object = metadata
        config = metadata.get("config") or {}
        return StoreRead(LeaseRecord.decode(config.get(LEASE_KEY)), versioned.etag)

    def write(self, write: Write) -> bool:
        """True when this write won; False when another host wrote first (412) or LXD refused."""
        current = self._object
        config = dict(current.get("config") or {}) | {LEASE_KEY: write.record.encode()}
        body = {
            "description": current.get("description", DESCRIPTION),
            "config": config,
            "ingress": current.get("ingress") or [],
            "egress": current.get("egress") or [],
        }
        try:
            self._api.write("PUT", self._path, body, write.if_match, project=self._project)
        except LXDPreconditionFailed:
            return False
        except (LXDUnavailable, LXDRequestFailed):
            return False
        return True

    def _create(self) -> None:
        body = {"name": self._name, "description": DESCRIPTION, "config": {}, "ingress": [], "egress": []}
        try:
            self._api.post("/network-acls", body, project=self._project)
        except LXDRequestFailed as exc:
            if exc.status != 409 and "already exists" not in str(exc):  # another host created it first
                raise
