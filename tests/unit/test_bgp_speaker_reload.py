"""The speaker takes new peers without touching the others (a fake relay connection, no ExaBGP)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.bgp.speaker import ExaBGPSpeaker
from fabricd.config.model import BGPConfig, PeerConfig
from fabricd.config.reload import peer_changes
from fabricd.routes.model import Route
from tests.unit.test_bgp_speaker import HOST, V4, V6, A, B, C, FakeWriter, route


def state(peer: str, name: str) -> str:
    return json.dumps({"type": "state", "neighbor": {"address": {"peer": peer}, "state": name}})


def bgp(*peers: PeerConfig) -> BGPConfig:
    return BGPConfig(65011, IPv4Address("10.99.1.11"), peers=peers, exabgp=Path("/nonexistent/exabgp"))


def ack_all(speaker: ExaBGPSpeaker, writer: FakeWriter) -> None:
    for _ in writer.lines:
        speaker._on_line("done")


def test_added_removed_and_changed_peers_leave_the_kept_one_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))

    async def scenario() -> None:
        old = bgp(V4)
        speaker = ExaBGPSpeaker(old, HOST, tmp_path / "state")
        (tmp_path / "state").mkdir()
        writer = FakeWriter()
        speaker._writer = writer  # type: ignore[assignment]
        routes = (A, B, C)
        await speaker.set_routes(routes)
        assert writer.lines == [
            "neighbor 10.99.1.1 announce attributes next-hop 10.99.1.11 nlri 10.200.1.0/24 10.200.3.0/24"
        ]
        ack_all(speaker, writer)
        speaker._on_line(state("10.99.1.1", "up"))
        since = speaker.peers()[0].since
        writer.lines.clear()

        # Add the IPv6 peer: ExaBGP is told to re-read its file; nothing goes to the kept peer, and
        # nothing to the new one before ExaBGP reports its session.
        monkeypatch.setattr(type(speaker.supervisor), "pid", property(lambda self: 4242))
        new = bgp(V4, V6)
        await speaker.reconfigure(new, peer_changes(old, new))
        assert signals == [(4242, signal.SIGUSR1)]
        assert "neighbor fd00:99:1::1 {" in (tmp_path / "state" / "exabgp.conf").read_text()
        assert (tmp_path / "state" / "exabgp.conf").stat().st_mode & 0o777 == 0o600
        await speaker.set_routes(routes)
        assert writer.lines == []
        speaker._on_line(state("fd00:99:1::1", "connected"))
        await speaker.set_routes(routes)
        assert writer.lines == []
        speaker._on_line(state("fd00:99:1::1", "up"))
        await speaker.set_routes(routes)
        assert writer.lines == ["neighbor fd00:99:1::1 announce route fd00:200:1::/64 next-hop fd00:99:1::11"]
        ack_all(speaker, writer)
        writer.lines.clear()
        peers = {p.name: p for p in speaker.peers()}
        assert peers["r1"].state == "established" and peers["r1"].since == since
        assert peers["r1"].prefixes_sent == 2 and peers["r1-v6"].prefixes_sent == 1

        # A new route goes to the peer of its family, as before the reload.
        extra = route("10.200.4.0/24", "10.99.1.11")
        await speaker.set_routes((*routes, extra))
        assert writer.lines == ["neighbor 10.99.1.1 announce route 10.200.4.0/24 next-hop 10.99.1.11"]
        ack_all(speaker, writer)
        writer.lines.clear()

        # Change the IPv4 peer's ASN and drop the IPv6 one: the IPv4 session starts over and gets
        # its routes again once up; nothing is withdrawn from the dropped peer (its session ends).
        # A route that goes while the session restarts is withdrawn explicitly: ExaBGP may still
        # hold it for that peer (it keeps a peer's routes across a reload unless its AS changed).
        changed = bgp(dataclasses.replace(V4, asn=65001))
        await speaker.reconfigure(changed, peer_changes(new, changed))
        await speaker.set_routes(routes)
        assert writer.lines == []
        assert [p.state for p in speaker.peers()] == ["idle"]
        speaker._on_line(state("10.99.1.1", "up"))
        await speaker.set_routes(routes)
        assert writer.lines == [
            "neighbor 10.99.1.1 withdraw route 10.200.4.0/24 next-hop 10.99.1.11",
            "neighbor 10.99.1.1 announce attributes next-hop 10.99.1.11 nlri 10.200.1.0/24 10.200.3.0/24",
        ]
        assert [p.asn for p in speaker.peers()] == [65001]

    asyncio.run(scenario())


def test_a_late_ack_for_a_removed_peer_is_ignored(tmp_path: Path) -> None:
    async def scenario() -> None:
        old = bgp(V4, V6)
        speaker = ExaBGPSpeaker(old, HOST, tmp_path / "state")
        (tmp_path / "state").mkdir()
        writer = FakeWriter()
        speaker._writer = writer  # type: ignore[assignment]
        await speaker.set_routes((A, B))
        assert len(writer.lines) == 2
        new = bgp(V4)
        await speaker.reconfigure(new, peer_changes(old, new))
        ack_all(speaker, writer)  # the IPv6 peer's ack arrives after it was removed
        speaker._on_line(state("10.99.1.1", "up"))
        assert [(p.name, p.prefixes_sent) for p in speaker.peers()] == [("r1", 1)]

    asyncio.run(scenario())


def test_a_reload_is_signalled_again_until_exabgp_reports_the_new_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ExaBGP 5.0.15 silently drops a SIGUSR1 while it still has updates queued."""
    signals: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append(sig))

    async def scenario() -> None:
        old = bgp(V4)
        speaker = ExaBGPSpeaker(old, HOST, tmp_path / "state")
        (tmp_path / "state").mkdir()
        speaker.reload_confirm = (0.05, 40)
        monkeypatch.setattr(type(speaker.supervisor), "pid", property(lambda self: 4242))
        new = bgp(V4, V6)
        await speaker.reconfigure(new, peer_changes(old, new))
        await asyncio.sleep(0.3)
        assert len(signals) >= 3 and set(signals) == {signal.SIGUSR1}
        speaker._on_line(state("fd00:99:1::1", "connected"))
        await asyncio.sleep(0.1)  # a signal already under way may still go out
        count = len(signals)
        await asyncio.sleep(0.3)
        assert len(signals) == count

        # Nothing touched (a kept peer's state message is no proof) would be signalled just once.
        signals.clear()
        same = bgp(V4, V6)
        await speaker.reconfigure(same, peer_changes(new, same))
        await asyncio.sleep(0.3)
        assert signals == [signal.SIGUSR1]
        await speaker.stop()

    asyncio.run(scenario())


# ---- generated peer and route changes against a model of ExaBGP's per-peer RIB ---------------------

POOL = (V4, PeerConfig("r2", ip_address("10.99.1.2"), 65000), V6)
ROUTES = tuple(route(f"10.200.{i}.0/24", "10.99.1.11") for i in range(4)) + tuple(
    route(f"fd00:200:{i}::/64", "fd00:99:1::11") for i in range(3)
)


def apply_lines(ribs: dict[str, set[tuple[str, str]]], lines: list[str]) -> None:
    """What ExaBGP would hold per peer after these commands."""
    for line in lines:
        words = line.split()
        peer, action = words[1], words[2]
        if words[3] == "route":
            entries = {(words[4], words[6])}
        else:  # bulk: attributes next-hop N nlri P...
            entries = {(p, words[5]) for p in words[words.index("nlri") + 1 :]}
        rib = ribs.setdefault(peer, set())
        if action == "announce":
            rib.update(entries)
        else:
            rib.difference_update({e for e in rib if e[0] in {p for p, _ in entries}})


def wanted(peer: PeerConfig, routes: tuple[Route, ...]) -> set[tuple[str, str]]:
    return {(str(r.prefix), str(r.next_hop)) for r in routes if r.prefix.version == peer.address.version}


@settings(max_examples=150, deadline=None)
@given(
    old_peers=st.lists(st.sampled_from(POOL), min_size=1, unique=True),
    new_peers=st.lists(st.sampled_from(POOL), min_size=1, unique=True),
    changed=st.sets(st.sampled_from([p.name for p in POOL])),
    before=st.sets(st.sampled_from(ROUTES)),
    after=st.sets(st.sampled_from(ROUTES)),
    meanwhile=st.sets(st.sampled_from(ROUTES)),
    rib_kept=st.booleans(),
)
def test_after_any_reload_each_peer_holds_exactly_its_routes(
    tmp_path_factory: pytest.TempPathFactory,
    old_peers: list[PeerConfig],
    new_peers: list[PeerConfig],
    changed: set[str],
    before: set[Route],
    after: set[Route],
    meanwhile: set[Route],
    rib_kept: bool,
) -> None:
    """Kept peers get only the route difference; new and changed peers get nothing until their
    session is up, and then exactly their set, whether or not ExaBGP kept a changed peer's routes
    (`rib_kept`), and whatever changed while the session restarted (`meanwhile`)."""
    new_peers = [dataclasses.replace(p, asn=65001) if p.name in changed else p for p in new_peers]
    state_dir = tmp_path_factory.mktemp("state")
    ordered = tuple(sorted(before, key=str)), tuple(sorted(meanwhile, key=str)), tuple(sorted(after, key=str))

    async def scenario() -> None:
        old, new = bgp(*old_peers), bgp(*new_peers)
        speaker = ExaBGPSpeaker(old, HOST, state_dir)
        writer = FakeWriter()
        speaker._writer = writer  # type: ignore[assignment]
        ribs: dict[str, set[tuple[str, str]]] = {}
        await speaker.set_routes(ordered[0])
        for p in old_peers:
            speaker._on_line(state(str(p.address), "up"))
        apply_lines(ribs, writer.lines)
        ack_all(speaker, writer)
        writer.lines.clear()

        change = peer_changes(old, new)
        await speaker.reconfigure(new, change)
        for p in change.removed:
            ribs.pop(str(p.address), None)  # ExaBGP drops a removed peer's RIB
        for p in change.changed:
            if not rib_kept:
                ribs.pop(str(p.address), None)
        await speaker.set_routes(ordered[1])
        restarted = {str(a) for a in change.restarted()}
        assert not any(line.split()[1] in restarted for line in writer.lines)
        kept = {str(p.address): p for p in change.kept}
        for line in writer.lines:
            assert line.split()[1] in kept
        apply_lines(ribs, writer.lines)
        ack_all(speaker, writer)
        writer.lines.clear()
        for address in sorted(restarted):
            speaker._on_line(state(address, "up"))
        await speaker.set_routes(ordered[2])
        apply_lines(ribs, writer.lines)
        ack_all(speaker, writer)
        for p in new_peers:
            assert ribs.get(str(p.address), set()) == wanted(p, ordered[2]), p.name
        assert {str(p.address) for p in new_peers} >= {a for a, rib in ribs.items() if rib}

    asyncio.run(scenario())
