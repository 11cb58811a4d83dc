"""Instances on a member LXD cannot reach (listed as stubs) keep what was known of them."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from fabricd.frozen import FrozenMap
from fabricd.lxd.records import InstanceRecord, NicRecord
from fabricd.lxd.unreachable import is_stub, keep_unreachable
from tests.unit.lxd_strategies import instances

NIC = NicRecord("eth0", FrozenMap({"nictype": "bridged", "parent": "fabric0"}), "00:16:3e:00:00:01",
                "veth1", ("192.168.100.50/24",))  # fmt: skip
KNOWN = InstanceRecord("default", "c3", "container", "Running", "h3", (NIC,), FrozenMap({"user.a": "1"}))
STUB = InstanceRecord("default", "c3", "container", "Error", "h3")  # what LXD lists while h3 is cut off


def test_a_stub_keeps_the_nics_and_config_it_had_with_its_own_status() -> None:
    (kept,) = keep_unreachable({("default", "c3"): KNOWN}, [STUB])
    assert kept == dataclasses.replace(KNOWN, status="Error")


def test_a_stub_never_seen_or_seen_elsewhere_stays_a_stub() -> None:
    assert keep_unreachable({}, [STUB]) == (STUB,)
    moved = dataclasses.replace(KNOWN, location="h2")
    assert keep_unreachable({("default", "c3"): moved}, [STUB]) == (STUB,)
    other_project = {("p", "c3"): dataclasses.replace(KNOWN, project="p")}
    assert keep_unreachable(other_project, [STUB]) == (STUB,)


def test_an_instance_lxd_did_read_is_taken_as_read() -> None:
    stopped = dataclasses.replace(KNOWN, status="Stopped", nics=())  # a real change, not a stub
    assert keep_unreachable({("default", "c3"): KNOWN}, [stopped]) == (stopped,)
    errored = dataclasses.replace(KNOWN, status="Error")  # an error LXD reports with its devices
    assert keep_unreachable({("default", "c3"): KNOWN}, [errored]) == (errored,)


@given(st.lists(instances(True), max_size=8), st.lists(instances(True), max_size=8))
def test_only_stubs_known_on_the_same_member_change_and_nothing_else(
    before: list[InstanceRecord], fresh: list[InstanceRecord]
) -> None:
    previous = {(i.project, i.name): i for i in before}
    kept = keep_unreachable(previous, fresh)
    assert len(kept) == len(fresh)
    for old, new in zip(fresh, kept, strict=True):
        known = previous.get((old.project, old.name))
        if is_stub(old) and known is not None and known.location == old.location:
            assert new == dataclasses.replace(old, nics=known.nics, config=known.config)
        else:
            assert new == old
