"""What a reload changes and what it refuses (`fabricd.config.reload`), on examples and generated configs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config import FabricConfig, load_config_text
from fabricd.config.reload import LIVE_KEYS, changed_keys, config_change
from tests.unit.test_config_properties import configs, write

BASE = """
host: {name: h1, underlay_address: 10.99.1.11, underlay_address6: "fd00:99:1::11"}
bgp:
  local_asn: 65011
  peers:
    - {name: r1, address: 10.99.1.1, asn: 65000}
overlay:
  enabled: true
  peers:
    - {name: h1, address: 10.99.1.11}
    - {name: h2, address: 10.99.2.12}
routes:
  allowed_ranges: [10.201.0.0/16]
control: {socket: /run/fabricd/fabricd.sock}
dhcp:
  enabled: true
  server_address: 10.200.0.2/24
  ranges: [10.200.0.100-10.200.0.200]
  priority: [h1, h2]
"""


R1 = "    - {name: r1, address: 10.99.1.1, asn: 65000}"
R1_V6 = "    - {name: r1-v6, address: 'fd00:99:1::1', asn: 65000}"


def load(text: str) -> FabricConfig:
    return load_config_text(text, "/etc/fabricd/fabricd.yaml")


def edited(old: str, new: str) -> FabricConfig:
    assert old in BASE
    return load(BASE.replace(old, new))


def test_the_same_file_changes_nothing() -> None:
    change = config_change(load(BASE), load(BASE))
    assert change.live and change.changed == () and change.summary() == "no change"
    assert not change.bgp_peers.any


def test_a_new_bgp_peer_is_live_and_the_existing_one_is_kept() -> None:
    change = config_change(
        load(BASE),
        edited(
            "    - {name: r1, address: 10.99.1.1, asn: 65000}",
            R1 + "\n" + R1_V6,
        ),
    )
    assert change.live, change.refused
    assert change.changed == ("bgp.peers",)
    assert [p.name for p in change.bgp_peers.added] == ["r1-v6"]
    assert [p.name for p in change.bgp_peers.kept] == ["r1"]
    assert change.bgp_peers.removed == change.bgp_peers.changed == ()


def test_a_peer_with_new_settings_is_changed_not_kept() -> None:
    change = config_change(load(BASE), edited("asn: 65000}", "asn: 65001}"))
    assert change.live
    assert [p.asn for p in change.bgp_peers.changed] == [65001]
    assert change.bgp_peers.kept == change.bgp_peers.added == ()
    assert [str(a) for a in change.bgp_peers.restarted()] == ["10.99.1.1"]


def test_a_removed_peer_is_removed() -> None:
    old = edited(
        "    - {name: r1, address: 10.99.1.1, asn: 65000}",
        "    - {name: r1, address: 10.99.1.1, asn: 65000}\n    - {name: r2, address: 10.99.1.2, asn: 65000}",
    )
    change = config_change(old, load(BASE))
    assert change.live
    assert [p.name for p in change.bgp_peers.removed] == ["r2"]
    assert [p.name for p in change.bgp_peers.kept] == ["r1"]


def test_route_policy_and_overlay_peers_are_live() -> None:
    change = config_change(load(BASE), edited("[10.201.0.0/16]", "[10.201.0.0/16, 10.202.0.0/16]"))
    assert change.live and change.changed == ("routes.allowed_ranges",)
    change = config_change(
        load(BASE),
        edited(
            "    - {name: h2, address: 10.99.2.12}\n",
            "    - {name: h2, address: 10.99.2.12}\n    - {name: h3, address: 10.99.3.13}\n",
        ),
    )
    assert change.live and change.changed == ("overlay.peers",)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("underlay_address: 10.99.1.11,", "underlay_address: 10.99.1.19,", "host.underlay_address"),
        ("enabled: true\n  peers:", "enabled: true\n  bridge: br9\n  peers:", "overlay.bridge"),
        ("enabled: true\n  peers:", "enabled: true\n  vni: 7\n  peers:", "overlay.vni"),
        ("/run/fabricd/fabricd.sock", "/run/fabricd/other.sock", "control.socket"),
        ("priority: [h1, h2]", "election: lxd-cluster", "dhcp.election"),
        ("local_asn: 65011", "local_asn: 65099", "bgp.local_asn"),
    ],
)
def test_a_key_that_cannot_change_live_refuses_the_reload_by_name(old: str, new: str, key: str) -> None:
    change = config_change(load(BASE), edited(old, new))
    assert not change.live
    assert f"changing {key} needs a restart" in change.refused
    assert key in change.summary()


def test_a_new_host_name_needs_a_restart() -> None:
    new = load(BASE.replace("name: h1, underlay", "name: h9, underlay").replace("[h1, h2]", "[h9, h2]"))
    change = config_change(load(BASE), new)
    assert "changing host.name needs a restart" in change.refused


def test_a_refused_key_refuses_the_live_changes_with_it() -> None:
    new = load(
        BASE.replace("[10.201.0.0/16]", "[10.202.0.0/16]").replace("vni", "vni").replace("h1, h2", "h2, h1")
    )
    change = config_change(load(BASE), new)
    assert set(change.changed) == {"routes.allowed_ranges", "dhcp.priority"}
    assert change.refused == ("changing dhcp.priority needs a restart",)


def test_switching_overlay_peers_to_the_cluster_needs_a_restart() -> None:
    text = BASE.replace("priority: [h1, h2]", "election: standalone\n  priority: [h1]")
    new = text.replace(
        "  peers:\n    - {name: h1, address: 10.99.1.11}\n    - {name: h2, address: 10.99.2.12}",
        "  peers: lxd-cluster",
    )
    change = config_change(load(text), load(new))
    assert "changing overlay.peers between a list and lxd-cluster needs a restart" in change.refused


def test_a_peer_the_host_cannot_reach_is_refused() -> None:
    text = BASE.replace(', underlay_address6: "fd00:99:1::11"', "")
    new = text.replace(
        "    - {name: r1, address: 10.99.1.1, asn: 65000}",
        R1 + "\n" + R1_V6,
    )
    change = config_change(load(text), load(new))
    assert not change.live
    assert change.refused[0].startswith("bgp.peers: peer r1-v6 (fd00:99:1::1): this host has no IPv6")


# ---- generated configs --------------------------------------------------------------------------

PROPS = settings(max_examples=60, deadline=None)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _set(getattr(obj, head), rest, value)})


def _load(data: dict[str, Any], name: str = "/etc/fabricd/fabricd.yaml") -> FabricConfig:
    return load_config_text(write(data).text(), name)


@PROPS
@given(configs(), configs())
def test_changed_keys_are_exactly_where_two_configs_differ(a: dict[str, Any], b: dict[str, Any]) -> None:
    old, new = _load(a), _load(b, "/elsewhere.yaml")
    keys = list(changed_keys(old, new))
    assert len(set(keys)) == len(keys)
    for key in keys:  # each one differs...
        assert _get(old, key) != _get(new, key), key
    patched = old
    for key in keys:  # ...and together they are all that differs (the file's name is no setting)
        patched = _set(patched, key, _get(new, key))
    assert dataclasses.replace(patched, source=new.source) == new


@PROPS
@given(configs(), configs())
def test_a_reload_is_refused_exactly_when_a_restart_key_changed(a: dict[str, Any], b: dict[str, Any]) -> None:
    old, new = _load(a), _load(b)
    change = config_change(old, new)
    restart = [
        k for k in change.changed if not any(k == live or k.startswith(live + ".") for live in LIVE_KEYS)
    ]
    for key in restart:
        assert f"changing {key} needs a restart" in change.refused
    if not restart:
        assert all(r.startswith(("bgp.peers:", "changing overlay.peers")) for r in change.refused)


@PROPS
@given(configs(), configs(), st.data())
def test_taking_only_live_sections_from_another_config_is_live(
    a: dict[str, Any], b: dict[str, Any], data: st.DataObject
) -> None:
    """Route policy, BGP peers and a static overlay peer list from config b, everything else from a."""
    mixed = {**a}
    if "routes" in b:
        mixed["routes"] = b["routes"]
    else:
        mixed.pop("routes", None)
    if "bgp" in a and "bgp" in b and data.draw(st.booleans()):
        mixed["bgp"] = {**a["bgp"], "peers": b["bgp"]["peers"]}
    old, new = _load(a), _load(mixed)
    change = config_change(old, new)
    assert all(k.startswith(("routes", "bgp.peers")) for k in change.changed)
    # What can still stand in the way: a new peer this host has no source address for.
    assert all(r.startswith("bgp.peers: peer ") for r in change.refused), change.refused
    if change.live and new.bgp is not None:
        before = {p.address for p in old.bgp.peers} if old.bgp else set()
        after = {p.address for p in new.bgp.peers}
        peers = change.bgp_peers
        assert {p.address for p in peers.added} == after - before
        assert {p.address for p in peers.removed} == before - after
        assert {p.address for p in (*peers.kept, *peers.changed)} == after & before
        assert set(peers.kept) <= set(old.bgp.peers if old.bgp else ())


def test_bfd_for_a_peer_is_live_only_while_the_bfd_daemon_runs() -> None:
    with_bfd = edited(R1, "    - {name: r1, address: 10.99.1.1, asn: 65000, bfd: true}")
    on = config_change(load(BASE), with_bfd)
    assert on.refused == ("turning BFD on or off for every BGP peer needs a restart",)
    off = config_change(with_bfd, load(BASE))
    assert off.refused == on.refused
    both = BASE.replace(R1, R1 + "\n" + R1_V6)
    one_more = config_change(
        load(both.replace(R1, R1[:-1] + ", bfd: true}")),
        load(both.replace(R1, R1[:-1] + ", bfd: true}").replace(R1_V6, R1_V6[:-1] + ", bfd: true}")),
    )
    assert one_more.live and [p.name for p in one_more.bgp_peers.changed] == ["r1-v6"]
