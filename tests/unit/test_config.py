"""The config loader: defaults, the model it builds, and precise problem reports."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from textwrap import dedent

import pytest

from fabricd.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    ConfigProblem,
    FabricConfig,
    load_config,
    load_config_text,
)
from fabricd.config.model import (
    ALL_PROJECTS,
    DEFAULT_LXD_SOCKET,
    BGPConfig,
    ControlConfig,
    DHCPConfig,
    GracefulRestartConfig,
    HealthCheckConfig,
    HostConfig,
    LoggingConfig,
    LXDConfig,
    MetricsConfig,
    OverlayConfig,
    OverlayPeer,
    PeerConfig,
    ReconcileConfig,
    RoutesConfig,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fabricd.yaml"

# Three lines, so a body appended to it starts on line 4.
HOST = "host:\n  name: node1\n  underlay_address: 192.0.2.11\n"
HOST6 = "host:\n  name: node1\n  underlay_address: 2001:db8::11\n"
# One service on line 5, open for more of its keys.
SERVICE = HOST + "services:\n  - {name: a, addresses: [10.0.0.1], backends: {key: true}, "


def config(body: str = "", host: str = HOST) -> str:
    return host + dedent(body)


def problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "test.yaml")
    return list(info.value.problems)


def only_problem(text: str) -> ConfigProblem:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def assert_problem(text: str, key_path: str, line: int | None, message: str) -> None:
    problem = only_problem(text)
    assert (problem.file, problem.key_path, problem.line) == ("test.yaml", key_path, line), str(problem)
    assert message in problem.message, str(problem)


# --- loading good configs ---------------------------------------------------------------------


def test_example_file_loads_with_both_address_families() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.source == EXAMPLE
    assert cfg.host.name == "node1"
    assert cfg.bgp is not None
    assert {peer.address.version for peer in cfg.bgp.peers} == {4, 6}
    assert cfg.bgp.router_id == IPv4Address("192.0.2.11")
    assert isinstance(cfg.overlay.peers, tuple)
    # VXLAN runs from host.underlay_address (IPv4 here): the example's VTEPs share its family.
    assert {peer.address.version for peer in cfg.overlay.peers} == {cfg.host.underlay_address.version}
    assert cfg.dhcp.server_address == IPv4Interface("10.200.0.1/24")
    assert [s.check.type for s in cfg.services if s.check] == ["dns", "https", "udp", "exec"]
    assert {a.version for s in cfg.services for a in s.addresses} == {4, 6}
    assert cfg.control.mode == 0o660


def test_minimal_config_is_all_defaults() -> None:
    cfg = load_config_text(HOST)
    assert cfg == FabricConfig(source=Path("<string>"), host=HostConfig("node1", IPv4Address("192.0.2.11")))
    assert cfg.lxd.socket == DEFAULT_LXD_SOCKET == Path("/var/lib/lxd/unix.socket")
    assert cfg.bgp is None
    assert cfg.control == ControlConfig(Path("/run/fabricd/fabricd.sock"), 0o660, None)
    assert cfg.logging == LoggingConfig("info", "auto")
    assert cfg.reconcile == ReconcileConfig(30.0)
    assert cfg.overlay == OverlayConfig(False, "fabric0", 100, 4789, None, ())
    assert cfg.dhcp == DHCPConfig(False, "fabric.internal", None, (), 3600)
    assert cfg.routes == RoutesConfig((), 32, 128, 8, 16, 100000, False)
    assert cfg.metrics == MetricsConfig(None)


def test_empty_sections_take_defaults() -> None:
    cfg = load_config_text(config("lxd:\noverlay: {}\ndhcp:\nbgp:\nservices:\nlogging: {}\n"))
    assert cfg.lxd == LXDConfig()
    assert cfg.overlay == OverlayConfig()
    assert cfg.bgp is None  # `bgp:` with nothing under it: no BGP
    assert cfg.services == ()


def test_model_is_frozen_and_uses_tuples() -> None:
    cfg = load_config(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.host.name = "other"  # type: ignore[misc]
    assert isinstance(cfg.services, tuple)
    assert isinstance(cfg.dhcp.ranges, tuple)


def test_bgp_defaults() -> None:
    cfg = load_config_text(
        config(
            """\
            bgp:
              local_asn: 65000
              peers:
                - address: 192.0.2.1
                  asn: 65001
                - address: 2001:db8::1
                  asn: 4200000000
            """
        )
    )
    assert cfg.bgp == BGPConfig(
        local_asn=65000,
        router_id=IPv4Address("192.0.2.11"),  # taken from host.underlay_address
        hold_time=9,
        graceful_restart=GracefulRestartConfig(False, 30),
        peers=(
            PeerConfig("192.0.2.1", IPv4Address("192.0.2.1"), 65001, families=("ipv4-unicast",)),
            PeerConfig("2001:db8::1", IPv6Address("2001:db8::1"), 4200000000, families=("ipv6-unicast",)),
        ),
    )


def test_router_id_given_with_ipv6_underlay() -> None:
    cfg = load_config_text(
        config(
            """\
            bgp:
              local_asn: 65000
              router_id: 10.0.0.1
              peers: [{address: "2001:db8::1", asn: 65001}]
            """,
            host=HOST6,
        )
    )
    assert cfg.bgp is not None
    assert cfg.bgp.router_id == IPv4Address("10.0.0.1")


def test_peer_fields() -> None:
    cfg = load_config_text(
        config(
            """\
            bgp:
              local_asn: 65000
              hold_time: 0
              graceful_restart: {enabled: true, restart_time: 4095}
              peers:
                - name: tor1
                  address: 192.0.2.1
                  asn: 65001
                  password: 12345678
                  hold_time: 3
                  families: [ipv4-unicast, ipv6-unicast]
                  local_address: 192.0.2.11
            """
        )
    )
    assert cfg.bgp is not None
    assert cfg.bgp.hold_time == 0
    assert cfg.bgp.graceful_restart == GracefulRestartConfig(True, 4095)
    assert cfg.bgp.peers == (
        PeerConfig(
            "tor1",
            IPv4Address("192.0.2.1"),
            65001,
            "12345678",  # a bare number is taken as the text written
            3,
            ("ipv4-unicast", "ipv6-unicast"),
            IPv4Address("192.0.2.11"),
        ),
    )


def test_lxd_remote() -> None:
    cfg = load_config_text(
        config(
            """\
            lxd:
              url: https://lxd.example.net:8443
              client_cert: /etc/fabricd/c.crt
              client_key: /etc/fabricd/c.key
              server_cert: /etc/fabricd/s.crt
              project: "*"
            """
        )
    )
    assert cfg.lxd.socket is None
    assert cfg.lxd.url == "https://lxd.example.net:8443"
    assert cfg.lxd.client_key == Path("/etc/fabricd/c.key")
    assert cfg.lxd.project == ALL_PROJECTS


def test_overlay_from_lxd_cluster() -> None:
    cfg = load_config_text(config("overlay: {enabled: true, peers: lxd-cluster, mtu: 1450, vni: 0x10}\n"))
    assert cfg.overlay.peers == "lxd-cluster"
    assert cfg.overlay.peers_from_lxd_cluster
    assert cfg.overlay.mtu == 1450
    assert cfg.overlay.vni == 16  # YAML 1.1 integer forms are honoured


def test_overlay_peer_name_defaults_to_address() -> None:
    cfg = load_config_text(
        config("overlay:\n  peers:\n    - address: 192.0.2.12\n    - {name: n3, address: 192.0.2.13}\n")
    )
    assert cfg.overlay.peers == (
        OverlayPeer("192.0.2.12", IPv4Address("192.0.2.12")),
        OverlayPeer("n3", IPv4Address("192.0.2.13")),
    )


def test_ipv6_overlay_peer_with_second_underlay_address() -> None:
    host = HOST + "  underlay_address6: 2001:db8::11\n"
    cfg = load_config_text(config("overlay:\n  peers: [{address: '2001:db8::12'}]\n", host=host))
    assert cfg.host.underlay_address6 == IPv6Address("2001:db8::11")


def test_service_check_defaults() -> None:
    cfg = load_config_text(
        config(
            """\
            services:
              - {name: a, addresses: [10.1.0.1], backends: {key: true}, check: {type: tcp, port: 22}}
              - {name: b, addresses: [10.1.0.2], backends: {key: true}, check: {type: http, interval: 0.2}}
              - name: c
                addresses: ["2001:db8::53"]
                backends: {instances: [dns1]}
                check: {type: exec, command: [/bin/true]}
              - {name: d, addresses: [10.1.0.4], backends: {pattern: "d-*"}, check: {type: dns, query: x.y}}
              - {name: e, addresses: [10.1.0.5], backends: {key: true}}
            """
        )
    )
    checks = [service.check for service in cfg.services]
    assert checks == [
        HealthCheckConfig("tcp", 22, 1.0, 0.5, 2, 2),
        HealthCheckConfig("http", 80, 0.2, 0.2, 2, 2, path="/", status=(200,)),
        HealthCheckConfig("exec", None, 1.0, 0.5, 2, 2, command=("/bin/true",)),
        HealthCheckConfig("dns", 53, query="x.y", query_type="A", rcode="NOERROR", answer=True),
        None,
    ]
    assert cfg.services[2].backends.instances == ("dns1",)
    assert cfg.services[4].backends.project == "default"
    assert cfg.services[4].on_failure == "withdraw"


def test_a_plain_exponent_is_a_number_as_in_yaml_1_2() -> None:
    """PyYAML (YAML 1.1) reads `1e-1` as text; fabricd reads it as the number it is."""
    cfg = load_config_text(
        HOST + "services:\n  - {name: a, addresses: [10.1.0.1], backends: {key: true},"
        " check: {type: tcp, port: 1, interval: 2E0, timeout: 1e-1}}\n"
    )
    check = cfg.services[0].check
    assert check is not None and (check.interval, check.timeout) == (2.0, 0.1)
    assert_problem(
        HOST + "services:\n  - {name: a, addresses: [10.1.0.1], backends: {key: true},"
        " check: {type: tcp, port: 1, timeout: '1e-1'}}\n",
        "services[0].check.timeout",
        5,
        "expected a number > 0, got '1e-1'",
    )


def test_routes_and_dhcp_values() -> None:
    cfg = load_config_text(
        config(
            """\
            routes:
              allowed_ranges: [10.0.0.0/8, "2001:db8::/32"]
              min_prefix_length_v4: 32
            overlay: {enabled: true, peers: [{name: node2, address: 192.0.2.12}]}
            dhcp:
              enabled: true
              server_address: 10.200.0.1/24
              server_address6: fd00:200::1/64
              ranges: [10.200.0.10-10.200.0.20, " 10.200.0.30 - 10.200.0.30 "]
              ipv6_ra: true
              priority: [node2, node1]
              probe_interval: 4.5
              silent_probes: 2
            """
        )
    )
    assert cfg.dhcp.ipv6_ra is True
    assert (cfg.dhcp.election, cfg.dhcp.priority) == ("standalone", ("node2", "node1"))
    assert (cfg.dhcp.probe_interval, cfg.dhcp.silent_probes) == (4.5, 2)
    assert cfg.dhcp.server_address6 == IPv6Interface("fd00:200::1/64")
    assert cfg.routes.allowed_ranges == (IPv4Network("10.0.0.0/8"), IPv6Network("2001:db8::/32"))
    assert cfg.routes.min_prefix_length_v4 == 32
    assert cfg.dhcp.ranges == (
        (IPv4Address("10.200.0.10"), IPv4Address("10.200.0.20")),
        (IPv4Address("10.200.0.30"), IPv4Address("10.200.0.30")),
    )


@pytest.mark.parametrize("written", ['"0660"', "0660", "660", '"0o660"', "'660'"])
def test_control_mode_is_read_as_octal(written: str) -> None:
    assert load_config_text(config(f"control: {{mode: {written}}}\n")).control.mode == 0o660


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ('"127.0.0.1:9464"', ("127.0.0.1", 9464)),
        ('"[::1]:9464"', ("::1", 9464)),
        ("metrics.example.net:80", ("metrics.example.net", 80)),
    ],
)
def test_metrics_listen(listen: str, address: tuple[str, int]) -> None:
    assert load_config_text(config(f"metrics: {{listen: {listen}}}\n")).metrics.listen_address() == address


def test_ipv6_address_that_looks_like_a_yaml_number() -> None:
    # YAML 1.1 reads 1:2:3:4:5:6:7:8 as a base-60 integer; the text written is what counts.
    cfg = load_config_text("host:\n  name: h\n  underlay_address: 1:2:3:4:5:6:7:8\n")
    assert cfg.host.underlay_address == IPv6Address("1:2:3:4:5:6:7:8")


def test_yaml_merge_keys() -> None:
    cfg = load_config_text(
        config(
            """\
            bgp:
              local_asn: 65000
              peers:
                - &tor {address: 192.0.2.1, asn: 65001, password: secret}
                - <<: *tor
                  address: 192.0.2.2
            """
        )
    )
    assert cfg.bgp is not None
    assert [(p.address, p.asn, p.password) for p in cfg.bgp.peers] == [
        (IPv4Address("192.0.2.1"), 65001, "secret"),
        (IPv4Address("192.0.2.2"), 65001, "secret"),
    ]


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "fabricd.yaml"
    path.write_text(HOST)
    assert load_config(path).source == path
    assert load_config(str(path)).host.name == "node1"


def test_default_config_path() -> None:
    assert Path("/etc/fabricd/fabricd.yaml") == DEFAULT_CONFIG_PATH


# --- problem formatting ------------------------------------------------------------------------


def test_problem_str() -> None:
    assert str(ConfigProblem("f.yaml", "bgp.local_asn", 4, "bad")) == "f.yaml:4: bgp.local_asn: bad"
    assert str(ConfigProblem("f.yaml", "", None, "bad")) == "f.yaml: <top level>: bad"


def test_error_lists_one_problem_per_line() -> None:
    error = ConfigError([ConfigProblem("f", "a", 1, "x"), ConfigProblem("f", "b", 2, "y")])
    assert str(error) == "f:1: a: x\nf:2: b: y"
    assert len(error.problems) == 2


# --- bad configs: the key path, line and message of each -----------------------------------------


def test_peer_asn_on_line_12() -> None:
    text = dedent(
        """\
        host:
          name: node1
          underlay_address: 192.0.2.11
        bgp:
          local_asn: 65000
          peers:
            - name: tor1
              address: 192.0.2.1
              asn: 65001
            - name: tor2
              address: 192.0.2.2
              asn: abc
        """
    )
    assert text.splitlines()[11].strip() == "asn: abc"
    problem = only_problem(text)
    assert problem == ConfigProblem(
        "test.yaml", "bgp.peers[1].asn", 12, "expected an integer 1..4294967295, got 'abc'"
    )
    assert str(problem) == "test.yaml:12: bgp.peers[1].asn: expected an integer 1..4294967295, got 'abc'"


BGP_BODY = "bgp:\n  local_asn: 65000\n  peers:\n    - address: 192.0.2.1\n      asn: 65001\n"
BGP = HOST + BGP_BODY  # bgp on lines 4-8

CASES = [
    # host
    ("host:\n  underlay_address: 192.0.2.1\n", "host.name", 2, "missing required key 'name'"),
    ("host:\n  name: node1\n", "host.underlay_address", 2, "missing required key 'underlay_address'"),
    ("host:\n  name: -node\n  underlay_address: 192.0.2.1\n", "host.name", 2, "expected a hostname"),
    ("host:\n  name: n\n  underlay_address: 192.0.2.300\n", "host.underlay_address", 3, "got '192.0.2.300'"),
    ("host:\n  name: n\n  underlay_address: 0.0.0.0\n", "host.underlay_address", 3, "0.0.0.0 is unspecified"),
    ("host:\n  name: n\n  underlay_address:\n", "host.underlay_address", 3, "a value is required"),
    (HOST + "  underlay_address6: 10.0.0.1\n", "host.underlay_address6", 4, "expected an IPv6 address"),
    (HOST + "  underlay_interface: averyverylongname\n", "host.underlay_interface", 4, "1..15 characters"),
    (HOST + "  underlay_interface: a/b\n", "host.underlay_interface", 4, "expected an interface name"),
    ("host: node1\n", "host", 1, "expected a mapping, got 'node1'"),
    # lxd
    (
        HOST + "lxd:\n  socket: run/lxd.sock\n",
        "lxd.socket",
        5,
        "expected an absolute path, got 'run/lxd.sock'",
    ),
    (
        HOST + "lxd:\n  url: http://lxd:8443\n  client_cert: /c\n  client_key: /k\n",
        "lxd.url",
        5,
        "expected a URL of the form https://host:port",
    ),
    (
        HOST + "lxd:\n  url: https://lxd\n  client_cert: /c\n  client_key: /k\n",
        "lxd.url",
        5,
        "https://host:port",
    ),
    (
        HOST + "lxd:\n  socket: /s\n  url: https://lxd:8443\n  client_cert: /c\n  client_key: /k\n",
        "lxd.url",
        6,
        "give either 'socket' or 'url', not both",
    ),
    (
        HOST + "lxd:\n  url: https://lxd:8443\n  client_key: /k\n",
        "lxd.client_cert",
        5,
        "missing required key 'client_cert' (needed with 'url')",
    ),
    (HOST + "lxd:\n  client_cert: /c\n", "lxd.client_cert", 5, "only used with 'url'"),
    (HOST + "lxd:\n  project: a b\n", "lxd.project", 5, "expected an LXD project name"),
    (HOST + "lxd:\n  resync_interval: 0\n", "lxd.resync_interval", 5, "expected a number > 0, got 0"),
    (HOST + "lxd:\n  resync_interval: .nan\n", "lxd.resync_interval", 5, "expected a number > 0"),
    (HOST + "lxd:\n  reconnect_backoff_max: true\n", "lxd.reconnect_backoff_max", 5, "got true"),
    # bgp
    (HOST + "bgp:\n  peers: [{address: 192.0.2.1, asn: 1}]\n", "bgp.local_asn", 5, "missing required key"),
    (HOST + "bgp:\n  local_asn: 65000\n", "bgp.peers", 5, "missing required key 'peers'"),
    (HOST + "bgp:\n  local_asn: 65000\n  peers: []\n", "bgp.peers", 6, "at least one peer is required"),
    (BGP.replace("65000", "0"), "bgp.local_asn", 5, "expected an integer 1..4294967295, got 0"),
    (BGP.replace("65000", "4294967296"), "bgp.local_asn", 5, "got 4294967296"),
    (BGP.replace("65000", "true"), "bgp.local_asn", 5, "got true"),
    (BGP.replace("65000", '"65000"'), "bgp.local_asn", 5, "got '65000'"),
    (BGP.replace("65000", "65000.5"), "bgp.local_asn", 5, "got 65000.5"),
    (BGP + "  router_id: 2001:db8::1\n", "bgp.router_id", 9, "expected an IPv4 address, got '2001:db8::1'"),
    (
        HOST6 + BGP_BODY,
        "bgp.router_id",
        5,
        "missing required key 'router_id' (host.underlay_address is IPv6",
    ),
    (BGP + "  hold_time: 2\n", "bgp.hold_time", 9, "expected 0 or an integer 3..65535, got 2"),
    (BGP + "  graceful_restart:\n    enabled: 'yes'\n", "bgp.graceful_restart.enabled", 10, "true or false"),
    (BGP + "  graceful_restart: {restart_time: 4096}\n", "bgp.graceful_restart.restart_time", 9, "1..4095"),
    (BGP + "      hold_time: 70000\n", "bgp.peers[0].hold_time", 9, "got 70000"),
    (BGP + "      password: ''\n", "bgp.peers[0].password", 9, "1..80 printable ASCII characters"),
    (BGP + "      families: [ipv4-multicast]\n", "bgp.peers[0].families[0]", 9, "one of: ipv4-unicast"),
    (BGP + "      families: []\n", "bgp.peers[0].families", 9, "expected a non-empty list"),
    (BGP + "      families: ipv4-unicast\n", "bgp.peers[0].families", 9, "expected a list"),
    (BGP + "      families: [ipv4-unicast, ipv4-unicast]\n", "bgp.peers[0].families", 9, "only once"),
    (BGP + "      name: tor 1\n", "bgp.peers[0].name", 9, "expected a name"),
    (BGP + "      local_address: 224.0.0.5\n", "bgp.peers[0].local_address", 9, "224.0.0.5 is multicast"),
    (
        BGP + "      local_address: 2001:db8::11\n",
        "bgp.peers[0].local_address",
        9,
        "expected an IPv4 address like the peer's 192.0.2.1, got 2001:db8::11",
    ),
    (BGP + "    - address: 192.0.2.9\n", "bgp.peers[1].asn", 9, "missing required key 'asn'"),
    (
        BGP + "    - address: 192.0.2.1\n      asn: 65002\n",
        "bgp.peers[1].address",
        9,
        "duplicate peer address '192.0.2.1'; already used by bgp.peers[0]",
    ),
    (
        BGP.replace("    - address", "    - name: tor\n      address")
        + "    - name: tor\n      address: 192.0.2.2\n      asn: 65002\n",
        "bgp.peers[1].name",
        10,
        "duplicate peer name 'tor'; already used by bgp.peers[0]",
    ),
    (HOST + "bgp:\n  local_asn: 1\n  peers: [1]\n", "bgp.peers[0]", 6, "expected a mapping, got 1"),
    # overlay
    (HOST + "overlay:\n  vni: 0\n", "overlay.vni", 5, "expected an integer 1..16777215, got 0"),
    (HOST + "overlay:\n  vni: 16777216\n", "overlay.vni", 5, "1..16777215"),
    (HOST + "overlay:\n  port: 65536\n", "overlay.port", 5, "expected an integer 1..65535"),
    (HOST + "overlay:\n  mtu: 1000\n", "overlay.mtu", 5, "1280..9000"),
    (HOST + "overlay:\n  enabled: 1\n", "overlay.enabled", 5, "expected true or false, got 1"),
    (HOST + "overlay:\n  bridge: fabric-bridge-0001\n", "overlay.bridge", 5, "interface name"),
    (HOST + "overlay:\n  peers: lxd\n", "overlay.peers", 5, "expected 'lxd-cluster' or a list of peers"),
    (HOST + "overlay:\n  peers:\n    - name: n2\n", "overlay.peers[0].address", 6, "missing required key"),
    (
        HOST + "overlay:\n  peers:\n    - address: 2001:db8::12\n",
        "overlay.peers[0].address",
        6,
        "2001:db8::12 is IPv6 but this host has no IPv6 underlay address",
    ),
    (
        HOST + "overlay:\n  peers:\n    - address: 192.0.2.12\n    - address: 192.0.2.12\n",
        "overlay.peers[1].address",
        7,
        "duplicate overlay peer address '192.0.2.12'; already used by overlay.peers[0]",
    ),
    # dhcp
    (
        HOST + "overlay: {enabled: true}\ndhcp:\n  enabled: true\n  priority: [node1]\n",
        "dhcp.server_address",
        6,
        "(needed when DHCP is enabled)",
    ),
    (HOST + "dhcp:\n  server_address: 10.200.0.1\n", "dhcp.server_address", 5, "with its prefix length"),
    (HOST + "dhcp:\n  server_address: 10.200.0.1/31\n", "dhcp.server_address", 5, "at most /30"),
    (HOST + "dhcp:\n  server_address: 10.200.0.0/24\n", "dhcp.server_address", 5, "network or broadcast"),
    (HOST + "dhcp:\n  domain: fabric_internal\n", "dhcp.domain", 5, "expected a hostname"),
    (HOST + "dhcp:\n  lease_time: 30\n", "dhcp.lease_time", 5, "expected an integer 60..2147483647, got 30"),
    (HOST + "dhcp:\n  ranges: [10.200.0.5]\n", "dhcp.ranges[0]", 5, "expected a range like"),
    (HOST + "dhcp:\n  ranges:\n    - 10.0.0.9-10.0.0.5\n", "dhcp.ranges[0]", 6, "starts (10.0.0.9) after"),
    (
        HOST + "dhcp:\n  server_address: 10.200.0.1/24\n  ranges:\n    - 10.200.1.1-10.200.1.9\n",
        "dhcp.ranges[0]",
        7,
        "10.200.1.1-10.200.1.9 is outside 10.200.0.0/24's host addresses",
    ),
    (
        HOST + "dhcp:\n  server_address: 10.200.0.1/24\n  ranges:\n    - 10.200.0.0-10.200.0.9\n",
        "dhcp.ranges[0]",
        7,
        "is outside",
    ),
    (
        HOST + "dhcp:\n  server_address: 10.200.0.1/24\n  ranges:\n    - 10.200.0.1-10.200.0.9\n",
        "dhcp.ranges[0]",
        7,
        "includes the server's own address 10.200.0.1",
    ),
    (
        HOST + "dhcp:\n  ranges:\n    - 10.0.0.1-10.0.0.9\n    - 10.0.0.9-10.0.0.20\n",
        "dhcp.ranges[1]",
        7,
        "overlaps dhcp.ranges[0]",
    ),
    (HOST + "dhcp:\n  ipv6_ra: maybe\n", "dhcp.ipv6_ra", 5, "expected true or false"),
    (HOST + "dhcp:\n  election: raft\n", "dhcp.election", 5, "one of: lxd-cluster, standalone"),
    (HOST + "dhcp:\n  probe_interval: 2\n", "dhcp.probe_interval", 5, "seconds >= 4"),
    (HOST + "dhcp:\n  silent_probes: 0\n", "dhcp.silent_probes", 5, "an integer 1..100"),
    (HOST + "dhcp:\n  priority: [a, b, a]\n", "dhcp.priority[2]", 5, "duplicate host 'a'"),
    (HOST + "dhcp:\n  server_address6: fe80::1/64\n", "dhcp.server_address6", 5, "no unicast address"),
    (HOST + "dhcp:\n  server_address6: fd00::1\n", "dhcp.server_address6", 5, "with its prefix length"),
    (
        HOST + "dhcp:\n  enabled: true\n  server_address: 10.200.0.1/24\n  priority: [node1]\n",
        "dhcp.enabled",
        5,
        "set overlay.enabled: true",
    ),
    (
        HOST + "overlay: {enabled: true}\ndhcp:\n  enabled: true\n  server_address: 10.200.0.1/24\n",
        "dhcp.priority",
        6,
        "election: standalone needs the hosts",
    ),
    (
        HOST
        + "overlay: {enabled: true, peers: [{name: node2, address: 192.0.2.12}]}\n"
        + "dhcp:\n  enabled: true\n  server_address: 10.200.0.1/24\n  priority: [node2]\n",
        "dhcp.priority",
        8,
        "this host (node1) is not in the list",
    ),
    (
        HOST
        + "overlay: {enabled: true, peers: [{name: n2, address: 192.0.2.2}]}\n"
        + "dhcp:\n  enabled: true\n  server_address: 10.200.0.1/24\n  priority: [node1, n3]\n",
        "dhcp.priority",
        8,
        "n3 is no overlay peer name",
    ),
    (
        HOST
        + "overlay: {enabled: true, peers: lxd-cluster}\n"
        + "dhcp:\n  enabled: true\n  server_address: 10.200.0.1/24\n  priority: [node1]\n",
        "dhcp.priority",
        8,
        "only used with election: standalone",
    ),
    # services
    (HOST + "services: {name: a}\n", "services", 4, "expected a list, got a mapping"),
    (
        HOST + "services:\n  - {addresses: [10.0.0.1], backends: {key: true}}\n",
        "services[0].name",
        5,
        "missing required key 'name'",
    ),
    (
        HOST + "services:\n  - {name: a.b, addresses: [10.0.0.1], backends: {key: true}}\n",
        "services[0].name",
        5,
        "expected a service name",
    ),
    (
        HOST + "services:\n  - {name: a, addresses: [nope], backends: {key: true}}\n",
        "services[0].addresses[0]",
        5,
        "expected an IP address",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses:\n      - 10.0.0.1\n      - 127.0.0.1\n"
        "    backends: {key: true}\n",
        "services[0].addresses[1]",
        8,
        "expected an address to announce (127.0.0.1 is loopback)",
    ),
    (
        HOST + "services:\n  - {name: a, addresses: [10.0.0.1, 10.0.0.1], backends: {key: true}}\n",
        "services[0].addresses",
        5,
        "each address may be listed only once",
    ),
    (
        HOST
        + "services:\n  - {name: a, addresses: [10.0.0.1], backends: {key: true}}\n"
        + "  - {name: a, addresses: [10.0.0.2], backends: {key: true}}\n",
        "services[1].name",
        6,
        "duplicate service name 'a'; already used by services[0]",
    ),
    (
        HOST
        + "services:\n  - {name: a, addresses: [10.0.0.1], backends: {key: true}}\n"
        + "  - name: b\n    addresses: [10.0.0.2, 10.0.0.1]\n    backends: {key: true}\n",
        "services[1].addresses[1]",
        7,
        "address 10.0.0.1 is already used by services[0]",
    ),
    (
        HOST + "services:\n  - {name: a, addresses: [10.0.0.1]}\n",
        "services[0].backends",
        5,
        "missing required key 'backends'",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {project: p}\n",
        "services[0].backends",
        7,
        "choose the backends: instances (names), pattern (a glob) or key: true",
    ),
    (
        HOST + "services:\n  - {name: a, addresses: [10.0.0.1], backends: {instances: [web_1]}}\n",
        "services[0].backends.instances[0]",
        5,
        "expected an LXD instance name",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check:\n      type: icmp\n",
        "services[0].check.type",
        9,
        "expected one of: tcp, udp, dns, http, https, exec, got 'icmp'",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check:\n      type: tcp\n",
        "services[0].check.port",
        9,
        "missing required key 'port' (needed for a tcp check)",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check:\n      type: udp\n      port: 7\n",
        "services[0].check.send",
        9,
        "missing required key 'send' (needed for a udp check)",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check:\n      type: dns\n",
        "services[0].check.query",
        9,
        "(needed for a dns check)",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check:\n      type: exec\n",
        "services[0].check.command",
        9,
        "(needed for an exec check)",
    ),
    (
        SERVICE + "check: {type: exec, command: [x], port: 1}}\n",
        "services[0].check.port",
        5,
        "not used by an exec check (only by tcp, udp, dns, http, https)",
    ),
    (
        SERVICE + "check: {type: tcp, port: 1, path: /x}}\n",
        "services[0].check.path",
        5,
        "not used by a tcp check (only by http, https)",
    ),
    (
        SERVICE + "check: {type: http, query: x}}\n",
        "services[0].check.query",
        5,
        "not used by an http check (only by dns)",
    ),
    (
        SERVICE + "check: {type: http, port: 1, path: x}}\n",
        "services[0].check.path",
        5,
        "starting with '/'",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check: {type: tcp, port: 1, interval: -1}\n",
        "services[0].check.interval",
        8,
        "expected a number > 0, got -1",
    ),
    (
        HOST + "services:\n  - name: a\n    addresses: [10.0.0.1]\n    backends: {key: true}\n"
        "    check:\n      type: tcp\n      port: 1\n      interval: 1\n      timeout: 2\n",
        "services[0].check.timeout",
        12,
        "must not exceed interval (1 s)",
    ),
    (
        SERVICE + "check: {type: tcp, port: 1, rise: 0}}\n",
        "services[0].check.rise",
        5,
        "1..100",
    ),
    (
        SERVICE + "on_failure: degrade}\n",
        "services[0].on_failure",
        5,
        "degrade needs degraded_med or degraded_communities",
    ),
    (
        HOST + "services:\n  - {name: a, addresses: [10.0.0.1], backends: {key: true}, degraded_med: 500}\n",
        "services[0].degraded_med",
        5,
        "only used with on_failure: degrade",
    ),
    (
        SERVICE + "on_failure: degrade, med: 10, degraded_med: 5}\n",
        "services[0].degraded_med",
        5,
        "degraded_med (5) must be greater than med (10)",
    ),
    (
        HOST + "services:\n  - {name: a, addresses: [10.0.0.1], backends: {key: true}, med: 4294967295}\n",
        "services[0].med",
        5,
        "drain_med (4294967294) must be greater than med (4294967295)",
    ),
    (
        SERVICE + "flap: {limit: 1.5}}\n",
        "services[0].flap.limit",
        5,
        "expected an integer 0..1000, got 1.5",
    ),
    (
        SERVICE + "flap: {window: 0}}\n",
        "services[0].flap.window",
        5,
        "expected a number > 0, got 0",
    ),
    # routes
    (
        HOST + "routes:\n  allowed_ranges:\n    - 10.0.0.0/8\n    - 10.1.2.3/24\n",
        "routes.allowed_ranges[1]",
        7,
        "10.1.2.3/24 has host bits set; did you mean 10.1.2.0/24?",
    ),
    (
        HOST + "routes:\n  allowed_ranges: ['2001:db8::1/32']\n",
        "routes.allowed_ranges[0]",
        5,
        "did you mean 2001:db8::/32?",
    ),
    (HOST + "routes:\n  allowed_ranges: [10.0.0.0]\n", "routes.allowed_ranges[0]", 5, "expected a prefix"),
    (HOST + "routes:\n  allowed_ranges: 10.0.0.0/8\n", "routes.allowed_ranges", 5, "expected a list"),
    (HOST + "routes:\n  max_prefix_length_v4: 33\n", "routes.max_prefix_length_v4", 5, "0..32"),
    (HOST + "routes:\n  max_prefix_length_v6: 129\n", "routes.max_prefix_length_v6", 5, "0..128"),
    (
        HOST + "routes:\n  min_prefix_length_v4: 24\n  max_prefix_length_v4: 16\n",
        "routes.min_prefix_length_v4",
        5,
        "24 is above max_prefix_length_v4 (16)",
    ),
    (HOST + "routes:\n  min_prefix_length_v6: 129\n", "routes.min_prefix_length_v6", 5, "0..128"),
    (HOST + "routes:\n  max_prefixes: 0\n", "routes.max_prefixes", 5, "got 0"),
    (
        HOST + "routes:\n  announce_instance_addresses: 'no'\n",
        "routes.announce_instance_addresses",
        5,
        "got 'no'",
    ),
    # control, metrics, logging, reconcile
    (HOST + "control:\n  mode: '0999'\n", "control.mode", 5, "permission mode in octal"),
    (HOST + "control:\n  mode: '1777'\n", "control.mode", 5, "permission mode in octal"),
    (HOST + "control:\n  socket: fabricd.sock\n", "control.socket", 5, "absolute path"),
    (HOST + "control:\n  group: 1000\n", "control.group", 5, "expected a group name, got 1000"),
    (HOST + "metrics:\n  listen: 9464\n", "metrics.listen", 5, "'host:port' or '[IPv6 address]:port'"),
    (HOST + "metrics:\n  listen: localhost:0\n", "metrics.listen", 5, "host:port"),
    (HOST + "metrics:\n  listen: '[10.0.0.1]:80'\n", "metrics.listen", 5, "host:port"),
    (HOST + "metrics:\n  listen: 10.0.0.300:80\n", "metrics.listen", 5, "host:port"),
    (HOST + "logging:\n  level: verbose\n", "logging.level", 5, "one of: debug, info, warning, error"),
    (HOST + "logging:\n  format: xml\n", "logging.format", 5, "one of: auto, json, console, got 'xml'"),
    (HOST + "reconcile:\n  interval: 0\n", "reconcile.interval", 5, "expected a number > 0, got 0"),
    (HOST + "reconcile:\n  interval: fast\n", "reconcile.interval", 5, "got 'fast'"),
    # structure
    ("lxd: {}\n", "host", 1, "missing required key 'host'"),
    (HOST + "bgpp: {}\n", "bgpp", 4, "unknown key 'bgpp'; expected one of: host, lxd, bgp,"),
    (HOST + "zzz: 1\n", "zzz", 4, "unknown key 'zzz'"),
    (HOST + "host: {}\n", "host", 4, "duplicate key 'host' (first given on line 1)"),
    ("- host\n", "", 1, "expected a mapping, got a list"),
    (HOST + "? [a]\n: 1\n", "", 4, "keys must be plain strings"),
    ("host:\n  name: !vault n\n  underlay_address: 192.0.2.1\n", "host.name", 2, "tagged !vault"),
]


@pytest.mark.parametrize(
    ("text", "key_path", "line", "message"),
    CASES,
    ids=[f"{case[1] or 'top'}-{i}" for i, case in enumerate(CASES)],
)
def test_bad_value(text: str, key_path: str, line: int, message: str) -> None:
    assert_problem(text, key_path, line, message)


def test_unknown_key_suggests_the_close_one() -> None:
    problem = only_problem(
        HOST + "bgp:\n  local_asn: 1\n  peer: []\n  peers: [{address: 10.0.0.1, asn: 2}]\n"
    )
    assert (problem.key_path, problem.line) == ("bgp.peer", 6)
    assert problem.message.endswith("(did you mean 'peers'?)")
    assert "did you mean" not in only_problem(HOST + "zzz: 1\n").message


def test_password_is_not_echoed() -> None:
    problem = only_problem(BGP + "      password: " + "s3cret" * 20 + "\n")
    assert "s3cret" not in str(problem)


def test_every_problem_is_reported_in_file_order() -> None:
    text = dedent(
        """\
        host:
          name: node1
          underlay_address: 192.0.2.11
        reconcile: {interval: -1}
        overlay:
          vni: 0
          bridge: this-name-is-too-long
        logging: {level: loud}
        """
    )
    found = [(p.key_path, p.line) for p in problems(text)]
    assert found == [
        ("reconcile.interval", 4),
        ("overlay.vni", 6),
        ("overlay.bridge", 7),
        ("logging.level", 8),
    ]


def test_broken_host_does_not_cascade() -> None:
    # With the host address unreadable, nothing can be said about the router ID or peer families.
    host = "host:\n  name: n\n  underlay_address: nope\n"
    text = host + BGP_BODY + "overlay:\n  peers: [{address: '2001:db8::2'}]\n"
    assert [p.key_path for p in problems(text)] == ["host.underlay_address"]


def test_merged_keys_are_checked_and_explicit_keys_win() -> None:
    text = config(
        """\
        bgp:
          local_asn: 65000
          peers:
            - &tor {address: 192.0.2.1, asn: 65001, colour: red}
            - <<: *tor
              address: 192.0.2.2
        """
    )
    # The unknown key is reported for both peers that carry it; the repeated address is not.
    assert [(p.key_path, p.line) for p in problems(text)] == [
        ("bgp.peers[0].colour", 7),
        ("bgp.peers[1].colour", 7),
    ]


def test_merge_of_a_scalar_is_reported() -> None:
    assert_problem(config("lxd:\n  <<: 5\n"), "lxd", 5, "expected a mapping (or list of mappings) to merge")


def test_yaml_syntax_error_gives_its_line() -> None:
    text = HOST + "bgp:\n  local_asn: 1\n   peers: []\n"
    problem = only_problem(text)
    assert (problem.key_path, problem.line) == ("", 6)
    assert problem.message.startswith("invalid YAML: ")
    assert str(problem).startswith("test.yaml:6: <top level>: invalid YAML")


def test_unclosed_flow_sequence() -> None:
    problem = only_problem("host: [a\n")
    assert problem.line == 2
    assert "invalid YAML" in problem.message


def test_control_character_gives_its_line() -> None:
    problem = only_problem(HOST + "logging: {level: \x07}\n")
    assert problem.line == 4
    assert "invalid YAML" in problem.message


def test_several_documents_are_rejected() -> None:
    problem = only_problem(HOST + "---\n" + HOST)
    assert problem.line == 4
    assert "single document" in problem.message


def test_empty_file() -> None:
    problem = only_problem("# only a comment\n")
    assert (problem.key_path, problem.line) == ("", None)
    assert "empty" in problem.message


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    (problem,) = info.value.problems
    assert (problem.file, problem.key_path, problem.line) == (str(missing), "", None)
    assert "cannot read the file" in problem.message
    assert str(problem).startswith(f"{missing}: <top level>: cannot read the file")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HOST.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid UTF-8" in str(info.value)


def test_problems_in_a_file_name_it(tmp_path: Path) -> None:
    path = tmp_path / "fabricd.yaml"
    path.write_text(HOST + "overlay: {vni: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:4: overlay.vni: expected an integer 1..16777215, got 0"


def test_error_survives_pickling() -> None:
    import pickle

    error = ConfigError([ConfigProblem("f", "a", 1, "x")])
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert copy.problems == error.problems


def test_daemon_state_dir_defaults_to_run_and_must_be_absolute() -> None:
    assert load_config_text(HOST).daemon.state_dir == Path("/run/fabricd")
    assert load_config_text(HOST + "daemon:\n  state_dir: /var/lib/fabricd\n").daemon.state_dir == Path(
        "/var/lib/fabricd"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(HOST + "daemon:\n  state_dir: run/fabricd\n", "f.yaml")
    (problem,) = caught.value.problems
    assert problem.key_path == "daemon.state_dir" and problem.line == 5 and "absolute path" in problem.message


def test_ovn_uplinks_take_unusable_next_hop_and_an_optional_mode() -> None:
    cfg = load_config_text(
        HOST + "routes:\n  ovn_uplinks:\n    - {uplink: LOCAL, unusable_next_hop: withhold}\n"
        "    - {uplink: ROUTED, mode: active-chassis}\n"
    )
    assert cfg.routes.unusable_next_hop("LOCAL") == "withhold"
    assert cfg.routes.unusable_next_hop("ROUTED") == cfg.routes.unusable_next_hop("other") == "self"
    assert cfg.routes.ovn_mode("LOCAL") == "all-members" and cfg.routes.ovn_mode("ROUTED") == "active-chassis"
    with pytest.raises(ConfigError) as caught:
        load_config_text(HOST + "routes:\n  ovn_uplinks: [{uplink: U, unusable_next_hop: drop}]\n", "f.yaml")
    (problem,) = caught.value.problems
    assert problem.key_path == "routes.ovn_uplinks[0].unusable_next_hop" and "withhold" in problem.message
