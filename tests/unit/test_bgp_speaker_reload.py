"""The speaker takes new peers without touching the others (a fake relay connection, no ExaBGP)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fabricd.bgp.speaker import ExaBGPSpeaker
from fabricd.config.model import BGPConfig, PeerConfig
from fabricd.config.reload import peer_changes
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
