"""Router nodes really run: an FRR node and a BIRD node peer over a lab link and exchange a route."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pyroute2 import NetNS

from fabric_lab.runner import Lab
from tests.lab.conftest import assert_nothing_left, lab_from

pytestmark = pytest.mark.lab

TOPOLOGY = """\
name: trouters
topology:
  nodes:
    fr:
      kind: linux
      image: quay.io/frrouting/frr:8.4.1
      binds: [fr/daemons:/etc/frr/daemons, fr/frr.conf:/etc/frr/frr.conf]
      exec: [ip addr add 10.98.0.1/24 dev eth1]
    bd:
      kind: linux
      image: docker.io/pierky/bird:2.0.12
      binds: [bd/bird.conf:/etc/bird/bird.conf:ro]
      exec: [ip addr add 10.98.0.2/24 dev eth1]
  links:
    - endpoints: [fr:eth1, bd:eth1]
"""
FRR_CONF = """\
frr defaults datacenter
hostname fr
ip route 10.97.0.0/24 blackhole
router bgp 65001
 bgp router-id 10.98.0.1
 no bgp ebgp-requires-policy
 neighbor 10.98.0.2 remote-as 65002
 neighbor 10.98.0.2 timers 1 3
 neighbor 10.98.0.2 timers connect 1
 address-family ipv4 unicast
  redistribute static
 exit-address-family
"""
BIRD_CONF = """\
router id 10.98.0.2;
protocol device {}
protocol kernel { ipv4 { export all; }; }
protocol bgp fr {
  local 10.98.0.2 as 65002;
  neighbor 10.98.0.1 as 65001;
  connect delay time 1;
  error wait time 1, 5;
  ipv4 { import all; export none; };
}
"""


def write_lab(directory: Path) -> Path:
    (directory / "fr").mkdir()
    (directory / "bd").mkdir()
    (directory / "fr" / "daemons").write_text("bgpd=yes\nvtysh_enable=yes\n")
    (directory / "fr" / "frr.conf").write_text(FRR_CONF)
    (directory / "bd" / "bird.conf").write_text(BIRD_CONF)
    path = directory / "routers.clab.yml"
    path.write_text(TOPOLOGY)
    return path


def has_route(ns_name: str, dst: str, plen: int) -> bool:
    with NetNS(ns_name) as ns:
        return any(r.get_attr("RTA_DST") == dst and r["dst_len"] == plen for r in ns.get_routes(family=2))


def test_frr_and_bird_nodes_peer_and_install_routes(lab_host: None, state_root: Path, tmp_path: Path) -> None:
    lab: Lab = lab_from(write_lab(tmp_path), "trouters", state_root)
    state = lab.up()
    try:
        fr, bd = lab.node("fr"), lab.node("bd")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not has_route(bd.netns_name, "10.97.0.0", 24):
            time.sleep(0.2)
        assert has_route(bd.netns_name, "10.97.0.0", 24), bd.run(
            ["birdc", "-s", "/run/bird/bird.ctl", "show", "protocols", "all"]
        ).stdout
        protocols = bd.run(["birdc", "-s", "/run/bird/bird.ctl", "show", "protocols"]).stdout
        assert "Established" in protocols
        summary = json.loads(fr.run(["vtysh", "-c", "show bgp ipv4 unicast summary json"]).stdout)
        assert summary["peers"]["10.98.0.2"]["state"] == "Established"
        # The bound bird.conf is read-only inside the node, as the `:ro` bind says.
        assert bd.run(["sh", "-c", "echo x >> /etc/bird/bird.conf"], check=False).returncode != 0
    finally:
        recorded = [n.holder_pid for n in state.nodes.values() if n.holder_pid]
        lab.down()
    assert_nothing_left(lab, recorded)
