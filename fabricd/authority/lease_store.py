"""The election's record in LXD: a chain of network ACLs that nothing uses, one per write.

Why a chain of created objects and not one object updated with If-Match: LXD checks an ETag and
then writes in a separate step, so two members that PUT with the same ETag at the same moment
both succeed (measured in the overlay lab: of 30 simultaneous pairs, 20 both won). Creating an
object is exclusive: the name is unique in LXD's Raft-replicated database, so of two members
creating the same name exactly one wins (30 of 30 in the same lab). So every write, take, renew
or release, creates `fabricd-authority-<seq+1>` after reading `<seq>` as the newest: a
compare-and-swap on the sequence number. A member cut off from the majority cannot create, so
it cannot win.

- Reading lists the chain and reads the newest; its sequence number is the "ETag".
- After creating, the writer lists again: a name it re-created after the cleanup had deleted
  it (a writer that slept through many writes) is not the newest, so that write lost.
- Each writer deletes the records older than the newest `KEEP` after its write, so the chain stays
  short.

Why network ACLs: creating or deleting one that nothing uses stores config and does nothing else
(LXD applies an ACL only to the OVN networks and NICs that name it). The LXD observer ignores
their events (`fabricd.lxd.events.ELECTION_ACL`), so renewals cause no reconcile pass.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from fabricd.authority.election import LEASE_KEY, LeaseRecord, StoreRead, Write
from fabricd.lxd.api import LXDApi, LXDRequestFailed, LXDUnavailable
from fabricd.lxd.events import ELECTION_ACL

PROJECT = "default"
KEEP = 4
# LXD answers a GET (or PUT) of an ACL with 404 "Failed getting ACL usage: Network ACL not found"
# when another ACL is deleted while it works out which use this one (each renewal deletes one: 3
# of 720 reads failed in bench.handover). An immediate retry reads it.
READ_ATTEMPTS = 3
RETRY_PAUSE = 0.01
DESCRIPTION = "fabricd DHCP/DNS authority election record; attached to nothing, do not attach or edit"


class LeaseStore:
    def __init__(self, api: LXDApi, prefix: str = ELECTION_ACL, project: str = PROJECT) -> None:
        self._api = api
        self._prefix = prefix
        self._project = project
        self._stale: tuple[int, ...] = ()

    def read(self) -> StoreRead:
        try:
            chain = self._chain()
            if not chain:
                return StoreRead(LeaseRecord(), "0")
            newest = chain[-1]
            metadata, _ = get_acl(self._api, f"{self._prefix}{newest}", self._project)
        except (LXDUnavailable, LXDRequestFailed) as exc:
            return StoreRead(None, None, str(exc))
        self._stale = chain[:-KEEP]
        config = (metadata.get("config") if isinstance(metadata, dict) else None) or {}
        return StoreRead(LeaseRecord.decode(config.get(LEASE_KEY)), str(newest))

    def write(self, write: Write) -> bool:
        """True when this write is the newest record; False when another host wrote first."""
        seq = int(write.if_match) + 1
        record = dataclasses.replace(write.record, seq=seq)
        body = {
            "name": f"{self._prefix}{seq}",
            "description": DESCRIPTION,
            "config": {LEASE_KEY: record.encode()},
            "ingress": [],
            "egress": [],
        }
        try:
            self._api.post("/network-acls", body, project=self._project)
            chain = self._chain()
        except (LXDUnavailable, LXDRequestFailed):
            return False  # exists already (another host wrote first), or LXD did not answer
        # Pruned from the listing after this write, so the chain holds KEEP records between writes
        # and KEEP + 1 only from one create to its cleanup.
        self._stale = chain[:-KEEP]
        self._clean_up()
        return chain[-1] == seq

    def _chain(self) -> tuple[int, ...]:
        urls: Any = self._api.get("/network-acls", project=self._project)
        names = (str(url).rsplit("/", 1)[-1] for url in (urls if isinstance(urls, list) else ()))
        suffixes = (name.removeprefix(self._prefix) for name in names if name.startswith(self._prefix))
        return tuple(sorted(int(suffix) for suffix in suffixes if suffix.isdigit()))

    def _clean_up(self) -> None:
        for seq in self._stale:
            with contextlib.suppress(LXDUnavailable, LXDRequestFailed):  # another writer's cleanup won
                self._api.delete(f"/network-acls/{self._prefix}{seq}", project=self._project)
        self._stale = ()


def get_acl(api: LXDApi, name: str, project: str) -> tuple[Any, int]:
    """The ACL's metadata and how many retries it took; a 404 is retried (see READ_ATTEMPTS)."""
    retries = 0
    while True:
        try:
            return api.get(f"/network-acls/{name}", project=project), retries
        except LXDRequestFailed as exc:
            retries += 1
            if exc.status != 404 or retries == READ_ATTEMPTS:
                raise
        time.sleep(RETRY_PAUSE)
