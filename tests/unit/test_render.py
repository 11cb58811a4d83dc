import time

from fabricd.cli.render import duration, render_status, table
from fabricd.cli.render_authority import render_authority, render_leases

AUTHORITY = {
    "mode": "lxd-cluster",
    "host": "h1",
    "role": "authority",
    "holder": "h1",
    "since": time.time() - 60,
    "lease_expires": time.time() + 1.5,
    "epoch": 4,
    "reason": "holder",
    "standbys": ["h2", "h3"],
    "server": {"address": "10.200.0.1/24", "address6": None, "mac": "02:fd:01:00:00:64"},
    "leases": {"active": 3, "reserved": 2, "dynamic": 1},
    "reservations": 2,
    "names": 4,
    "conflicts": [],
    "refused": [],
    "probe": {
        "at": time.time(),
        "answering": ["h1"],
        "second_servers": ["10.200.0.9 from MAC 02:00:00:00:00:99"],
    },
}


def test_duration() -> None:
    assert duration(None) == "-"
    assert duration(0) == "0s"
    assert duration(61) == "1m1s"
    assert duration(90061) == "1d1h"


def test_table_aligns_columns() -> None:
    out = table(("A", "LONGER"), [("x", None), ("yyyy", 2)]).splitlines()
    assert out[0] == "A     LONGER"
    assert out[1] == "x     -"
    assert out[2] == "yyyy  2"


def test_status_shows_every_section() -> None:
    status = {
        "host": {"name": "h1", "underlay_address": "10.0.0.1", "version": "1", "pid": 9, "uptime_seconds": 5},
        "reconcile": {"passes": 3, "last_pass_seconds": 0.002},
        "bgp_peers": [
            {
                "address": "10.0.0.254",
                "asn": 65000,
                "state": "established",
                "uptime_seconds": 70,
                "prefixes_sent": 4,
            }
        ],
        "routes": [
            {
                "prefix": "10.1.0.0/24",
                "next_hop": "10.0.0.1",
                "origin": "default/net1",
                "state": "announced",
                "reason": None,
            }
        ],
        "overlay_peers": [{"name": "h2", "address": "10.0.0.2", "state": "up"}],
        "authority": AUTHORITY,
        "problems": ["lxd: unreachable"],
    }
    text = render_status(status)
    for needle in (
        "h1",
        "10.0.0.254",
        "established",
        "1m10s",
        "10.1.0.0/24",
        "announced",
        "h2",
        "DHCP/DNS authority (lxd-cluster): h1 (this host, since",
        "lease held until ",
        "), epoch 4",
        "standbys: h2, h3",
        "leases: 3 active (2 reserved, 1 dynamic)",
        "SECOND DHCP SERVER: 10.200.0.9 from MAC 02:00:00:00:00:99",
        "lxd: unreachable",
        "2.0 ms",
    ):
        assert needle in text


def test_empty_status_says_none() -> None:
    text = render_status({"host": {}, "bgp_peers": [], "routes": [], "overlay_peers": [], "authority": None})
    assert "BGP peers: none" in text and "routes: none" in text
    assert "DHCP/DNS authority: not enabled on this host (dhcp.enabled)" in text


def test_authority_lists_conflicts_and_refusals() -> None:
    section = {
        **AUTHORITY,
        "conflicts": [
            {"name": "web", "instances": ["default/web@h1", "default/web@h2"], "holder": "default/web@h1"}
        ],
        "refused": [{"subject": "nic default/x@h1/eth0", "reason": "MAC 01:00:5e:00:00:01 is multicast"}],
    }
    text = "\n".join(render_authority(section))
    assert "web            default/web@h1, default/web@h2  default/web@h1" in text
    assert "nic default/x@h1/eth0" in text and "is multicast" in text


def test_leases_table_and_where_they_are() -> None:
    leases = [{"address": "10.200.0.5", "mac": "02:00:00:00:00:01", "hostname": "c1", "remaining": 3599.0}]
    text = render_leases(leases, AUTHORITY)
    assert text.splitlines()[1].split() == ["10.200.0.5", "02:00:00:00:00:01", "c1", "59m59s"]
    standby = {**AUTHORITY, "role": "standby", "holder": "h3"}
    assert render_leases([], standby) == "this host does not serve DHCP; h3 does: run fabricctl leases there"
    assert "not enabled" in render_leases([], None)


def test_status_shows_the_last_config_reload() -> None:
    base = {"host": {}, "bgp_peers": [], "routes": [], "overlay_peers": [], "authority": None}
    never = render_status({**base, "config": {"file": "/etc/fabricd/fabricd.yaml", "last_reload": None}})
    assert "config: /etc/fabricd/fabricd.yaml (no reload since start)" in never
    refused = {
        "at": time.time(),
        "ok": False,
        "outcome": "refused",
        "reason": "changing overlay.vni needs a restart",
    }
    text = render_status({**base, "config": {"file": "/etc/fabricd/fabricd.yaml", "last_reload": refused}})
    assert "refused (NOT APPLIED): changing overlay.vni needs a restart" in text
    applied = {**refused, "ok": True, "outcome": "applied", "reason": "changed bgp.peers"}
    text = render_status({**base, "config": {"file": "/etc/fabricd/fabricd.yaml", "last_reload": applied}})
    assert "applied (ok): changed bgp.peers" in text
