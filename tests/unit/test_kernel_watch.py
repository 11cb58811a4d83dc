"""KernelWatch: which notifications count, and the watch against a real kernel in a network
namespace of its own (a forked child unshares one; the machine's interfaces are never touched)."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2 import IPRoute

from fabricd.kernel_watch import (
    AF_BRIDGE,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    KernelWatch,
    relevant,
)
from tests.unit.own_netns import repr_in_own_netns

RTM_NEWLINK = 16


def message(kind: int, family: int, body: int = 12) -> bytes:
    payload = bytes([family]) + bytes(body - 1)
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, 0, 0) + payload


def test_neighbour_messages_count_only_for_the_bridge() -> None:
    assert not relevant(message(RTM_NEWNEIGH, socket.AF_INET))
    assert not relevant(message(RTM_DELNEIGH, socket.AF_INET6))
    assert relevant(message(RTM_NEWNEIGH, AF_BRIDGE))
    assert relevant(message(RTM_NEWLINK, socket.AF_UNSPEC))
    assert relevant(struct.pack("=IHHII", 3, RTM_NEWNEIGH, 0, 0, 0))  # malformed: read


KINDS = st.sampled_from([RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWLINK, 20])
FAMILIES = st.sampled_from([socket.AF_INET, socket.AF_INET6, AF_BRIDGE])


@given(st.lists(st.tuples(KINDS, FAMILIES), max_size=6))
def test_a_batch_counts_when_any_of_its_messages_does(batch: list[tuple[int, int]]) -> None:
    data = b"".join(message(kind, family) for kind, family in batch)
    expected = any(kind not in (RTM_NEWNEIGH, RTM_DELNEIGH) or family == AF_BRIDGE for kind, family in batch)
    assert relevant(data) == expected


def in_own_netns() -> list[bool]:
    """What a watch said at each step, in a fresh network namespace (run in a forked child)."""
    seen = []
    watch = KernelWatch(RTMGRP_LINK | RTMGRP_NEIGH)
    seen.append(watch.changed())  # never read: read
    watch.read()
    seen.append(watch.changed())  # nothing happened
    with IPRoute() as ipr:
        ipr.link("add", ifname="kw0", kind="bridge")
        time.sleep(0.05)
        seen.append(watch.changed())  # a link appeared
        watch.read()
        seen.append(watch.changed())
        index = ipr.link_lookup(ifname="kw0")[0]
        ipr.link("set", index=index, state="up")
        ipr.addr("add", index=index, address="192.0.2.1", prefixlen=24)
        watch.read()  # reads that began before these would have missed them; drain
        watch.changed()
        watch.read()
        ipr.neigh("add", dst="192.0.2.9", lladdr="02:00:00:00:00:09", ifindex=index, state=0x80)
        time.sleep(0.05)
        seen.append(watch.changed())  # an ARP entry is not ours
    stale = KernelWatch(RTMGRP_LINK, max_age=0.0)
    stale.changed()
    stale.read()
    time.sleep(0.01)
    seen.append(stale.changed())  # older than max_age: read
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root")
def test_the_watch_follows_a_real_kernel_in_a_namespace_of_its_own() -> None:
    assert repr_in_own_netns(in_own_netns) == repr([True, False, True, False, False, True])
