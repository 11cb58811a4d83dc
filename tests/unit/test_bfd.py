"""BFD: BIRD's file from the config, `show bfd sessions` parsed, and the status rows built from it."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fabricd.agent.compose import build_features
from fabricd.agent.decisions import DecisionLog
from fabricd.agent.loop import Observations
from fabricd.bfd.bird_config import render_bird_config
from fabricd.bfd.feature import BFDFeature
from fabricd.bfd.sessions import (
    STATES,
    BFDObservation,
    BFDSession,
    parse_show_bfd_sessions,
    session_problems,
    session_rows,
)
from fabricd.cli.render import render_status
from fabricd.config.model import BFDConfig, BGPConfig, FabricConfig, HostConfig, PeerConfig

HOST = HostConfig("h1", IPv4Address("10.99.1.11"), IPv6Address("fd00:99:1::11"))


def bgp(*peers: PeerConfig) -> BGPConfig:
    return BGPConfig(65011, IPv4Address("10.99.1.11"), peers=peers)


ON = BFDConfig()


def peer(address: str, bfd: BFDConfig | None = ON, **kw: object) -> PeerConfig:
    return PeerConfig(f"p-{address}", ip_address(address), 65000, bfd=bfd, **kw)  # type: ignore[arg-type]


def test_bird_file_runs_bfd_for_the_bfd_peers_only() -> None:
    text = render_bird_config(
        bgp(peer("10.99.1.1"), peer("10.99.9.9", None), peer("fd00:99:1::1")),
        HOST,
    )
    assert "router id 10.99.1.11;" in text
    assert 'timeformat protocol "%s.%3f";' in text
    assert text.count("protocol bfd ") == 1 and "protocol device {" in text
    assert '    interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };' in text
    assert "multihop {" not in text
    neighbors = [line.strip() for line in text.splitlines() if line.strip().startswith("neighbor")]
    assert neighbors == ["neighbor 10.99.1.1 local 10.99.1.11;", "neighbor fd00:99:1::1 local fd00:99:1::11;"]
    # Nothing that could learn, install or announce a route.
    config = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for word in (
        "ipv4 {",
        "ipv6 {",
        "import",
        "export",
        "protocol kernel",
        "protocol static",
        "protocol bgp",
    ):
        assert word not in config


def test_multihop_peers_get_their_own_timers_and_local_address() -> None:
    text = render_bird_config(
        bgp(
            peer("10.99.1.1", BFDConfig(50, 4)),
            peer("192.0.2.7", BFDConfig(300, 5, True), local_address=ip_address("10.0.0.5")),
        ),
        HOST,
    )
    assert '    interface "*" { min rx interval 50 ms; min tx interval 50 ms; multiplier 4; };' in text
    assert "    multihop { min rx interval 300 ms; min tx interval 300 ms; multiplier 5; };" in text
    assert "    neighbor 192.0.2.7 local 10.0.0.5 multihop;" in text


def test_only_multihop_peers_leave_single_hop_timers_out() -> None:
    text = render_bird_config(bgp(peer("192.0.2.7", BFDConfig(300, 5, True))), HOST)
    assert 'interface "*"' not in text and "multihop {" in text


REAL_OUTPUT = """\
BIRD 2.0.12 ready.
fabricd_bfd:
IP address                Interface  State      Since         Interval  Timeout
fd00:77::2                bfdxa      Up         1796456833.104    0.100    0.300
10.77.0.9                 ---        Down       1796456837.018    1.000    0.000
10.77.0.2                 bfdxa      Init       1796456833.131    1.000    0.000
"""


def test_parses_what_bird_2_0_12_printed() -> None:
    assert parse_show_bfd_sessions(REAL_OUTPUT) == (
        BFDSession(ip_address("fd00:77::2"), "bfdxa", "Up", 1796456833.104, 0.1, 0.3),
        BFDSession(ip_address("10.77.0.9"), None, "Down", 1796456837.018, 1.0, 0.0),
        BFDSession(ip_address("10.77.0.2"), "bfdxa", "Init", 1796456833.131, 1.0, 0.0),
    )


def test_ignores_lines_that_are_not_sessions() -> None:
    assert parse_show_bfd_sessions("BIRD 2.0.12 ready.\nfabricd_bfd:\n\n") == ()
    assert parse_show_bfd_sessions("10.0.0.1 eth1 Sleeping 1.0 0.100 0.300\n") == ()
    assert parse_show_bfd_sessions("10.0.0.1 eth1 Up 1.0 fast 0.300\n") == ()
    assert parse_show_bfd_sessions("10.0.0.1 eth1 Up 1.0 0.1\n") == ()
    # A Since in another time format is kept as unknown, the session still counts.
    (session,) = parse_show_bfd_sessions("10.0.0.1 eth1 Up 10:00:00.123 0.100 0.300\n")
    assert session.state == "Up" and session.since is None


sessions = st.builds(
    BFDSession,
    address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    interface=st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9.]{0,14}", fullmatch=True)),
    state=st.sampled_from(STATES),
    since=st.integers(0, 2**33).map(lambda ms: ms / 1000),
    interval=st.integers(0, 999_999).map(lambda ms: ms / 1000),
    timeout=st.integers(0, 999_999).map(lambda ms: ms / 1000),
)


def bird_line(s: BFDSession) -> str:
    """As BIRD's bfd_show_sessions formats one: "%-25I %-10s %-10s %-12s  %3u.%03u  %3u.%03u"."""
    interval, timeout = round(s.interval * 1000), round(s.timeout * 1000)
    return (
        f"{s.address!s:<25} {s.interface or '---':<10} {s.state:<10} {s.since:<12.3f}  "
        f"{interval // 1000:3}.{interval % 1000:03}  {timeout // 1000:3}.{timeout % 1000:03}"
    )


@given(st.lists(sessions, max_size=8))
def test_parser_reads_back_every_session_bird_prints(listed: list[BFDSession]) -> None:
    header = "BIRD 2.0.12 ready.\nfabricd_bfd:\nIP address    Interface  State  Since  Interval  Timeout\n"
    assert parse_show_bfd_sessions(header + "".join(bird_line(s) + "\n" for s in listed)) == tuple(listed)


def test_rows_and_problems_per_bfd_peer() -> None:
    peers = (peer("10.99.1.1"), peer("10.99.9.9", None), peer("fd00:99:1::1"), peer("10.99.1.2"))
    seen = BFDObservation(
        (
            BFDSession(ip_address("10.99.1.1"), "eth1", "Up", 1000.0, 0.1, 0.3),
            BFDSession(ip_address("fd00:99:1::1"), "eth1", "Down", 990.0, 1.0, 0.0),
        )
    )
    rows = session_rows(peers, seen, now=1010.0)
    assert [(r["peer"], r["state"], r["for_seconds"]) for r in rows] == [
        ("p-10.99.1.1", "Up", 10.0),
        ("p-fd00:99:1::1", "Down", 20.0),
        ("p-10.99.1.2", "unknown", None),
    ]
    assert rows[0]["detect_time_s"] == 0.3 and rows[0]["interval_ms"] == 100 and rows[0]["multiplier"] == 3
    assert session_problems(rows, seen) == [
        "bfd session with p-fd00:99:1::1 (fd00:99:1::1) is Down",
        "bfd session with p-10.99.1.2 (10.99.1.2) is unknown",
    ]
    unreadable = BFDObservation(error="birdc: connection refused")
    assert session_problems(session_rows(peers, unreadable, 0.0), unreadable) == [
        "bfd: cannot read the sessions from BIRD: birdc: connection refused"
    ]
    assert session_problems([], None) == ["bfd: no session state read yet"]


def test_status_text_shows_bfd_per_bgp_peer() -> None:
    peers = (peer("10.99.1.1"), peer("10.99.9.9", None))
    seen = BFDObservation((BFDSession(ip_address("10.99.1.1"), "eth1", "Up", 1000.0, 0.1, 0.3),))
    status = {
        "host": {},
        "bgp_peers": [
            {"address": "10.99.1.1", "asn": 65000, "state": "established"},
            {"address": "10.99.9.9", "asn": 65000, "state": "established"},
        ],
        "bfd_sessions": session_rows(peers, seen, 1065.0),
        "bfd_daemon": {"pid": 4242, "starts": 2, "last_exit": "bird exited with status -9"},
    }
    lines = render_status(status).splitlines()
    header = next(line for line in lines if line.startswith("BGP PEER")).replace("BGP PEER", "PEER").split()
    column = header.index("BFD")
    rows = {line.split()[1]: line.split() for line in lines if line.startswith("-  ")}
    assert rows["10.99.1.1"][column] == "Up"
    assert rows["10.99.9.9"][column] == "off"
    bfd = next(line for line in lines if line.startswith("p-10.99.1.1")).split()
    assert "bfd: bird pid 4242, 2 start(s), last exit: bird exited with status -9" in lines
    assert bfd == ["p-10.99.1.1", "10.99.1.1", "Up", "1m5s", "100", "ms", "x", "3", "300.0", "ms", "eth1"]


def feature_config(*peers: PeerConfig) -> FabricConfig:
    return FabricConfig(Path("test.yaml"), HOST, bgp=bgp(*peers))


def test_composition_adds_bfd_only_for_bfd_peers(tmp_path: Path) -> None:
    with_bfd = build_features(feature_config(peer("10.99.1.1")), DecisionLog(), lambda: None)
    without = build_features(feature_config(peer("10.99.1.1", None)), DecisionLog(), lambda: None)
    assert [f.name for f in with_bfd if isinstance(f, BFDFeature)] == ["bfd"]
    assert not [f for f in without if isinstance(f, BFDFeature)]


def test_feature_records_each_state_change_once(tmp_path: Path) -> None:
    decisions, asked = DecisionLog(), []
    bfd = BFDFeature(
        bgp(peer("10.99.1.1"), peer("fd00:99:1::1")), HOST, tmp_path, decisions, lambda: asked.append(1)
    )
    up = BFDSession(ip_address("10.99.1.1"), "eth1", "Up", 1.0, 0.1, 0.3)
    down = BFDSession(ip_address("10.99.1.1"), "eth1", "Down", 2.0, 1.0, 0.0)
    assert bfd._changed(BFDObservation((up,)))  # first sight of both: Up and absent
    assert not bfd._changed(BFDObservation((up,)))
    assert not bfd._changed(BFDObservation(error="birdc: no socket"))  # unknown is not down
    assert bfd._changed(BFDObservation((down,)))
    reasons = [d["reason"] for d in decisions.recent()]
    assert reasons == [
        "bfd session with p-10.99.1.1 (10.99.1.1) is Up",
        "bfd session with p-fd00:99:1::1 (fd00:99:1::1) is absent",
        "bfd session with p-10.99.1.1 (10.99.1.1) is Down (was Up)",
    ]
    assert {d["event"] for d in decisions.recent()} == {"bfd.session"}


def test_planned_file_is_the_rendered_one_and_status_waits_for_a_read(tmp_path: Path) -> None:
    config = bgp(peer("10.99.1.1"))
    bfd = BFDFeature(config, HOST, tmp_path, DecisionLog(), lambda: None)
    (planner,) = bfd.planners
    assert planner.plan(Observations()) == render_bird_config(config, HOST) == bfd.first_text
    status = asyncio.run(bfd.status())
    assert status.problems == ("bfd: no session state read yet",)
    assert status.sections["bfd_sessions"][0]["state"] == "unknown"
    assert status.sections["bfd_daemon"]["pid"] is None and status.sections["bfd_daemon"]["starts"] == 0
