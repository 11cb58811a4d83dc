"""BFD for fabricd's BGP sessions on labs/bfd.clab.yml: FRR's bfdd on r1, BIRD under fabricd on h1.

h1 runs BFD (100 ms x 3) on its IPv4 and IPv6 sessions with r1; h2 runs none, so one cut of both
hosts' links at r1, in the same run, shows both: BFD against the hold time (3 s). The cut drops
every packet on r1's host-facing interfaces with nftables in r1's namespace only (the links stay
up, so nothing but BFD or the hold time can tell). r1's kernel table, polled every 5 ms, is the
judge.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import NetNS

from fabric_lab import netns
from fabric_lab.bfd_lab import (
    H1_ROUTES,
    H1_V4,
    H1_V6,
    H2_ROUTES,
    H2_V4,
    H2_V6,
    bfd_states,
    bgp_prefixes,
    bgp_up,
    diagnose,
    gone_after,
    kill_and_watch,
    launch_both,
    links_cut,
    router_bfd,
    status,
    wait_all_up,
    wait_status,
)
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, agent_pid, fresh_lab, processes_mentioning, start_agent

pytestmark = pytest.mark.lab

# Seconds: 0.3 s detection and FRR's withdrawal (bench.bfd: worst 0.45 s over 15 cuts on this shared
# 2-core machine, with other labs and test suites on both cores), with a margin for a loaded machine.
BFD_BOUND = 0.6
RECONFIGURE = Path(__file__).with_name("bird_reconfigure_driver.py")


SEEN_BIRDS: list[int] = []  # every BIRD pid a test saw: none may outlive the lab


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "bfd.clab.yml", "tbfd", state_root) as lab:
        launch_both(lab, "tbfd")
        yield lab
    assert [p for p in SEEN_BIRDS if netns.alive(p)] == [], "a BIRD outlived the lab"


def bird_pid(lab: Lab) -> int:
    pid = status(lab.node("h1"))["bfd_daemon"]["pid"]
    assert isinstance(pid, int) and netns.alive(pid)
    SEEN_BIRDS.append(pid)
    return pid


def test_bfd_comes_up_on_both_sides_and_status_shows_it(lab: Lab) -> None:
    h1, h2, r1 = lab.node("h1"), lab.node("h2"), lab.node("r1")
    wait_all_up(lab)
    rows = {s["address"]: s for s in status(h1)["bfd_sessions"]}
    assert set(rows) == {"10.99.1.1", "fd00:99:1::1"}
    for row in rows.values():
        assert (row["state"], row["interface"], row["multihop"]) == ("Up", "eth1", False)
        assert (row["interval_ms"], row["multiplier"], row["detect_time_s"]) == (100, 3, 0.3)
    assert not [p for p in status(h1)["problems"] if "bfd" in p]
    # The router's side: sessions with h1 only, at 100 ms x 3 as negotiated with BIRD.
    seen = router_bfd(r1)
    assert set(seen) == {H1_V4, H1_V6}
    for peer in (H1_V4, H1_V6):
        assert seen[peer]["status"] == "up"
        assert seen[peer]["detect-multiplier"] == 3 and seen[peer]["receive-interval"] == 100
        assert seen[peer]["remote-detect-multiplier"] == 3 and seen[peer]["remote-receive-interval"] == 100
    text = h1.fabricctl("status").stdout
    assert "BFD PEER" in text and "100 ms x 3" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("BGP PEER"))
    end = lines.index("", start)
    column = lines[start].replace("BGP PEER", "PEER").split().index("BFD")
    bgp_lines = [line.split() for line in lines[start + 1 : end]]
    assert [line[column] for line in bgp_lines] == ["Up", "Up"], text
    # h2 has no BFD: nothing configured, nothing running, nothing to complain about.
    other = status(h2)
    assert other["bfd_sessions"] == [] and "bfd_daemon" not in other
    assert "BFD PEER" not in h2.fabricctl("status").stdout


def test_link_cut_drops_the_bfd_host_at_once_and_the_other_at_hold_time(lab: Lab) -> None:
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_all_up(lab)
    watched = {**H1_ROUTES, **H2_ROUTES}
    with NetNS(r1.netns_name) as ns:
        assert set(watched) <= bgp_prefixes(ns)
        with links_cut(r1, "tbfd_cut") as cut:
            gone = gone_after(ns, watched, cut, 10)
            h1_down = wait_status(
                h1, lambda s: set(bfd_states(s).values()) == {"Down"}, "h1 sees its BFD sessions down", 10
            )
    print(
        "\nlink cut at r1 -> route gone from r1's FIB: "
        + ", ".join(f"{p} {gone.get(p, float('nan')):.3f}s" for p in watched)
        + " (h1: BFD 100 ms x 3; h2: hold 3 s, no BFD)"
    )
    assert set(gone) == set(watched), gone
    for prefix in H1_ROUTES:
        assert gone[prefix] <= BFD_BOUND, gone
    for prefix in H2_ROUTES:
        assert 1.5 <= gone[prefix] <= 3.6, gone  # keepalives 1 s apart, hold 3 s
    assert max(gone[p] for p in H1_ROUTES) < min(gone[p] for p in H2_ROUTES) - 1.0
    problems = h1_down["problems"]
    assert "bfd session with r1 (10.99.1.1) is Down" in problems, problems
    assert "bfd session with r1-v6 (fd00:99:1::1) is Down" in problems, problems
    events = json.loads(h1.fabricctl("events", "--json").stdout)["events"]
    assert any(e["event"] == "bfd.session" and e.get("state") == "Down" for e in events), events[-5:]
    # Healed: BFD, BGP and the routes come back by themselves.
    wait_all_up(lab)


def test_a_killed_bird_is_restarted_and_its_sessions_return(lab: Lab) -> None:
    """BIRD killed: fabricd restarts it and its sessions come back. The router cannot tell a dead
    BFD responder from a dead host, so FRR usually drops h1's BGP sessions for a moment, and
    ExaBGP is back within milliseconds. When BGP returns that fast, FRR 8.4 can lose its BFD
    registration for the re-created dynamic neighbor (the old peer's deregistration races the
    new one's registration): r1 then runs no BFD session for h1 at all, and h1's status must say
    its BFD sessions are down. Printed: what happened, and how long h1's route was away."""
    h1, r1 = lab.node("h1"), lab.node("r1")
    wait_all_up(lab)
    old, fabricd = bird_pid(lab), agent_pid(lab, "h1")
    starts = status(h1)["bfd_daemon"]["starts"]
    with NetNS(r1.netns_name) as ns:
        gone_at, back_at = kill_and_watch(ns, old, "10.201.1.0/24")
    assert gone_at is None or back_at is not None, "h1's route did not come back"
    restarted = wait_status(
        h1, lambda s: s["bfd_daemon"]["pid"] not in (None, old) and bgp_up(s), "a new BIRD, BGP up", lab=lab
    )
    assert restarted["bfd_daemon"]["starts"] == starts + 1
    assert "exited with status -9" in str(restarted["bfd_daemon"]["last_exit"])
    assert agent_pid(lab, "h1") == fabricd
    deadline = time.monotonic() + 15
    while set(bfd_states(status(h1)).values()) != {"Up"} and time.monotonic() < deadline:
        time.sleep(0.2)
    final = status(h1)
    if set(bfd_states(final).values()) == {"Up"}:
        wait_all_up(lab)
        outcome = "BFD Up again on both sessions"
    else:  # per session: Up again, or lost by r1 and reported Down on h1
        at_router = router_bfd(r1)
        lost = []
        for row in final["bfd_sessions"]:
            host_address = H1_V4 if row["address"] == "10.99.1.1" else H1_V6
            if row["state"] == "Up":
                assert at_router.get(host_address, {}).get("status") == "up", diagnose(lab)
                continue
            assert host_address not in at_router, f"{row['address']} down on h1 only" + diagnose(lab)
            assert f"bfd session with {row['peer']} ({row['address']}) is Down" in final["problems"]
            lost.append(row["address"])
        outcome = f"r1 (FRR 8.4) lost its BFD session with h1 for peer {', '.join(lost)}; h1 reports it Down"
    away = "stayed at r1" if gone_at is None else f"left r1 at {gone_at:.3f}s, back at {back_at:.3f}s"
    print(f"\nBIRD SIGKILL -> restarted; h1's route {away}; {outcome}")


def test_bird_dies_with_fabricd(lab: Lab) -> None:
    h1 = lab.node("h1")
    wait_status(h1, bgp_up, "h1 BGP up", lab=lab)  # BFD may be down after the previous test
    bird = bird_pid(lab)
    os.kill(agent_pid(lab, "h1"), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while netns.alive(bird):
        assert time.monotonic() < deadline, "BIRD outlived a SIGKILLed fabricd"
        time.sleep(0.02)
    start_agent(lab, "h1")
    wait_all_up(lab)  # fresh BGP sessions: r1 registers BFD for them again
    assert bird_pid(lab) != bird


def test_bird_takes_a_changed_file_without_a_restart(lab: Lab) -> None:
    """In h2 (no BFD of its own, so BIRD's port is free): BirdBFD against a real BIRD."""
    h2 = lab.node("h2")
    state = h2.directory / "bird-reconfigure"
    out = h2.run(
        [sys.executable, str(RECONFIGURE), str(state), H2_V4, H2_V4, H2_V6, "10.99.2.1", "fd00:99:2::1"],
        timeout=60,
    )
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["pid_before"] is not None and seen["pid_after"] == seen["pid_before"], seen
    assert seen["starts"] == 1 and seen["configures"] == 1, seen
    assert (seen["unchanged_applied"], seen["added_applied"]) == (False, True), seen
    assert set(seen["one"]) == {"10.99.2.1", "error"} and seen["one"]["error"] is None, seen
    assert set(seen["two"]) == {"10.99.2.1", "fd00:99:2::1", "error"}, seen
    # The session that stayed was not rebuilt: the driver waited 1 s before the change, and the
    # session's last state change is still from its first moments.
    first = seen["one"]["10.99.2.1"]["since"]
    assert seen["two"]["10.99.2.1"]["since"] - first < 0.5, seen
    assert "bird refused" in seen["refused"] and "syntax error" in seen["refused"], seen
    assert set(seen["after_refused"]) == set(seen["two"]), seen
    assert seen["after_refused"]["10.99.2.1"]["since"] - first < 0.5, seen
    assert not processes_mentioning(str(state)), "BIRD outlived its stop"
