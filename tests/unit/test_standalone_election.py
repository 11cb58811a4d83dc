"""Standalone hosts: a priority list, liveness from the DHCP probe, the documented partition rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.authority.standalone import StandaloneElector, StandaloneMemory

HOSTS = ("h1", "h2", "h3")


def electors() -> dict[str, StandaloneElector]:
    return {h: StandaloneElector(h, HOSTS, silent_probes=3) for h in HOSTS}


def run_round(
    els: dict[str, StandaloneElector], mem: dict[str, StandaloneMemory], up: set[str], sides: list[set[str]]
) -> None:
    """One probe on every live host; a host hears the servers on its side of any partition."""
    serving = {h for h in up if mem[h].serving}
    for h in sorted(up):
        side = next(s for s in sides if h in s)
        mem[h] = els[h].step(mem[h], tuple(sorted(serving & side - {h})))


def test_the_best_ranked_standby_takes_over_first_and_alone() -> None:
    els, mem = electors(), {h: StandaloneMemory() for h in HOSTS}
    up = set(HOSTS)
    for _ in range(5):
        run_round(els, mem, up, [up])
    assert [h for h in HOSTS if mem[h].serving] == ["h1"]
    assert mem["h2"].reason == "standby: h1 answers"
    up.discard("h1")  # h1 dies
    rounds = 0
    while not any(mem[h].serving for h in up):
        run_round(els, mem, up, [up])
        rounds += 1
    assert [h for h in sorted(up) if mem[h].serving] == ["h2"] and rounds == 4  # 3 silent + rank 1
    for _ in range(5):
        run_round(els, mem, up, [up])
        assert [h for h in sorted(up) if mem[h].serving] == ["h2"]


def test_a_healed_partition_leaves_the_better_ranked_server_within_one_probe() -> None:
    els, mem = electors(), {h: StandaloneMemory() for h in HOSTS}
    up = set(HOSTS)
    for _ in range(3):
        run_round(els, mem, up, [up])
    sides = [{"h1"}, {"h2", "h3"}]
    for _ in range(6):
        run_round(els, mem, up, sides)
    assert {h for h in HOSTS if mem[h].serving} == {"h1", "h2"}  # documented: both sides serve
    run_round(els, mem, up, [up])
    assert {h for h in HOSTS if mem[h].serving} == {"h1"}
    assert "yielding to h1" in mem["h2"].reason


def test_this_host_must_be_in_the_list() -> None:
    with pytest.raises(ValueError, match="h9 is not in the priority list"):
        StandaloneElector("h9", HOSTS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(HOSTS), st.booleans()), max_size=30))
def test_without_partitions_there_is_one_server_after_every_settled_round(
    events: list[tuple[str, bool]],
) -> None:
    els, mem = electors(), {h: StandaloneMemory() for h in HOSTS}
    up = set(HOSTS)
    for host, alive in events:
        if alive and host not in up:
            up.add(host)
            mem[host] = StandaloneMemory()
        elif not alive and len(up) > 1:
            up.discard(host)
        for _ in range(8):  # enough probes to settle: silent_probes + ranks
            run_round(els, mem, up, [up])
        assert len([h for h in up if mem[h].serving]) == 1, (up, mem)
