"""bgp.bfd and bgp.peers[].bfd: off by default, true or a mapping, section default, one set of timers."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from textwrap import dedent, indent
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from fabricd.config import ConfigError, load_config_text
from fabricd.config.model import BFDConfig
from tests.unit.test_config import assert_problem, config, problems

Data = dict[str, Any]
BGP = """\
bgp:
  local_asn: 65011
"""


def bgp(body: str) -> str:
    """The bgp section with `body` (its keys at two spaces once dedented) under it."""
    return config(BGP + indent(dedent(body), "  "))


def test_off_by_default() -> None:
    cfg = load_config_text(bgp("peers:\n  - {address: 192.0.2.1, asn: 65000}\n"))
    assert cfg.bgp is not None
    assert cfg.bgp.peers[0].bfd is None and cfg.bgp.bfd_peers == () and cfg.bgp.bird is None


def test_true_takes_100_ms_times_3_single_hop() -> None:
    cfg = load_config_text(bgp("peers:\n  - {address: 192.0.2.1, asn: 65000, bfd: true}\n"))
    assert cfg.bgp is not None
    assert cfg.bgp.peers[0].bfd == BFDConfig(100, 3, False)


def test_section_default_and_peer_overrides() -> None:
    text = bgp(
        """\
          bfd: {interval_ms: 50, multiplier: 4}
          bird: /opt/bird/sbin/bird
          peers:
            - {address: 192.0.2.1, asn: 65000}
            - {address: 192.0.2.2, asn: 65000, bfd: false}
            - {address: 2001:db8::1, asn: 65000, bfd: {multihop: true, interval_ms: 300}}
            - {address: 2001:db8::2, asn: 65000, bfd: true}
        """
    )
    cfg = load_config_text(text)
    assert cfg.bgp is not None
    assert [p.bfd for p in cfg.bgp.peers] == [
        BFDConfig(50, 4),
        None,
        BFDConfig(300, 4, True),
        BFDConfig(50, 4),
    ]
    assert [str(p.address) for p in cfg.bgp.bfd_peers] == ["192.0.2.1", "2001:db8::1", "2001:db8::2"]
    assert cfg.bgp.bird == Path("/opt/bird/sbin/bird")


def test_bad_values_point_at_file_line_and_key() -> None:
    # HOST is 3 lines and BGP 2, so the peers list starts on line 6.
    peers = "peers:\n  - address: 192.0.2.1\n    asn: 65000\n    bfd: {}\n"
    assert_problem(
        bgp(peers).replace("{}", "sometimes"),
        "bgp.peers[0].bfd",
        9,
        "expected true, false or a mapping with interval_ms, multiplier, multihop, got 'sometimes'",
    )
    assert_problem(
        bgp(peers).replace("{}", "{interval_ms: 5}"),
        "bgp.peers[0].bfd.interval_ms",
        9,
        "expected an integer 10..10000, got 5",
    )
    assert_problem(
        bgp(peers).replace("{}", "{multiplier: 0}"), "bgp.peers[0].bfd.multiplier", 9, "1..255, got 0"
    )
    assert_problem(
        bgp(peers).replace("{}", "{multihop: 1}"), "bgp.peers[0].bfd.multihop", 9, "true or false, got 1"
    )
    assert_problem(
        bgp(peers).replace("{}", "{interval: 100}"),
        "bgp.peers[0].bfd.interval",
        9,
        "unknown key 'interval'; expected one of: interval_ms, multiplier, multihop",
    )
    assert_problem(bgp("bfd: [1]\n" + peers), "bgp.bfd", 6, "got a list")
    assert_problem(bgp("bird: bird\n" + peers), "bgp.bird", 6, "expected an absolute path")


def test_single_hop_timers_must_agree() -> None:
    text = bgp(
        """\
          peers:
            - {address: 192.0.2.1, asn: 65000, bfd: true}
            - {address: 192.0.2.2, asn: 65000, bfd: {multihop: true, interval_ms: 300}}
            - {address: 192.0.2.3, asn: 65000, bfd: {interval_ms: 50}}
        """
    )
    assert_problem(
        text,
        "bgp.peers[2].bfd",
        9,
        "every single-hop BFD session must use the same timers (BIRD 2 keeps one set per kind): "
        "bgp.peers[0] has interval_ms 100, multiplier 3, this peer interval_ms 50, multiplier 3",
    )


# --- property: what the file says is what the peers get ------------------------------------------

bfd_mappings = st.fixed_dictionaries(
    {},
    optional={
        "interval_ms": st.sampled_from([50, 100, 300]),
        "multiplier": st.sampled_from([3, 5]),
        "multihop": st.booleans(),
    },
)
bfd_values = st.one_of(st.booleans(), bfd_mappings)


def expected_bfd(spec: Any, default: BFDConfig | None) -> BFDConfig | None:
    """The documented rule: false is off, true the default, a mapping its keys over the default."""
    base = default or BFDConfig()
    if spec is False:
        return None
    if spec is True:
        return base
    return BFDConfig(
        spec.get("interval_ms", base.interval_ms),
        spec.get("multiplier", base.multiplier),
        spec.get("multihop", base.multihop),
    )


@given(
    section=st.one_of(st.none(), bfd_values),
    peers=st.lists(st.one_of(st.just("absent"), bfd_values), min_size=1, max_size=5),
)
def test_peers_get_what_the_file_says(section: Any, peers: list[Any]) -> None:
    data: Data = {"local_asn": 65011, "peers": []}
    if section is not None:
        data["bfd"] = section
    for n, spec in enumerate(peers):
        peer: Data = {"address": f"192.0.2.{n + 1}", "asn": 65000}
        if spec != "absent":
            peer["bfd"] = spec
        data["peers"].append(peer)
    text = config(yaml.safe_dump({"bgp": data}, sort_keys=False))
    default = None if section is None else expected_bfd(section, None)
    want = [default if spec == "absent" else expected_bfd(spec, default) for spec in peers]
    first: dict[bool, BFDConfig] = {}
    clashes = []
    for n, bfd in enumerate(want):
        if bfd is not None and first.setdefault(bfd.multihop, bfd).timers() != bfd.timers():
            clashes.append(f"bgp.peers[{n}].bfd")
    if not clashes:
        cfg = load_config_text(text)
        assert cfg.bgp is not None
        assert [p.bfd for p in cfg.bgp.peers] == want
        assert [p.address for p in cfg.bgp.bfd_peers] == [
            ip_address(f"192.0.2.{n + 1}") for n, bfd in enumerate(want) if bfd is not None
        ]
    else:
        found = problems(text)
        assert [p.key_path for p in found] == clashes
        assert all("same timers" in p.message for p in found)


def test_config_error_is_the_loaders_own() -> None:
    try:
        load_config_text(bgp("peers:\n  - {address: 192.0.2.1, asn: 65000, bfd: 7}\n"), "test.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("test.yaml:7: bgp.peers[0].bfd: expected true, false or a mapping")
    else:
        raise AssertionError("bfd: 7 was accepted")
