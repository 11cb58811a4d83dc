"""The idle benchmark's process-tree accounting: /proc/<pid>/stat parsing and a window's CPU."""

from __future__ import annotations

import os

from bench.proc_tree import Proc, by_role, parse_stat, read_proc, role_of, tree, window_use


def proc(
    pid: int, cpu: int, reaped: int = 0, started: int = 1000, role: str = "fabricd", ppid: int = 1
) -> Proc:
    return Proc(pid, ppid, started, role, cpu, reaped, 0)


def sample(*procs: Proc) -> dict[tuple[int, int], Proc]:
    return {p.key: p for p in procs}


def test_stat_fields_are_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S", "7"] + ["0"] * 9 + ["11", "12", "13", "14"] + ["0"] * 4 + ["4242"] + ["0"] * 30
    comm, ppid, cpu, reaped, started = parse_stat(f"123 (a (b) c) {' '.join(fields)}")
    assert (comm, ppid, cpu, reaped, started) == ("a (b) c", 7, 23, 27, 4242)


def test_this_process_is_read_and_found_in_its_own_tree() -> None:
    me = read_proc(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid()
    assert me.key in tree(os.getpid())


def test_roles_come_from_the_command_line_relay_before_exabgp() -> None:
    assert role_of(b"python\0-m\0fabricd.bgp.relay\0/run/x.sock", "python") == "relay"
    assert role_of(b"python\0-m\0fabricd.bgp.exabgp_main\0server", "python") == "exabgp"
    assert role_of(b"/usr/bin/fabricd\0run", "fabricd") == "fabricd"
    assert role_of(b"nft\0-j\0list", "nft") == "nft"


def test_a_window_counts_growth_new_processes_whole_and_ended_ones_through_their_parent() -> None:
    first = sample(proc(10, 500, reaped=40), proc(11, 900, role="exabgp"), proc(12, 5, role="nft"))
    middle = sample(proc(10, 510, reaped=40), proc(11, 950, role="exabgp"), proc(12, 9, role="nft"))
    last = sample(
        proc(10, 520, reaped=52),  # nft (12) ended: its 12 ticks went to the parent's cutime + cstime
        proc(11, 990, role="exabgp"),
        proc(13, 3, started=2000, role="dnsmasq"),  # born in the window: all of it counts
    )
    use = window_use([first, middle, last], window_began=1500)
    assert by_role(use.processes) == {"fabricd": 20, "fabricd:ended children": 12, "exabgp": 90, "dnsmasq": 3}
    assert use.total_ticks == 125
    assert use.ended == ((12, "nft"),)
    assert {p.pid: p.whole_window for p in use.processes} == {10: True, 11: True, 13: False}


def test_a_process_that_joined_the_tree_late_counts_from_when_it_was_first_seen() -> None:
    first = sample(proc(10, 100))
    joined = sample(proc(10, 100), proc(20, 700, started=900, role="relay"))  # started before the window
    last = sample(proc(10, 100), proc(20, 730, started=900, role="relay"))
    assert by_role(window_use([first, joined, last], window_began=1500).processes) == {
        "fabricd": 0,
        "relay": 30,
    }


def test_a_reused_pid_is_another_process() -> None:
    first = sample(proc(10, 100), proc(30, 400, role="nft"))
    last = sample(proc(10, 100, reaped=400), proc(30, 2, started=5000, role="ip"))
    use = window_use([first, last], window_began=1500)
    assert by_role(use.processes) == {"fabricd": 0, "fabricd:ended children": 400, "ip": 2}
    assert use.ended == ((30, "nft"),)


def test_no_samples_no_use() -> None:
    assert window_use([]).total_ticks == 0
