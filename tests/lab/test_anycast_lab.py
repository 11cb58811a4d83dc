"""Anycast services with real client traffic on labs/anycast.clab.yml.

Three hosts run one echo instance each on 10.250.0.53 and fd00:250::53 (service `echo`, udp check
every 1 s, fall 2, rise 2, drain_delay 3 s, BFD 100 ms x 3); r1 (FRR) spreads the client's queries
over the hosts that announce (ECMP). The client sends 1,000 queries/s to each address and names the
host of every answer (fabric_lab/anycast_client.py). r1's kernel table, polled every 5 ms, is the
judge of paths; the client's lines are the judge of answers and losses.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric_lab import netns
from fabric_lab.anycast_lab import (
    ANYCAST_V4,
    ANYCAST_V6,
    HOSTS,
    SERVICE,
    UNDERLAY,
    EchoBackend,
    RouterFib,
    Traffic,
    all_hops,
    cut_link,
    heal_link,
    instance_addresses,
    router_paths,
    updates_received,
)
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, agent_pid, assert_nothing_left, fresh_lab, start_agent, stop_agent

pytestmark = pytest.mark.lab

LAB = "tany"
PREFIXES = {4: f"{ANYCAST_V4}/32", 6: f"{ANYCAST_V6}/128"}
INTERVAL, FALL, RISE, TIMEOUT, DRAIN_DELAY = 1.0, 2, 2, 0.5, 3.0  # labs/anycast/h*/fabricd.yaml
# A health failure is seen up to one interval after the kill (the next check), then FALL checks fail,
# the last one after its timeout; BGP to r1's kernel takes tens of ms, more on a loaded machine.
FAIL_BOUND = INTERVAL + (FALL - 1) * INTERVAL + TIMEOUT + 0.7
# 0.3 s BFD detection and FRR's withdrawal (0.32-0.51 s in the bfd lab), with a margin for a loaded machine.
BFD_BOUND = 0.6
KILL_LOSS_GOAL = 200  # 0.2 s worth at 1,000 queries/s

BACKENDS: dict[str, EchoBackend] = {}


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "anycast.clab.yml", LAB, state_root) as lab:
        try:
            for host in HOSTS:
                backend = EchoBackend(lab.node(host), f"{LAB}-echo-{host}")
                BACKENDS[host] = backend
                backend.launch()
            yield lab
        finally:
            for backend in BACKENDS.values():
                backend.stop()
    responders = [p for b in BACKENDS.values() for p in b.pids]
    assert [p for p in responders if netns.alive(p)] == [], "a responder outlived the lab"
    assert_nothing_left(lab, responders, ran_lxd=True, instances=tuple(b.instance for b in BACKENDS.values()))


@pytest.fixture
def fib(lab: Lab) -> Iterator[RouterFib]:
    with RouterFib(lab.node("r1").netns_name) as fib:
        for family, prefix in PREFIXES.items():
            fib.wait(prefix, all_hops(family), timeout=60)
        yield fib


@pytest.fixture
def traffic(lab: Lab, state_root: Path) -> Iterator[dict[int, Traffic]]:
    client = lab.node("client")
    flows = {
        4: Traffic(client, ANYCAST_V4, state_root / f"{LAB}-client4.jsonl"),
        6: Traffic(client, ANYCAST_V6, state_root / f"{LAB}-client6.jsonl"),
    }
    for flow in flows.values():
        flow.start()
    try:
        for flow in flows.values():
            flow.wait_settled(time.monotonic() + 0.5)
        yield flows
    finally:
        for flow in flows.values():
            flow.stop()


def service_row(lab: Lab, host: str) -> dict[str, Any]:
    """The `echo` row of `fabricctl services --json` on the host."""
    shown = json.loads(lab.node(host).fabricctl("services", "--json").stdout)
    rows = [row for row in shown["services"]["services"] if row["name"] == SERVICE]
    assert len(rows) == 1, shown
    row: dict[str, Any] = rows[0]
    return row


def address_states(lab: Lab, host: str) -> dict[str, str]:
    return {a["address"]: a["state"] for a in service_row(lab, host)["addresses"]}


def backend_states(lab: Lab, host: str) -> dict[str, str]:
    return {b["instance"]: b["state"] for b in service_row(lab, host)["backends"]}


def wait_states(lab: Lab, host: str, addresses: str, backend: str, timeout: float = 10) -> dict[str, Any]:
    """Until both anycast addresses are in state `addresses` and the backend in `backend`."""
    wanted = ({ANYCAST_V4: addresses, ANYCAST_V6: addresses}, {f"{LAB}-echo-{host}": backend})
    deadline = time.monotonic() + timeout
    while (address_states(lab, host), backend_states(lab, host)) != wanted:
        assert time.monotonic() < deadline, f"{host}: want {wanted}: {service_row(lab, host)}"
        time.sleep(0.1)
    return service_row(lab, host)


def watch_hops(
    fib: RouterFib,
    wanted: dict[int, set[str]],
    since: float,
    timeout: float,
    keep: dict[int, set[str]] | None = None,
) -> dict[int, float]:
    """Seconds from `since` until each family's next hops are `wanted`; every sample on the way must
    hold the `keep` hops (default: the wanted ones), so no path that should stay ever leaves."""
    staying = wanted if keep is None else keep
    reached: dict[int, float] = {}
    while len(reached) < len(wanted):
        elapsed = time.monotonic() - since
        assert elapsed < timeout, f"not within {timeout:g}s: { ({f: fib.hops(PREFIXES[f]) for f in wanted}) }"
        for family, hops in wanted.items():
            seen = fib.hops(PREFIXES[family])
            assert staying[family] <= seen, f"IPv{family}: a path that should stay left: {sorted(seen)}"
            if family not in reached and seen == hops:
                reached[family] = elapsed
        time.sleep(0.005)
    return reached


def back_again(fib: RouterFib, since: float, timeout: float, staying: tuple[str, ...]) -> dict[int, float]:
    """Seconds from `since` until every host's path is at r1 again, the `staying` ones never leaving."""
    keep = {f: all_hops(f, staying) for f in PREFIXES}
    return watch_hops(fib, {f: all_hops(f) for f in PREFIXES}, since, timeout, keep=keep)


def test_all_three_paths_are_in_the_router_fib_and_answer(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    for family, prefix in PREFIXES.items():
        assert fib.hops(prefix) == all_hops(family)
    start = time.monotonic()
    for family, flow in traffic.items():
        flow.wait_settled(start + 3)
        window = flow.window(start, start + 3)
        assert window.lost == 0, f"IPv{family}: {window.lost} lost with every path up"
        assert set(window.answered) == set(HOSTS), f"IPv{family}: answered by {dict(window.answered)}"
    for host in HOSTS:
        wait_states(lab, host, "announced", "up")
    paths = router_paths(lab.node("r1"), PREFIXES[4])
    assert set(paths) == all_hops(4), paths
    assert {p["local_pref"] for p in paths.values()} == {100}, paths


def test_failed_health_check_removes_only_that_path_and_recovery_waits_for_rise(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    r1, backend = lab.node("r1"), BACKENDS["h1"]
    others = {f: all_hops(f, ("h2", "h3")) for f in PREFIXES}
    updates_before = updates_received(r1, "h1")
    killed = time.monotonic()
    backend.kill_responder()
    removed = watch_hops(fib, others, killed, timeout=FAIL_BOUND + 5)
    gone = max(removed.values())
    row = wait_states(lab, "h1", "withdrawn", "down")
    updates_after = updates_received(r1, "h1")
    sent = {address: updates_after[address] - updates_before[address] for address in updates_after}
    restarted = time.monotonic()
    backend.start_responder()
    back = back_again(fib, restarted, RISE * INTERVAL + 10, ("h2", "h3"))
    settled = time.monotonic() + 0.5
    print(
        f"\nhealth check failed (responder SIGKILL) -> path gone at r1: {removed} s "
        f"(bound {FAIL_BOUND:.1f}); responder back -> path back: {back} s; "
        f"UPDATEs from h1 for the fall: {sent}"
    )
    assert gone <= FAIL_BOUND, removed
    assert all("no healthy backend" in a["reason"] for a in row["addresses"]), row
    # rise 2: the first passing check cannot bring the path back; the second, one interval later, can.
    for seconds in back.values():
        assert (RISE - 1) * INTERVAL - 0.1 <= seconds <= RISE * INTERVAL + INTERVAL + 1.0, back
    for address, count in updates_after.items():
        assert count - updates_before[address] == 1, (
            f"{address}: one health change, one UPDATE: {updates_after}"
        )
    for family, flow in traffic.items():
        flow.wait_settled(settled)
        window = flow.window(killed - 1, settled)
        assert window.silent_seconds() == [], f"IPv{family}: seconds with no answer at all"
        # Only h1's queries are lost, and only until its path left r1 (plus the client's timeout).
        late = [t for t in window.lost_at if t > killed + removed[family] + 0.05]
        assert late == [], f"IPv{family}: lost after the path left: {late[:5]}"
        assert window.answered["h2"] > 0 and window.answered["h3"] > 0, window.answered
        print(f"IPv{family}: {window.lost} queries lost while the failed backend was still announced")


def test_drain_moves_traffic_off_a_host_without_losing_a_query(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    h2, r1 = lab.node("h2"), lab.node("r1")
    others = {f: all_hops(f, ("h1", "h3")) for f in PREFIXES}
    drained = time.monotonic()
    h2.fabricctl("drain", "--service", SERVICE)
    try:
        left = watch_hops(fib, others, drained, timeout=DRAIN_DELAY + 5)
        # First still announced, with GRACEFUL_SHUTDOWN: r1 keeps the path but no longer uses it.
        during = {f: router_paths(r1, PREFIXES[f]) for f in PREFIXES}
        state_during = address_states(lab, "h2")
        # After drain_delay the host withdraws; traffic stays away and nothing is lost.
        time.sleep(max(0.0, drained + DRAIN_DELAY + 1.5 - time.monotonic()))
        assert {f: fib.hops(PREFIXES[f]) for f in PREFIXES} == others
        after_delay = {f: router_paths(r1, PREFIXES[f]) for f in PREFIXES}
        row = wait_states(lab, "h2", "withdrawn", "drained")
    finally:
        undrained = time.monotonic()
        h2.fabricctl("undrain", "--service", SERVICE)
    back = back_again(fib, undrained, 15, ("h1", "h3"))
    settled = time.monotonic() + 1
    print(f"\ndrain -> h2 out of r1's ECMP set after {left} s; undrain -> back after {back} s")
    assert set(state_during.values()) == {"draining"}, state_during
    for family, peer in zip(PREFIXES, UNDERLAY["h2"], strict=True):
        h2_path = during[family].get(peer)
        assert h2_path is not None, f"IPv{family}: h2 withdrew before drain_delay: {during[family]}"
        assert "graceful-shutdown" in h2_path["communities"] and h2_path["local_pref"] == 0, h2_path
        assert peer not in after_delay[family], (
            f"IPv{family}: still announced after drain_delay: {after_delay}"
        )
    assert all("drain" in a["reason"] for a in row["addresses"]), row
    for family, flow in traffic.items():
        flow.wait_settled(settled)
        window = flow.window(drained - 1, settled)
        assert window.lost == 0, f"IPv{family}: {window.lost} lost during the drain: {window.lost_at[:5]}"
        after = flow.window(drained + max(left.values()) + 0.5, undrained - 1)  # whole seconds in between
        assert after.answered["h2"] == 0 and after.sent > 0, (
            f"IPv{family}: still reaching h2: {after.answered}"
        )


def test_link_cut_removes_the_path_within_bfd_detection(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    r1 = lab.node("r1")
    others = {f: all_hops(f, ("h2", "h3")) for f in PREFIXES}
    cut = time.monotonic()
    cut_link(r1, LAB, "h1")
    try:
        removed = watch_hops(fib, others, cut, timeout=10)
    finally:
        heal_link(r1, LAB)
    print(f"\nh1's link cut at r1 -> path gone: {removed} s (BFD 100 ms x 3)")
    for seconds in removed.values():
        assert seconds <= BFD_BOUND, removed
    back_again(fib, time.monotonic(), 30, ("h2", "h3"))
    settled = time.monotonic()
    for family, flow in traffic.items():
        flow.wait_settled(settled)
        window = flow.window(cut - 1, settled)
        assert window.silent_seconds() == [], f"IPv{family}: seconds with no answer at all"
        assert window.lost_between(cut + removed[family] + 0.05, settled) == 0, f"IPv{family}: lost after"


def test_killed_fabricd_removes_its_path_at_once(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    others = {f: all_hops(f, ("h1", "h2")) for f in PREFIXES}
    killed = time.monotonic()
    os.kill(agent_pid(lab, "h3"), signal.SIGKILL)
    removed = watch_hops(fib, others, killed, timeout=5)
    settled = time.monotonic() + 0.5
    print(f"\nh3's fabricd SIGKILL -> path gone: {removed} s")
    for seconds in removed.values():
        assert seconds <= BFD_BOUND, removed
    for family, flow in traffic.items():
        flow.wait_settled(settled)
        window = flow.window(killed - 1, settled)
        print(f"IPv{family}: {window.lost} queries lost")
        assert window.lost <= KILL_LOSS_GOAL, window.lost_at[:10]
    start_agent(lab, "h3")
    back_again(fib, time.monotonic(), 30, ("h1", "h2"))


def test_clean_stop_withdraws_before_the_host_route_goes(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    """SIGTERM: the announcement goes first (r1 drops the path), the host route after it, so queries
    r1 still sends to the host are delivered (docs/services.md, Ordering); a start brings the path
    back after rise checks."""
    h3 = lab.node("h3")
    pid = agent_pid(lab, "h3")
    gone: dict[str, float] = {}
    stopped = time.monotonic()
    try:
        with RouterFib(h3.netns_name) as host_table:
            for family, prefix in PREFIXES.items():
                assert host_table.hops(prefix) == {instance_addresses("h3")[0 if family == 4 else 1]}
            stopped = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            while len(gone) < 4 and time.monotonic() - stopped < 20:
                elapsed = time.monotonic() - stopped
                for family, prefix in PREFIXES.items():
                    if f"r1 v{family}" not in gone and fib.hops(prefix) == all_hops(family, ("h1", "h2")):
                        gone[f"r1 v{family}"] = elapsed
                    if f"h3 v{family}" not in gone and not host_table.hops(prefix):
                        gone[f"h3 v{family}"] = elapsed
                time.sleep(0.002)
        deadline = time.monotonic() + 20
        while netns.alive(pid):
            assert time.monotonic() < deadline, "fabricd did not stop"
            time.sleep(0.05)
        settled = time.monotonic() + 0.5
        lost = {}
        for family, flow in traffic.items():
            flow.wait_settled(settled)
            lost[family] = flow.window(stopped - 1, settled).lost
        print(
            f"\nh3's fabricd SIGTERM -> seconds until the path left r1 and the host route left h3: {gone}; "
            f"queries lost: {lost}"
        )
    finally:
        restarted = time.monotonic()
        start_agent(lab, "h3")
        back = back_again(fib, restarted, 30, ("h1", "h2"))
        print(f"fabricd started -> path back after {back} s")
    assert set(gone) == {"r1 v4", "r1 v6", "h3 v4", "h3 v6"}, f"not all gone within 20 s: {gone}"
    for family in PREFIXES:
        assert gone[f"r1 v{family}"] <= gone[f"h3 v{family}"], (
            f"IPv{family}: host route removed first: {gone}"
        )
    assert set(lost.values()) == {0}, f"queries lost on a clean stop: {lost}"


def test_a_drain_survives_an_agent_restart(lab: Lab, fib: RouterFib) -> None:
    h2 = lab.node("h2")
    others = {f: all_hops(f, ("h1", "h3")) for f in PREFIXES}
    h2.fabricctl("drain", "--service", SERVICE)
    try:
        wait_states(lab, "h2", "withdrawn", "drained", timeout=DRAIN_DELAY + 5)
        stop_agent(lab, "h2")
        started = time.monotonic()
        start_agent(lab, "h2")
        # Long enough for rise checks and BGP to bring the path back, had the drain been forgotten.
        while time.monotonic() - started < RISE * INTERVAL + 4:
            seen = {f: fib.hops(PREFIXES[f]) for f in PREFIXES}
            assert seen == others, f"the drained host is back at r1 after a restart: {seen}"
            time.sleep(0.02)
        row = wait_states(lab, "h2", "withdrawn", "drained")
        assert row["drained_since"] is not None, row
    finally:
        undrained = time.monotonic()
        h2.fabricctl("undrain", "--service", SERVICE)
    back_again(fib, undrained, 15, ("h1", "h3"))


def test_a_host_drain_takes_every_service_of_the_host(
    lab: Lab, fib: RouterFib, traffic: dict[int, Traffic]
) -> None:
    """`fabricctl drain` without --service drains the whole host; undrain ends it."""
    h1 = lab.node("h1")
    others = {f: all_hops(f, ("h2", "h3")) for f in PREFIXES}
    drained = time.monotonic()
    h1.fabricctl("drain")
    try:
        watch_hops(fib, others, drained, timeout=DRAIN_DELAY + 5)
        row = wait_states(lab, "h1", "withdrawn", "drained", timeout=DRAIN_DELAY + 5)
        shown = json.loads(h1.fabricctl("services", "--json").stdout)["services"]["drain"]
        assert shown["host"] is not None, shown
        assert row["drained_since"] is not None, row
    finally:
        undrained = time.monotonic()
        h1.fabricctl("undrain")
    back_again(fib, undrained, 15, ("h2", "h3"))
    wait_states(lab, "h1", "announced", "up")
    settled = time.monotonic() + 1
    for family, flow in traffic.items():
        flow.wait_settled(settled)
        window = flow.window(drained - 1, settled)
        assert window.lost == 0, f"IPv{family}: {window.lost} lost during a host drain"


def test_one_failed_check_inside_fall_changes_nothing_at_the_router(lab: Lab, fib: RouterFib) -> None:
    """The responder away for half an interval: at most one check fails (fall 2), so the backend
    stays up, the path never leaves r1 and no UPDATE is sent."""
    r1, backend = lab.node("r1"), BACKENDS["h2"]
    before = updates_received(r1, "h2")
    killed = time.monotonic()
    backend.kill_responder()
    time.sleep(max(0.0, killed + INTERVAL / 2 - time.monotonic()))
    backend.start_responder()
    assert time.monotonic() - killed < INTERVAL, "the responder was away a whole interval: not this test"
    while time.monotonic() - killed < FALL * INTERVAL + 2:
        for family, prefix in PREFIXES.items():
            seen = fib.hops(prefix)
            assert seen == all_hops(family), f"IPv{family}: the path left after one failed check: {seen}"
        time.sleep(0.01)
    assert updates_received(r1, "h2") == before
    assert backend_states(lab, "h2") == {f"{LAB}-echo-h2": "up"}
