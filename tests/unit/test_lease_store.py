"""The election record's chain: exclusive creation is the compare-and-swap, and it stays short."""

from __future__ import annotations

from typing import Any, cast

from fabricd.authority.election import LeaseRecord, Write
from fabricd.authority.lease_store import KEEP, LeaseStore
from fabricd.lxd.api import LXDApi, LXDRequestFailed

PREFIX = "fabricd-authority-"


class NetworkACLs:
    """LXD's network-acl endpoints as the store uses them: names are unique, a create may fail."""

    def __init__(self) -> None:
        self.acls: dict[str, dict[str, Any]] = {}
        self.most = 0

    def get(self, path: str, **params: object) -> Any:
        if path == "/network-acls":
            return [f"/1.0/network-acls/{name}" for name in self.acls]
        return self.acls[path.rsplit("/", 1)[-1]]

    def post(self, path: str, body: dict[str, Any], **params: object) -> None:
        if body["name"] in self.acls:
            raise LXDRequestFailed(path, 409, "Network ACL by that name exists", "POST")
        self.acls[body["name"]] = body
        self.most = max(self.most, len(self.acls))

    def delete(self, path: str, **params: object) -> None:
        self.acls.pop(path.rsplit("/", 1)[-1], None)


def write(store: LeaseStore, holder: str) -> bool:
    read = store.read()
    assert read.version is not None
    return store.write(Write(LeaseRecord(holder=holder), read.version, "renew"))


def test_the_chain_holds_keep_records_between_writes() -> None:
    acls = NetworkACLs()
    store = LeaseStore(cast(LXDApi, acls), PREFIX)
    for _ in range(20):
        assert write(store, "m1")
        assert len(acls.acls) <= KEEP
    assert acls.most <= KEEP + 1
    record = store.read().record
    assert record is not None and record.holder == "m1"


def test_of_two_writers_on_one_version_exactly_one_wins() -> None:
    acls = NetworkACLs()
    first, second = LeaseStore(cast(LXDApi, acls), PREFIX), LeaseStore(cast(LXDApi, acls), PREFIX)
    version = first.read().version
    assert version is not None and second.read().version == version
    won = [
        store.write(Write(LeaseRecord(holder=name), version, "take"))
        for store, name in ((first, "m1"), (second, "m2"))
    ]
    assert won == [True, False]
    record = first.read().record
    assert record is not None and record.holder == "m1"
