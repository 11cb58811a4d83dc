"""The overlay manager against a real kernel in a scratch namespace: static peers from config, peer
changes without a rebuild, ownership of FDB entries, teardown, and IPsec failing closed.

No LXD here: with static peers the overlay needs none (the planner gets no snapshot).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import NetNS, netns

from fabricd.config.loader import load_config_text
from fabricd.config.model import FabricConfig
from fabricd.overlay.kernel import FLOOD_MAC
from fabricd.overlay.manager import OverlayManager
from fabricd.overlay.planner import plan_overlay

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_host")]
LOCAL = "10.77.0.1"
LOCAL6 = "fd77::1"


@pytest.fixture
def scratch() -> Iterator[str]:
    name = f"fabtest-ovm-{os.getpid()}"
    netns.create(name)
    try:
        with NetNS(name) as ns:
            ns.link("add", ifname="u0", kind="veth", peer={"ifname": "u1"})
            for ifname in ("lo", "u0", "u1"):
                (index,) = ns.link_lookup(ifname=ifname)
                ns.link("set", index=index, state="up", mtu=1500 if ifname != "lo" else 65536)
            (u0,) = ns.link_lookup(ifname="u0")
            ns.addr("add", index=u0, address=LOCAL, prefixlen=24)
            ns.addr("add", index=u0, address=LOCAL6, prefixlen=64, flags=0x02)  # IFA_F_NODAD
        yield name
    finally:
        netns.remove(name)


def config(tmp_path: Path, peers: list[str], extra: str = "", local: str = LOCAL) -> FabricConfig:
    listed = "\n".join(f"    - {{name: p{i}, address: '{a}'}}" for i, a in enumerate(peers))
    text = f"""
host: {{name: a, underlay_address: '{local}'}}
control: {{socket: {tmp_path}/fabricd.sock}}
overlay:
  enabled: true
  peers:
{listed}
{extra}
"""
    return load_config_text(text, "test.yaml")


def apply(manager: OverlayManager, cfg: FabricConfig) -> str | None:
    underlay = manager.read_underlay()
    assert underlay.error is None and underlay.mtu == 1500
    return manager.apply(plan_overlay(cfg, None, underlay.mtu), underlay).error


def ns_json(name: str, *argv: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout or "[]"))


def flood(name: str) -> set[str]:
    entries = ns_json(name, "bridge", "-j", "fdb", "show", "dev", "vx-fabric0")
    return {str(e["dst"]) for e in entries if e.get("mac") == FLOOD_MAC and "dst" in e}


def links(name: str) -> dict[str, dict[str, object]]:
    return {str(link["ifname"]): link for link in ns_json(name, "ip", "-j", "-d", "link", "show")}


def test_static_peers_change_without_rebuild_and_teardown_removes_all(scratch: str, tmp_path: Path) -> None:
    first = config(tmp_path, ["10.77.0.2", "10.77.0.3"])
    manager = OverlayManager(first, tmp_path, netns=scratch)
    assert apply(manager, first) is None
    assert flood(scratch) == {"10.77.0.2", "10.77.0.3"}
    vxlan = links(scratch)["vx-fabric0"]
    assert vxlan["mtu"] == 1450 and links(scratch)["fabric0"]["mtu"] == 1450
    assert manager.firewall_status()["peers"] == ["10.77.0.2", "10.77.0.3"]

    # Someone else's entry on our device stays through every change.
    subprocess.run(["ip", "netns", "exec", scratch, "bridge", "fdb", "append", FLOOD_MAC, "dev", "vx-fabric0",
                    "dst", "10.77.0.9"], check=True)  # fmt: skip
    second = config(tmp_path, ["10.77.0.2", "10.77.0.4"])
    manager = OverlayManager(second, tmp_path, netns=scratch)  # as after a restart with a new config
    assert apply(manager, second) is None
    assert flood(scratch) == {"10.77.0.2", "10.77.0.4", "10.77.0.9"}
    assert links(scratch)["vx-fabric0"]["ifindex"] == vxlan["ifindex"]  # no rebuild
    assert manager.firewall_status()["peers"] == ["10.77.0.2", "10.77.0.4"]

    removed = manager.teardown()
    assert removed[:2] == ["vxlan vx-fabric0", "bridge fabric0"]
    assert "vx-fabric0" not in links(scratch) and "fabric0" not in links(scratch)
    assert not manager.firewall.exists()
    assert not (tmp_path / "overlay.json").exists()


def test_ipsec_that_cannot_be_installed_keeps_the_overlay_closed(scratch: str, tmp_path: Path) -> None:
    key = tmp_path / "overlay.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    cfg = config(tmp_path, ["10.77.0.2"], f"  ipsec: {{enabled: true, key_file: {key}}}")
    manager = OverlayManager(cfg, tmp_path, netns=scratch)
    error = apply(manager, cfg)
    states = subprocess.run(["ip", "-n", scratch, "xfrm", "state"], capture_output=True, text=True).stdout
    policies = subprocess.run(["ip", "-n", scratch, "xfrm", "policy"], capture_output=True, text=True).stdout
    if error is None:  # a kernel with ESP: SAs and policies in, overlay open
        assert "proto esp" in states and "10.77.0.2" in policies
        assert flood(scratch) == {"10.77.0.2"}
        manager.teardown()
        assert (
            subprocess.run(["ip", "-n", scratch, "xfrm", "state"], capture_output=True, text=True).stdout
            == ""
        )
    else:  # this machine's kernel: no ESP; nothing half-applied, and no clear-text VXLAN to anyone
        assert "ESP" in error, error
        assert states.strip() == "" and policies.strip() == ""
        assert "vx-fabric0" in links(scratch)
        assert flood(scratch) == set()


def test_ipv6_underlay_gives_mtu_minus_70_and_ipv6_vteps(scratch: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, ["fd77::2", "fd77::3"], local=LOCAL6)
    manager = OverlayManager(cfg, tmp_path, netns=scratch)
    assert apply(manager, cfg) is None
    assert flood(scratch) == {"fd77::2", "fd77::3"}
    vxlan = links(scratch)["vx-fabric0"]
    assert vxlan["mtu"] == 1430
    data = vxlan["linkinfo"]["info_data"]  # type: ignore[index]
    assert data["local6"] == LOCAL6 and data["udp_csum"] is True  # IPv6 keeps the UDP checksum
    assert manager.firewall_status()["peers"] == ["fd77::2", "fd77::3"]
    underlay = manager.read_underlay()
    assert manager.apply(plan_overlay(cfg, None, 1500), underlay).changes.empty  # read back = planned
    manager.teardown()
    assert "vx-fabric0" not in links(scratch)
