from fabricd.cli.render import duration, render_status, table


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
        "authority": {"host": "h2", "state": "serving"},
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
        "DHCP/DNS authority: h2 (serving)",
        "lxd: unreachable",
        "2.0 ms",
    ):
        assert needle in text


def test_empty_status_says_none() -> None:
    text = render_status({"host": {}, "bgp_peers": [], "routes": [], "overlay_peers": [], "authority": None})
    assert "BGP peers: none" in text and "routes: none" in text and "not configured" in text
