"""The authority feature's moving parts without the kernel: the standalone runner, the prober's
reports, serving's election check, the planner and the status it feeds."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from structlog.testing import capture_logs

from fabric_lab.lxd_builders import config, instance, snapshot
from fabricd.agent.loop import Observations
from fabricd.authority.dnsmasq import LeaseTable
from fabricd.authority.feature import AuthorityPlanning, ServingIntent
from fabricd.authority.floating import FloatingSpec
from fabricd.authority.probe import ProbeResult, ServerSeen
from fabricd.authority.prober import Prober, ProbeView, split_answers
from fabricd.authority.serving import Serving
from fabricd.authority.standalone import StandaloneElector
from fabricd.authority.standalone_runner import StandaloneRunner
from fabricd.authority.state import AUTHORITY, AuthorityState
from fabricd.authority.status import ServerFacts, authority_problems, authority_section
from fabricd.frozen import FrozenMap
from fabricd.lxd.observer import LXD, LXDObservation
from fabricd.lxd.records import NicRecord
from fabricd.overlay.feature import OVERLAY, OverlayIntent
from fabricd.overlay.manager import Underlay
from fabricd.overlay.planner import plan_overlay

SPEC = FloatingSpec("fabric0", 100, IPv4Interface("192.168.100.1/24"))
OURS = ServerSeen(IPv4Address("192.168.100.1"), SPEC.mac, IPv4Address("192.168.100.1"))
ROGUE = ServerSeen(IPv4Address("192.168.100.9"), "02:00:00:00:00:99", IPv4Address("192.168.100.9"))
CONFIG = config(
    "overlay: {enabled: true, peers: [{name: m2, address: 192.0.2.12}]}\n"
    "dhcp:\n  enabled: true\n  server_address: 192.168.100.1/24\n"
    "  ranges: [192.168.100.100-192.168.100.199]\n"
    "  priority: [m1, m2]\n"
)


def answered(*hosts: str, others: tuple[ServerSeen, ...] = (), error: str | None = None) -> ProbeView:
    servers = tuple(dataclasses.replace(OURS, host=h) for h in hosts) + others
    return split_answers(ProbeResult(0.0, servers, error, 3.5), SPEC)


def test_split_answers_tells_the_authority_from_other_servers() -> None:
    view = answered("m1", others=(ROGUE,))
    assert view.ours == (dataclasses.replace(OURS, host="m1"),) and view.others == (ROGUE,)
    assert view.answering_hosts == ("m1",) and not view.doubled
    assert answered("m1", "m2").doubled  # two hosts answer with the floating identity
    assert split_answers(ProbeResult(0.0, (dataclasses.replace(OURS, offers=2),), None, 3.5), SPEC).doubled


def runner(me: str = "m2", priority: tuple[str, ...] = ("m1", "m2")) -> tuple[StandaloneRunner, list[str]]:
    calls: list[str] = []

    async def on_yield(why: str) -> None:
        calls.append(f"yield: {why}")

    elector = StandaloneElector(me, priority, 2, rank_probes=1, busy_probes=0)  # 2 silent, +1 per rank
    return StandaloneRunner(elector, lambda: calls.append("pass"), on_yield), calls


def test_standalone_runner_takes_over_after_silence_and_yields_to_a_better_host() -> None:
    async def main() -> None:
        run, calls = runner()
        await run.on_probe(answered("m1"))
        assert run.state().holder == "m1" and not run.state().serving
        for _ in range(2):  # m2 ranks second: silent_probes (2) + 1
            await run.on_probe(answered())
            assert not run.serving()
        await run.on_probe(answered(error="no bridge"))  # a failed probe is no silence
        assert not run.serving()
        await run.on_probe(answered())
        assert run.serving() and run.state().holder == "m2" and run.state().since is not None
        assert calls.count("pass") == 3  # the holder seen changed: m1, nobody, this host
        await run.on_probe(answered("m2"))  # its own answer changes nothing
        assert run.serving()
        await run.on_probe(answered("m1", "m2"))  # m1 is back and ranks above: yield at once
        assert not run.serving() and run.state().holder == "m1"
        assert any(c.startswith("yield: yielding to m1") for c in calls)

    asyncio.run(main())


def test_standalone_runner_keeps_naming_a_holder_that_missed_fewer_probes_than_its_patience() -> None:
    async def main() -> None:
        calls: list[str] = []

        async def on_yield(why: str) -> None:
            calls.append(why)

        elector = StandaloneElector("m3", ("m1", "m2", "m3"), 2, rank_probes=1, busy_probes=3)  # patience 3
        run = StandaloneRunner(elector, lambda: calls.append("pass"), on_yield)
        await run.on_probe(answered("m1"))
        for _ in range(2):  # a busy dnsmasq: two probes unanswered
            await run.on_probe(answered())
            assert run.state().holder == "m1" and run.state().known_holder == "m1"
        await run.on_probe(answered("m1"))
        assert calls == ["pass"]  # no change seen, so no pass and the server MAC's entry stays
        for _ in range(3):
            await run.on_probe(answered())
        assert run.state().holder == "" and calls == ["pass", "pass"]  # three in a row: gone
        await run.on_probe(answered("m2", "m1"))  # both answer (a take-back): the better-ranked is named
        assert run.state().holder == "m1"
        await run.on_probe(answered("m2"))  # a probe that hears someone names who it heard
        assert run.state().holder == "m2"

    asyncio.run(main())


def test_standalone_runner_takes_back_from_a_worse_ranked_server_after_silent_probes() -> None:
    async def main() -> None:
        run, calls = runner(me="m1")
        await run.on_probe(answered("m2"))
        assert not run.serving() and run.state().holder == "m2"
        await run.on_probe(answered("m2"))  # silent_probes (2) in a row hearing only m2
        assert run.serving() and run.state().holder == "m1" and calls[-1] == "pass"
        assert run.state().reason == "taking the authority back from m2, ranked below this host"
        await run.on_probe(answered("m2"))  # m2 has not yielded yet: m1 keeps serving
        assert run.serving() and not any(c.startswith("yield") for c in calls)

    asyncio.run(main())


def test_prober_logs_a_second_server_once_and_when_it_goes() -> None:
    results = iter([answered(others=(ROGUE,)), answered(others=(ROGUE,)), answered()])

    async def main() -> Prober:
        stop = asyncio.Event()
        seen: list[ProbeView] = []

        async def on_probe(view: ProbeView) -> None:
            seen.append(view)
            if len(seen) == 3:
                stop.set()

        prober = Prober(SPEC, 0.0, on_probe, run_probe=lambda interface, mac: next(results).result)
        await prober.run(stop)
        return prober

    with capture_logs() as logs:
        prober = asyncio.run(main())
    kinds = [e.get("event_kind") for e in logs]
    assert kinds == ["authority.second_server", "authority.second_server_gone"]
    assert prober.probes == 3 and prober.second_servers_seen == 2


def test_prober_asks_for_a_pass_when_what_the_status_shows_changes() -> None:
    views = [answered("m1"), answered("m1"), answered("m1", others=(ROGUE,)), answered("m1", others=(ROGUE,))]
    views += [answered("m1"), answered(), answered(error="no bridge"), answered(error="no bridge")]
    results = iter(views)
    news: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        prober: Prober

        async def on_probe(view: ProbeView) -> None:
            if prober.probes == len(views):
                stop.set()

        prober = Prober(
            SPEC,
            0.0,
            on_probe,
            run_probe=lambda interface, mac: next(results).result,
            on_news=lambda: news.append(prober.probes),
        )
        await prober.run(stop)

    asyncio.run(main())
    # The first probe, the rogue's coming and going, the authority falling silent, the error.
    assert news == [0, 2, 4, 5, 6]


class FakeFloating:
    announce_rounds = 3
    announce_interval = 0.0

    def __init__(self, changes: tuple[str, ...] = ()) -> None:
        self.spec = dataclasses.replace(SPEC, bridge="fl-test-none")
        self.claims = 0
        self.releases = 0
        self.changes = changes
        self.rounds: list[int | None] = []
        self.on_announce: Any = None

    def claim(self, rounds: int | None = None) -> tuple[str, ...]:
        self.claims += 1
        if self.changes:
            self.rounds.append(rounds)
        return self.changes

    def announce(self, rounds: int | None = None) -> int:
        self.rounds.append(rounds)
        if self.on_announce:
            self.on_announce()
        return 1

    def release(self) -> tuple[str, ...]:
        self.releases += 1
        return ()


class FakeDnsmasq:
    def __init__(self) -> None:
        self.served: list[Any] = []
        self.stops = 0

    async def serve(self, plan: Any) -> str:
        self.served.append(plan)
        return "started"

    async def stop(self) -> None:
        self.stops += 1


def test_serving_asks_the_election_right_before_claiming() -> None:
    async def main() -> None:
        allowed = [False]
        floating, dnsmasq = FakeFloating(), FakeDnsmasq()
        serving = Serving(floating, dnsmasq, lambda: allowed[0])  # type: ignore[arg-type]
        serving.deadman.arm = lambda: None  # type: ignore[method-assign]  # no helper for a fake device
        assert await serving.serve("plan") == "not allowed"  # type: ignore[arg-type]
        assert floating.claims == 0 and dnsmasq.served == []
        allowed[0] = True
        assert await serving.serve("plan") == "started"  # type: ignore[arg-type]
        assert floating.claims == 1 and dnsmasq.served == ["plan"]
        await serving.withdraw("fenced")
        assert floating.releases == 1 and dnsmasq.stops == 1 and serving.last_action == "stopped: fenced"

    asyncio.run(main())


def test_a_claim_announces_once_before_dnsmasq_and_repeats_after_while_allowed() -> None:
    async def main() -> None:
        allowed = [True]
        floating, dnsmasq = FakeFloating(changes=("add device",)), FakeDnsmasq()
        floating.on_announce = lambda: dnsmasq.served == ["plan"] or pytest.fail("repeat before dnsmasq")
        serving = Serving(floating, dnsmasq, lambda: allowed[0])  # type: ignore[arg-type]
        serving.deadman.arm = lambda: None  # type: ignore[method-assign]
        assert await serving.serve("plan") == "started"  # type: ignore[arg-type]
        assert floating.rounds == [1, 1, 1]  # one round in the claim, two repeats after dnsmasq
        # A fence after the first repeat stops the rest.
        floating.rounds.clear()
        floating.on_announce = lambda: allowed.__setitem__(0, False)
        assert await serving.serve("plan") == "started"  # type: ignore[arg-type]
        assert floating.rounds == [1, 1]

    asyncio.run(main())


def observed(state: AuthorityState, lxd_snapshot: Any | None) -> Observations:
    seen = Observations()
    seen.put(AUTHORITY, state)
    seen.put(OVERLAY, OverlayIntent(plan_overlay(CONFIG, None, 1500), Underlay(None, None, 1500)))
    if lxd_snapshot is not None:
        seen.put(LXD, LXDObservation(lxd_snapshot, True, 0.0, None, None))
    return seen


def test_planner_waits_for_lxd_names_standbys_and_replans_only_on_change() -> None:
    planning = AuthorityPlanning(CONFIG, SPEC)
    state = AuthorityState("standalone", "m1", True, "m1", "serving")
    waiting = planning.plan(observed(state, None))
    assert waiting == ServingIntent(True, None, "LXD has not been read yet", ("m2",))
    on_overlay = NicRecord(
        "eth0", FrozenMap({"nictype": "bridged", "parent": "fabric0"}), "02:00:00:00:00:01"
    )
    lxd = snapshot(instance("c1", on_overlay))
    first = planning.plan(observed(state, lxd))
    assert first is not None and first.plan is not None and first.waiting is None
    assert "02:00:00:00:00:01" in first.plan.hosts_dhcp
    again = planning.plan(observed(state, lxd))
    assert again is not None and again.plan is first.plan  # same snapshot: not planned again


def test_status_problems_name_what_is_wrong() -> None:
    facts = ServerFacts(None, 0, 0, 0, None, "not serving", None, 1, 1)
    standby_nobody = AuthorityState("lxd-cluster", "m1", False, "", "store unreadable: timeout")
    problems = authority_problems(standby_nobody, facts, None, answered(others=(ROGUE,)))
    assert problems[0].startswith("second DHCP server on the overlay: 192.168.100.9 from MAC")
    assert "no DHCP/DNS authority: store unreadable: timeout" in problems
    serving = AuthorityState("lxd-cluster", "m1", True, "m1", "holder")
    intent = ServingIntent(True, None, "LXD has not been read yet", (), member="node-a")
    problems = authority_problems(serving, facts, intent, answered("m1", "m2"))
    assert "two hosts answer as the DHCP/DNS authority: m1, m2" in problems
    assert "elected DHCP/DNS authority but not serving: LXD has not been read yet" in problems
    assert any("is not this host's LXD member name (node-a)" in p for p in problems)


@pytest.mark.parametrize("serving", [True, False])
def test_status_section_shows_role_and_leases_only_where_served(serving: bool) -> None:
    state = AuthorityState("standalone", "m1", serving, "m1" if serving else "m2", "r", 5.0)
    facts = ServerFacts(42, 1, 0, 0, None, "started", None, 3, 0)
    section = authority_section(state, SPEC, facts, None, answered("m1"), LeaseTable(), 10.0)
    assert section["role"] == ("authority" if serving else "standby")
    assert (section["leases"] is not None) == serving
    assert section["server"]["mac"] == SPEC.mac and section["probe"]["answering"] == ["m1"]
