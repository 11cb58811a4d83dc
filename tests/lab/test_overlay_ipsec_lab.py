"""IPsec for the overlay against the real kernel, inside a namespace of its own.

Kernels without ESP refuse the states; the plan must then leave nothing behind. Policies need no
ESP, so they show that what is applied is what was planned, and that a rollback removes only what
this call added.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from pyroute2 import netns

from fabricd.config.model import IPAddress
from fabricd.overlay.ipsec import IPsecPlan, plan_ipsec, policy_argv
from fabricd.overlay.ipsec_apply import IPsecUnavailable, apply_ipsec, remove_ipsec

pytestmark = pytest.mark.lab

LOCAL, PEERS = IPv4Address("10.99.1.11"), [IPv4Address("10.99.1.12"), IPv4Address("10.99.2.13")]
LOCAL6, PEERS6 = IPv6Address("fd00:99:1::11"), [IPv6Address("fd00:99:2::12")]
KEY = bytes(range(32, 64))
PORT, VNI = 4789, 4242


@pytest.fixture
def ns(lab_host: None) -> Iterator[str]:
    name = f"fabtest-ipsec-{os.getpid()}"
    if name in netns.listnetns():  # left by an aborted run of this very process id
        netns.remove(name)
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def xfrm(name: str, kind: str) -> str:
    result = subprocess.run(["ip", "-n", name, "xfrm", kind], capture_output=True, text=True, check=True)
    return result.stdout


def listed_policies(name: str) -> set[tuple[str, str, str]]:
    """(direction, src, dst) of each policy, from `ip xfrm policy` (iproute2 has no JSON for xfrm)."""
    found = set()
    selector: list[str] = []
    for line in xfrm(name, "policy").splitlines():
        words = line.split()
        if line.startswith("src "):
            selector = words
            assert words[4:8] == ["proto", "udp", "dport", str(PORT)], line
        elif words[:1] == ["dir"]:
            found.add((words[1], selector[1], selector[3]))
    return found


def planned_policies(plan: IPsecPlan) -> set[tuple[str, str, str]]:
    return {
        (p.direction, f"{p.src}/{p.src.max_prefixlen}", f"{p.dst}/{p.dst.max_prefixlen}")
        for p in plan.policies
    }


def policies_only(plan: IPsecPlan) -> IPsecPlan:
    return replace(plan, states=())


@pytest.mark.parametrize(("local", "peers"), [(LOCAL, PEERS), (LOCAL6, PEERS6)], ids=["v4", "v6"])
def test_policies_are_applied_and_removed(ns: str, local: IPAddress, peers: list[IPAddress]) -> None:
    plan = policies_only(plan_ipsec(local, peers, KEY, PORT, VNI))
    apply_ipsec(plan, netns=ns)
    assert listed_policies(ns) == planned_policies(plan)
    assert len(plan.policies) == 2 * len(peers)
    assert f"reqid {plan.policies[0].reqid}" in xfrm(ns, "policy")
    remove_ipsec(plan, netns=ns)
    assert xfrm(ns, "policy") == ""
    remove_ipsec(plan, netns=ns)  # again: already gone is fine


def test_failed_apply_removes_only_what_it_added(ns: str) -> None:
    plan = policies_only(plan_ipsec(LOCAL, PEERS, KEY, PORT, VNI))
    # Someone else's policy, identical to the plan's last: adding that one fails with "File exists".
    preexisting = plan.policies[-1]
    subprocess.run(["ip", "-n", ns, *policy_argv(preexisting)[1:]], check=True)
    with pytest.raises(IPsecUnavailable, match="File exists") as info:
        apply_ipsec(plan, netns=ns)
    assert "the 3 entries added before were removed again" in str(info.value)
    assert listed_policies(ns) == planned_policies(replace(plan, policies=(preexisting,)))


def test_full_apply_is_all_or_nothing(ns: str) -> None:
    plan = plan_ipsec(LOCAL, PEERS, KEY, PORT, VNI)
    try:
        apply_ipsec(plan, netns=ns)
    except IPsecUnavailable as error:
        # This kernel has no ESP: say so, and leave nothing installed.
        assert error.lacks_esp, str(error)
        assert "the kernel lacks ESP" in str(error) and "esp4/esp6" in str(error)
        assert str(error).endswith("; nothing had been added")  # the first state already failed
        assert KEY.hex() not in str(error) and all(s.key.hex() not in str(error) for s in plan.states)
        assert xfrm(ns, "state") == ""
        assert xfrm(ns, "policy") == ""
        return
    states = xfrm(ns, "state")
    for s in plan.states:
        assert f"spi {s.spi:#010x}" in states
    assert listed_policies(ns) == planned_policies(plan)
    remove_ipsec(plan, netns=ns)
    assert xfrm(ns, "state") == ""
    assert xfrm(ns, "policy") == ""
