"""ExaBGP configuration from fabricd's config: rendered text, and what ExaBGP itself reads back."""

from __future__ import annotations

import base64
import json
import string
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest

from fabricd.bgp.exabgp_config import (
    ExaBGPConfigError,
    exabgp_environment,
    local_address,
    md5_base64,
    peer_families,
    render_config,
    token,
)
from fabricd.config.model import BGPConfig, GracefulRestartConfig, HostConfig, PeerConfig

HOST = HostConfig("h1", IPv4Address("10.99.1.11"), IPv6Address("fd00:99:1::11"))
V4 = PeerConfig("r1", ip_address("10.99.1.1"), 65000)
V6 = PeerConfig("r1-v6", ip_address("fd00:99:1::1"), 65000)
RELAY = [sys.executable, "-m", "fabricd.bgp.relay", "/run/fabricd/bgp/relay.sock", "--timeout", "3"]
# Every printable ASCII character (what the config loader allows in a password), in two passwords.
NASTY = string.printable[:95]
PASSWORDS = (NASTY[:80], NASTY[80:] + "\"'\\#;{}[] x")


def bgp(*peers: PeerConfig, **kw: Any) -> BGPConfig:
    return BGPConfig(65011, IPv4Address("10.99.1.11"), peers=peers, **kw)


def block(text: str, peer: str) -> str:
    start = text.index(f"neighbor {peer} {{")
    return text[start : text.index("\n}", start)]


def test_one_neighbor_block_per_peer_with_session_settings() -> None:
    text = render_config(bgp(V4, V6, hold_time=3), HOST, RELAY)
    v4, v6 = block(text, "10.99.1.1"), block(text, "fd00:99:1::1")
    for part in ("router-id 10.99.1.11;", "local-as 65011;", "peer-as 65000;", "hold-time 3;"):
        assert part in v4 and part in v6
    assert "local-address 10.99.1.11;" in v4 and "family { ipv4 unicast; }" in v4
    assert "local-address fd00:99:1::11;" in v6 and "family { ipv6 unicast; }" in v6
    assert "description r1;" in v4 and "description r1-v6;" in v6
    for part in (v4, v6):
        assert "api { processes [ fabricd ]; neighbor-changes; }" in part
        assert "md5" not in part and "graceful-restart" not in part


def test_process_block_runs_the_relay_with_json_and_no_respawn() -> None:
    text = render_config(bgp(V4), HOST, RELAY)
    assert f"run {sys.executable} -m fabricd.bgp.relay /run/fabricd/bgp/relay.sock --timeout 3;" in text
    assert "encoder json;" in text and "respawn false;" in text


def test_hold_time_peer_overrides_the_default_and_zero_is_kept() -> None:
    text = render_config(bgp(V4, PeerConfig("x", ip_address("10.99.1.2"), 65001, hold_time=0)), HOST, RELAY)
    assert "hold-time 9;" in block(text, "10.99.1.1")
    assert "hold-time 0;" in block(text, "10.99.1.2")


def test_families_default_to_the_peer_address_family_and_follow_the_list() -> None:
    assert peer_families(V4) == ("ipv4-unicast",) and peer_families(V6) == ("ipv6-unicast",)
    both = PeerConfig("r", ip_address("10.99.1.1"), 65000, families=("ipv4-unicast", "ipv6-unicast"))
    assert "family { ipv4 unicast; ipv6 unicast; }" in render_config(bgp(both), HOST, RELAY)


def test_graceful_restart_only_when_enabled() -> None:
    off = render_config(bgp(V4), HOST, RELAY)
    on = render_config(bgp(V4, graceful_restart=GracefulRestartConfig(True, 40)), HOST, RELAY)
    assert "graceful-restart" not in off
    assert "capability { graceful-restart 40; }" in block(on, "10.99.1.1")


def test_local_address_choice() -> None:
    assert local_address(V4, HOST) == ip_address("10.99.1.11")
    assert local_address(V6, HOST) == ip_address("fd00:99:1::11")
    pinned = PeerConfig("p", ip_address("fd00:99:1::1"), 65000, local_address=ip_address("fd00:99:1::99"))
    assert local_address(pinned, HOST) == ip_address("fd00:99:1::99")
    v6_only = HostConfig("h", ip_address("fd00:99:1::11"))
    assert local_address(V6, v6_only) == ip_address("fd00:99:1::11")
    with pytest.raises(ExaBGPConfigError, match="no IPv4 underlay"):
        local_address(V4, v6_only)
    with pytest.raises(ExaBGPConfigError, match="no IPv6 underlay"):
        render_config(bgp(V6), HostConfig("h", ip_address("10.99.1.11")), RELAY)


def test_md5_password_goes_in_base64_so_no_character_needs_quoting() -> None:
    peer = PeerConfig("r1", ip_address("10.99.1.1"), 65000, password=PASSWORDS[1])
    part = block(render_config(bgp(peer), HOST, RELAY), "10.99.1.1")
    encoded = md5_base64(PASSWORDS[1])
    assert f"md5-password {encoded};" in part and "md5-base64 true;" in part
    assert base64.b64decode(encoded).decode() == PASSWORDS[1]
    with pytest.raises(ExaBGPConfigError):
        md5_base64("x" * 81)


def test_tokens_are_plain_quoted_or_refused() -> None:
    assert token("/run/fabricd/bgp/relay.sock") == "/run/fabricd/bgp/relay.sock"
    assert token("/run/a b/relay.sock") == '"/run/a b/relay.sock"'
    assert token("a;b{c}#") == '"a;b{c}#"'
    for bad in ('a"b', "a'b", "a\\b", "a\nb", ""):
        with pytest.raises(ExaBGPConfigError):
            token(bad)
    with pytest.raises(ExaBGPConfigError, match="absolute"):
        render_config(bgp(V4), HOST, ["python3", "-m", "fabricd.bgp.relay"])
    with pytest.raises(ExaBGPConfigError, match="no BGP peers"):
        render_config(bgp(), HOST, RELAY)


def test_environment_acks_commands_and_never_listens_or_respawns() -> None:
    env = exabgp_environment(Path("/run/fabricd/bgp/exabgp.log"))
    assert env["exabgp_api_ack"] == "true" and env["exabgp_api_encoder"] == "json"
    assert env["exabgp_api_respawn"] == "false" and env["exabgp_api_cli"] == "false"
    assert env["exabgp_daemon_daemonize"] == "false" and env["exabgp_daemon_drop"] == "false"
    assert env["exabgp_tcp_bind"] == "" and env["exabgp_log_destination"] == "/run/fabricd/bgp/exabgp.log"
    assert float(env["exabgp_reactor_speed"]) < 1.0  # the default throttles large installs


# ExaBGP's own parser, in a child so its global environment and logger stay out of this process.
_PARSE = """
import json, sys
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.configuration.configuration import Configuration
from exabgp.util.psk import decode_base64
out = []
for path in sys.argv[1:]:
    conf = Configuration([path])
    if not conf.reload():
        out.append({"error": str(conf.error)})
        continue
    peers = {}
    for n in conf.neighbors.values():
        md5 = n["md5-password"]
        peers[str(n["peer-address"])] = {
            "local": str(n["local-address"]), "hold": int(n["hold-time"]),
            "local_as": int(n["local-as"]), "peer_as": int(n["peer-as"]),
            "md5": decode_base64(md5).decode() if md5 and n["md5-base64"] else md5,
            "gr": n["capability"]["graceful-restart"],
            "families": sorted(f"{a} {s}" for a, s in n.families()),
        }
    out.append({"peers": peers, "processes": conf.processes})
print(json.dumps(out))
"""


def exabgp_reads(paths: list[Path], tmp_path: Path) -> list[dict[str, Any]]:
    env = {"exabgp_api_cli": "false", "exabgp_log_destination": str(tmp_path / "parse.log")}
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, *map(str, paths)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def test_exabgp_reads_back_exactly_what_was_meant(tmp_path: Path) -> None:
    peers = (
        PeerConfig("r1", ip_address("10.99.1.1"), 65000, password=PASSWORDS[0], hold_time=30),
        PeerConfig("r1-v6", ip_address("fd00:99:1::1"), 4200000000, password=PASSWORDS[1]),
        PeerConfig("both", ip_address("10.99.1.3"), 65003, families=("ipv4-unicast", "ipv6-unicast")),
    )
    relay = [sys.executable, "-m", "fabricd.bgp.relay", str(tmp_path / "a dir/relay.sock")]
    plain, graceful = tmp_path / "plain.conf", tmp_path / "graceful.conf"
    plain.write_text(render_config(bgp(*peers, hold_time=3), HOST, relay))
    gr = GracefulRestartConfig(True, 45)
    graceful.write_text(render_config(bgp(V4, graceful_restart=gr), HOST, relay))
    first, second = exabgp_reads([plain, graceful], tmp_path)
    assert "error" not in first, first
    r1, r1v6, both = (first["peers"][a] for a in ("10.99.1.1", "fd00:99:1::1", "10.99.1.3"))
    assert r1["md5"] == PASSWORDS[0] and r1v6["md5"] == PASSWORDS[1] and both["md5"] is None
    assert (r1["hold"], r1v6["hold"], both["hold"]) == (30, 3, 3)
    assert (r1["local"], r1v6["local"]) == ("10.99.1.11", "fd00:99:1::11")
    assert (r1["local_as"], r1v6["peer_as"]) == (65011, 4200000000)
    assert r1["families"] == ["ipv4 unicast"] and r1v6["families"] == ["ipv6 unicast"]
    assert both["families"] == ["ipv4 unicast", "ipv6 unicast"]
    assert not r1["gr"] and second["peers"]["10.99.1.1"]["gr"] == 45
    process = first["processes"]["fabricd"]
    assert process["run"] == relay and process["encoder"] == "json" and process["respawn"] is False
    assert process["neighbor-changes"] == ["fabricd"]
