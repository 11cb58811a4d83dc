"""The overlay's reconcile steps: when there is (not yet) anything to plan."""

from __future__ import annotations

from fabricd.agent.loop import Observations
from fabricd.config.loader import load_config_text
from fabricd.lxd.observer import LXD, LXDObservation
from fabricd.lxd.records import LXDSnapshot, MemberRecord
from fabricd.overlay.feature import UNDERLAY, OverlayPlanning
from fabricd.overlay.manager import Underlay

CLUSTER = """
host: {name: h1, underlay_address: 10.99.1.11}
overlay: {enabled: true, peers: lxd-cluster}
"""
STATIC = """
host: {name: h1, underlay_address: 10.99.1.11}
overlay: {enabled: true, peers: [{name: h2, address: 10.99.2.12}]}
"""
UNDERLAY_1500 = Underlay(3, "eth1", 1500)


def observed(snapshot: LXDSnapshot | None, underlay: Underlay = UNDERLAY_1500) -> Observations:
    seen = Observations()
    seen.put(LXD, LXDObservation(snapshot, snapshot is not None, None, None, None))
    seen.put(UNDERLAY, underlay)
    return seen


def test_cluster_peers_before_lxd_was_read_build_devices_but_keep_every_entry() -> None:
    # An agent restart must not empty the flood list while it connects to LXD.
    intent = OverlayPlanning(load_config_text(CLUSTER)).plan(observed(None))
    assert intent is not None and intent.keep == "all" and intent.plan.flood == ()


def test_cluster_peers_come_from_the_snapshot() -> None:
    snapshot = LXDSnapshot(
        member="h1",
        clustered=True,
        members=(
            MemberRecord("h1", "Online", "https://10.99.1.11:8443"),
            MemberRecord("h2", "Online", "https://10.99.2.12:8443"),
        ),
    )
    intent = OverlayPlanning(load_config_text(CLUSTER)).plan(observed(snapshot))
    assert intent is not None and intent.keep == "nothing"
    assert [str(f.vtep) for f in intent.plan.flood] == ["10.99.2.12"]
    assert intent.plan.mtu == 1450


def test_static_peers_are_planned_without_lxd_but_keep_mac_entries() -> None:
    intent = OverlayPlanning(load_config_text(STATIC)).plan(observed(None))
    assert intent is not None and intent.keep == "macs"
    assert [str(f.vtep) for f in intent.plan.flood] == ["10.99.2.12"]


def test_no_underlay_mtu_and_no_configured_mtu_plans_nothing() -> None:
    config = load_config_text(STATIC)
    broken = observed(None, Underlay(None, None, None, "no interface has it"))
    assert OverlayPlanning(config).plan(broken) is None
    configured = load_config_text(STATIC.replace("enabled: true,", "enabled: true, mtu: 1400,"))
    intent = OverlayPlanning(configured).plan(broken)
    assert intent is not None and intent.plan.mtu == 1400
