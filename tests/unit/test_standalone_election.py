"""Standalone hosts: a priority list, liveness from the DHCP probe, the documented partition rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.authority.standalone import (
    DNSMASQ_BUSY,
    StandaloneElector,
    StandaloneMemory,
    busy_probes,
    rank_probes,
)

HOSTS = ("h1", "h2", "h3")


def electors() -> dict[str, StandaloneElector]:
    # Lockstep rounds: no busy floor, so silent_probes alone counts.
    return {h: StandaloneElector(h, HOSTS, silent_probes=3, rank_probes=2, busy_probes=0) for h in HOSTS}


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
    assert [h for h in sorted(up) if mem[h].serving] == ["h2"] and rounds == 5  # 3 silent + 2 per host above
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


def test_a_returning_better_ranked_host_takes_the_authority_back() -> None:
    els, mem = electors(), {h: StandaloneMemory() for h in HOSTS}
    up = set(HOSTS)
    for _ in range(5):
        run_round(els, mem, up, [up])
    up.discard("h1")
    for _ in range(6):
        run_round(els, mem, up, [up])
    assert [h for h in sorted(up) if mem[h].serving] == ["h2"]
    up.add("h1")
    mem["h1"] = StandaloneMemory()  # a restarted fabricd
    for count in (1, 2):
        run_round(els, mem, up, [up])
        assert not mem["h1"].serving
        assert mem["h1"].reason == f"h2, ranked below this host, answers ({count} of 3)"
    run_round(els, mem, up, [up])
    assert (
        mem["h1"].serving and mem["h1"].reason == "taking the authority back from h2, ranked below this host"
    )
    assert mem["h2"].serving  # it has not heard h1 yet: both answer until its next probe
    run_round(els, mem, up, [up])
    assert [h for h in HOSTS if mem[h].serving] == ["h1"]
    assert mem["h2"].reason == "yielding to h1, ranked above this host"
    assert mem["h3"].reason == "standby: h1 answers"


def test_taking_back_needs_only_worse_ranked_listed_hosts_in_a_row() -> None:
    h1 = StandaloneElector("h1", HOSTS, silent_probes=2, rank_probes=2, busy_probes=0)
    h2 = StandaloneElector("h2", HOSTS, silent_probes=2, rank_probes=2, busy_probes=0)
    once = h1.step(StandaloneMemory(), ("h3",))
    assert (once.serving, once.outranked) == (False, 1)
    # A silent probe, an unlisted answer ("?"), or a better-ranked one starts the count again.
    for heard in ((), ("h3", "?"), ("?",)):
        again = h1.step(h1.step(once, heard), ("h3",))
        assert (again.serving, again.outranked) == (False, 1), heard
    assert h1.step(once, ("h3",)).serving
    assert not h2.step(h2.step(StandaloneMemory(), ("h1", "h3")), ("h1", "h3")).serving
    assert h2.step(h2.step(StandaloneMemory(), ("h3",)), ("h3",)).serving


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


# ---- probes out of phase -----------------------------------------------------------------------
# Every host probes on its own clock, so the probes of two hosts are up to one interval apart. A
# probe's DISCOVER is answered by the servers listening when it is sent, unless that server's dnsmasq
# is busy (ping checks) past the probe's window; the host decides one window (PROBE_TIMEOUT) later
# and, taking over, listens `claim` seconds after that (address, dnsmasq).

WINDOW = 3.5


INF = float("inf")


def simulate(
    els: dict[str, StandaloneElector],
    phases: dict[str, float],
    interval: float,
    claim: float,
    down: dict[str, tuple[float, float]],
    until: float,
    busy: dict[str, list[tuple[float, float]]] | None = None,
    takeover_busy: float = 0.0,
) -> dict[str, list[tuple[float, float]]]:
    """Each host's serving intervals [start, end) from a cold start; a host is down (fabricd dead)
    during its `down` span and comes back with a fresh memory, probing in its old phase. A host that
    takes over is busy for `takeover_busy` seconds once it listens (every client is new to it)."""
    mem = {h: StandaloneMemory() for h in els}
    listening: dict[str, list[tuple[float, float]]] = {h: [] for h in els}
    events: list[tuple[float, int, str, tuple[str, ...]]] = []  # (time, 0 probe | 1 decide, host, heard)
    for host, phase in phases.items():
        events.append((phase, 0, host, ()))

    def alive(host: str, at: float) -> bool:
        dies, returns = down.get(host, (INF, INF))
        return not dies <= at < returns

    spells = {h: list(v) for h, v in (busy or {}).items()}

    def answers(host: str, at: float) -> bool:
        late = any(start <= at < end and end > at + WINDOW for start, end in spells.get(host, []))
        return not late and any(start <= at < end for start, end in listening[host])

    while events:
        events.sort()
        at, kind, host, heard = events.pop(0)
        if at >= until:
            continue
        if not alive(host, at):
            mem[host] = StandaloneMemory()
            if kind == 0:
                events.append((at + interval, 0, host, ()))
            continue
        if kind == 0:
            answering = tuple(h for h in els if h != host and answers(h, at))
            events.append((at + WINDOW, 1, host, answering))
            events.append((at + interval, 0, host, ()))
            continue
        was = mem[host].serving
        mem[host] = els[host].step(mem[host], heard)
        if mem[host].serving and not was:
            dies = down.get(host, (INF, INF))[0]
            listening[host].append((at + claim, dies if dies > at else INF))
            spells.setdefault(host, []).append((at + claim, at + claim + takeover_busy))
        elif was and not mem[host].serving:
            start, _ = listening[host].pop()
            listening[host].append((start, at))
    return {h: [(s, min(e, until)) for s, e in spans if s < until] for h, spans in listening.items()}


def overlaps(spans: dict[str, list[tuple[float, float]]]) -> list[tuple[str, str, float, float]]:
    found = []
    hosts = sorted(spans)
    for i, a in enumerate(hosts):
        for b in hosts[i + 1 :]:
            for s1, e1 in spans[a]:
                for s2, e2 in spans[b]:
                    if max(s1, s2) < min(e1, e2):
                        found.append((a, b, max(s1, s2), min(e1, e2)))
    return found


def timed_electors(interval: float, busy_floor: bool = True) -> dict[str, StandaloneElector]:
    floor = busy_probes(interval) if busy_floor else 0
    return {h: StandaloneElector(h, HOSTS, 2, rank_probes(interval), floor) for h in HOSTS}


def test_out_of_phase_the_next_ranked_host_does_not_take_over_beside_the_new_server() -> None:
    # h2 probes 2 s after h1's phase, h3 1 s before h2: h3's deciding probe used to go out just before
    # h2 answered (one probe per rank is less than one interval plus the window), and both served.
    els = timed_electors(4.0)
    spans = simulate(els, {"h1": 0.0, "h2": 3.0, "h3": 1.0}, 4.0, 0.3, {"h1": (40.0, INF)}, 200.0)
    assert overlaps(spans) == []
    assert [h for h in HOSTS if any(e >= 200.0 for _, e in spans[h])] == ["h2"]


@settings(max_examples=300, deadline=None)
@given(
    phases=st.tuples(*(st.floats(0, 3.999) for _ in HOSTS)),
    interval=st.sampled_from([4.0, 5.0, 7.5, 10.0, 30.0]),
    claim=st.floats(0.0, 0.99),
    first=st.sampled_from(HOSTS),
    second=st.sampled_from(HOSTS),
)
def test_out_of_phase_probes_never_make_two_servers_at_start_or_after_deaths(
    phases: tuple[float, ...], interval: float, claim: float, first: str, second: str
) -> None:
    scaled = {h: p * interval / 4.0 for h, p in zip(HOSTS, phases, strict=True)}
    deaths = {first: (30 * interval, INF)}
    if second != first:
        deaths[second] = (60 * interval, INF)
    spans = simulate(timed_electors(interval), scaled, interval, claim, deaths, 100 * interval)
    assert overlaps(spans) == [], spans
    survivors = [h for h in HOSTS if h not in deaths]
    assert [h for h in survivors if any(e >= 100 * interval for _, e in spans[h])] == survivors[:1]


def test_rank_probes_cover_the_window_or_a_busy_spell_and_the_takeover() -> None:
    assert [rank_probes(i) for i in (4.0, 5.0, 10.0, 60.0)] == [6, 5, 3, 2]


def test_busy_probes_outlast_a_busy_dnsmasq() -> None:
    assert [busy_probes(i) for i in (4.0, 5.0, 10.0, 60.0)] == [5, 4, 3, 2]
    for interval in (4.0, 4.5, 5.0, 7.5, 10.0, 60.0):
        # the most probes a busy spell leaves unanswered: those sent before its end minus the window
        assert (busy_probes(interval) - 1) * interval >= DNSMASQ_BUSY - WINDOW


def storms(start: float, count: int) -> list[tuple[float, float]]:
    """dnsmasq busy with ping checks as new clients keep coming: 18 s in every 30 s."""
    return [(start + 30 * i, start + 30 * i + DNSMASQ_BUSY) for i in range(count)]


def test_a_busy_authority_is_not_taken_over_by_a_returning_host_before_it_hears_it() -> None:
    # h1 was down a while and comes back while h2, serving, is busy. Without the floor h1, ranked
    # first, took over beside h2 after 2 silent probes (seen in the lab). With it, h1 waits out the
    # busy spell, hears h2 and only then takes the authority back (the documented short overlap).
    phases = {"h1": 0.0, "h2": 1.0, "h3": 2.0}
    down = {"h1": (60.0, 118.0)}
    busy = {"h2": storms(115.0, 1)}
    calm = 115.0 + DNSMASQ_BUSY
    before = simulate(timed_electors(4.0, busy_floor=False), phases, 4.0, 0.3, down, 300.0, busy)
    assert [(a, b) for a, b, start, _ in overlaps(before) if start < calm] == [("h1", "h2")]
    after = simulate(timed_electors(4.0), phases, 4.0, 0.3, down, 300.0, busy)
    assert [(a, b) for a, b, start, _ in overlaps(after) if start < calm] == []
    assert after["h1"][-1][1] == 300.0 and after["h2"][-1][1] < 300.0


@settings(max_examples=300, deadline=None)
@given(
    phases=st.tuples(*(st.floats(0, 3.999) for _ in HOSTS)),
    interval=st.sampled_from([4.0, 5.0, 7.5, 10.0]),
    storm=st.floats(0, 60),
    holder=st.sampled_from(HOSTS),
)
def test_a_busy_authority_is_never_taken_over_whoever_holds_it(
    phases: tuple[float, ...], interval: float, storm: float, holder: str
) -> None:
    """The holder is whoever survives earlier deaths; then its dnsmasq is busy in storms."""
    scaled = {h: p * interval / 4.0 for h, p in zip(HOSTS, phases, strict=True)}
    deaths = {h: (20 * interval, INF) for h in HOSTS[: HOSTS.index(holder)]}
    start = 60 * interval + storm
    spans = simulate(
        timed_electors(interval), scaled, interval, 0.3, deaths, 120 * interval, {holder: storms(start, 3)}
    )
    assert overlaps(spans) == [], spans
    assert [h for h in HOSTS if any(s <= start <= e for s, e in spans[h])] == [holder]
    assert [h for h in HOSTS if any(e >= 120 * interval for _, e in spans[h])] == [holder]


@settings(max_examples=300, deadline=None)
@given(
    phases=st.tuples(*(st.floats(0, 3.999) for _ in HOSTS)),
    interval=st.sampled_from([4.0, 5.0, 7.5, 10.0]),
    claim=st.floats(0.0, 0.99),
    busy=st.floats(0.0, DNSMASQ_BUSY),
)
def test_a_new_server_busy_with_new_clients_is_not_taken_over_by_the_next_in_line(
    phases: tuple[float, ...], interval: float, claim: float, busy: float
) -> None:
    # The lab: h2 took over, its fresh dnsmasq ping-checked new clients (the test's counters) and h3,
    # one rank below, took over too when ranks were spaced by the window only.
    scaled = {h: p * interval / 4.0 for h, p in zip(HOSTS, phases, strict=True)}
    down = {"h1": (30 * interval, INF)}
    spans = simulate(
        timed_electors(interval), scaled, interval, claim, down, 100 * interval, takeover_busy=busy
    )
    assert overlaps(spans) == [], spans
    assert not spans["h3"]


def test_spacing_ranks_by_the_window_only_let_the_next_in_line_take_over_beside_a_busy_new_server() -> None:
    els = {
        h: StandaloneElector(h, HOSTS, 2, 1 + math.ceil((WINDOW + 1.0) / 4.0), busy_probes(4.0))
        for h in HOSTS
    }
    phases = {"h1": 0.0, "h2": 2.0, "h3": 1.0}
    spans = simulate(els, phases, 4.0, 0.3, {"h1": (120.0, INF)}, 400.0, takeover_busy=12.0)
    assert [(a, b) for a, b, *_ in overlaps(spans)] == [("h2", "h3")]


@settings(max_examples=200, deadline=None)
@given(
    phases=st.tuples(*(st.floats(0, 3.999) for _ in HOSTS)),
    interval=st.sampled_from([4.0, 5.0, 10.0]),
    claim=st.floats(0.0, 0.99),
    returning=st.sampled_from(HOSTS[:2]),
)
def test_a_returning_host_takes_back_with_an_overlap_of_at_most_one_probe(
    phases: tuple[float, ...], interval: float, claim: float, returning: str
) -> None:
    """The documented cost of taking back: two servers from the returning host's start until the
    old server's next probe that hears it (one interval and the window)."""
    scaled = {h: p * interval / 4.0 for h, p in zip(HOSTS, phases, strict=True)}
    back = 40 * interval
    spans = simulate(
        timed_electors(interval), scaled, interval, claim, {returning: (10 * interval, back)}, 80 * interval
    )
    both = overlaps(spans)
    assert all(start >= back for _, _, start, _ in both), both
    assert all(end - start <= interval + WINDOW + 1e-9 for _, _, start, end in both), both
    # At the end the returning host serves alone, or h1 when h2 came back and h1 never left.
    best = "h1" if returning == "h2" else returning
    assert [h for h in HOSTS if any(e >= 80 * interval for _, e in spans[h])] == [best]
