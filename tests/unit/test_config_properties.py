"""Property tests: generated valid configs load as written; one corrupted value is pinpointed.

Configs are generated as plain data and written out by a small block-style YAML writer that
records the line of every key, so the expected line of a problem comes from the writer, not from
the YAML library the loader itself uses.
"""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config import ConfigError, FabricConfig, load_config_text

Data = dict[str, Any]
FAST = settings(max_examples=100, deadline=None)

# --- a YAML writer that knows where it put everything --------------------------------------------


class Flow:
    """A mapping written inline, so it sits on its key's line like any other bad value."""

    def __init__(self, value: Data) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Flow({self.value!r})"


def _scalar(value: object) -> str:
    if isinstance(value, Flow):
        return json.dumps(value.value)
    if isinstance(value, float):  # YAML 1.1 needs a '.' in floats ("1.0e-05", not "1e-05")
        return yaml.safe_dump(value).splitlines()[0]
    return json.dumps(value)  # JSON is YAML flow syntax; strings come out double-quoted


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.line_of: dict[str, int] = {}

    def _add(self, text: str, path: str) -> None:
        self.lines.append(text)
        self.line_of[path] = len(self.lines)

    def mapping(self, data: Data, indent: int = 0, path: str = "", bullet: bool = False) -> None:
        for n, (key, value) in enumerate(data.items()):
            pad = " " * (indent - 2) + "- " if bullet and n == 0 else " " * indent
            here = f"{path}.{key}" if path else key
            if isinstance(value, dict) and value:
                self._add(f"{pad}{key}:", here)
                self.mapping(value, indent + 2, here)
            elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
                self._add(f"{pad}{key}:", here)
                for i, item in enumerate(value):
                    self.line_of[f"{here}[{i}]"] = len(self.lines) + 1
                    self.mapping(item, indent + 4, f"{here}[{i}]", bullet=True)
            else:  # scalars and lists of scalars, on one line
                text = (
                    "[" + ", ".join(map(_scalar, value)) + "]" if isinstance(value, list) else _scalar(value)
                )
                self._add(f"{pad}{key}: {text}", here)
                for i in range(len(value) if isinstance(value, list) else 0):
                    self.line_of[f"{here}[{i}]"] = len(self.lines)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def write(data: Data) -> Writer:
    writer = Writer()
    writer.mapping(data)
    return writer


# --- strategies for valid configs ----------------------------------------------------------------

labels = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
asns = st.integers(1, 2**32 - 1)
hold_times = st.one_of(st.just(0), st.integers(3, 65535))
positive = st.one_of(st.integers(1, 10**6), st.floats(min_value=1e-3, max_value=1e6))
printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=80)
FAMILY = {4: "ipv4-unicast", 6: "ipv6-unicast"}


def unicast(version: int) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    addresses = st.ip_addresses(v=4 if version == 4 else 6)
    return addresses.filter(lambda a: not (a.is_unspecified or a.is_multicast))


any_unicast = st.one_of(unicast(4), unicast(6))


def maybe(draw: st.DrawFn, target: Data, key: str, strategy: st.SearchStrategy[Any]) -> None:
    """Set target[key] half the time, so defaults get exercised too."""
    if draw(st.booleans()):
        target[key] = draw(strategy)


@st.composite
def host_sections(draw: st.DrawFn) -> Data:
    host: Data = {"name": draw(labels), "underlay_address": str(draw(any_unicast))}
    maybe(draw, host, "underlay_address6", unicast(6).map(str))
    maybe(draw, host, "underlay_interface", st.from_regex(r"[a-z][a-z0-9.]{0,14}", fullmatch=True))
    return host


@st.composite
def lxd_sections(draw: st.DrawFn) -> Data:
    lxd: Data = {}
    if draw(st.booleans()):
        lxd["url"] = f"https://{draw(labels)}.example:{draw(st.integers(1, 65535))}"
        lxd["client_cert"] = "/etc/fabricd/client.crt"
        lxd["client_key"] = "/etc/fabricd/client.key"
        maybe(draw, lxd, "server_cert", st.just("/etc/fabricd/server.crt"))
    else:
        maybe(draw, lxd, "socket", labels.map(lambda name: f"/run/{name}/unix.socket"))
    maybe(draw, lxd, "project", st.one_of(st.just("*"), labels))
    maybe(draw, lxd, "resync_interval", positive)
    maybe(draw, lxd, "reconnect_backoff_max", positive)
    return lxd


@st.composite
def bgp_peers(draw: st.DrawFn) -> list[Data]:
    addresses = draw(st.lists(any_unicast, min_size=1, max_size=4, unique=True))
    names = draw(st.lists(labels, min_size=len(addresses), max_size=len(addresses), unique=True))
    peers = []
    for address, name in zip(addresses, names, strict=True):
        peer: Data = {"address": str(address), "asn": draw(asns)}
        maybe(draw, peer, "name", st.just(name))
        maybe(draw, peer, "password", printable)
        maybe(draw, peer, "hold_time", hold_times)
        maybe(
            draw, peer, "families", st.lists(st.sampled_from(list(FAMILY.values())), min_size=1, unique=True)
        )
        maybe(draw, peer, "local_address", unicast(address.version).map(str))
        peers.append(peer)
    return peers


@st.composite
def bgp_sections(draw: st.DrawFn, host: Data) -> Data:
    bgp: Data = {"local_asn": draw(asns)}
    if ip_address(host["underlay_address"]).version == 6 or draw(st.booleans()):
        bgp["router_id"] = str(draw(unicast(4)))
    maybe(draw, bgp, "hold_time", hold_times)
    maybe(
        draw,
        bgp,
        "graceful_restart",
        st.fixed_dictionaries({}, optional={"enabled": st.booleans(), "restart_time": st.integers(1, 4095)}),
    )
    bgp["peers"] = draw(bgp_peers())
    return bgp


@st.composite
def overlay_sections(draw: st.DrawFn, host: Data) -> Data:
    overlay: Data = {}
    maybe(draw, overlay, "enabled", st.booleans())
    maybe(draw, overlay, "bridge", st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True))
    maybe(draw, overlay, "vni", st.integers(1, 2**24 - 1))
    maybe(draw, overlay, "port", st.integers(1, 65535))
    maybe(draw, overlay, "mtu", st.integers(1280, 9000))
    if draw(st.booleans()):
        overlay["peers"] = "lxd-cluster"
    else:
        versions = {ip_address(host["underlay_address"]).version} | (
            {6} if "underlay_address6" in host else set()
        )
        addresses = draw(st.lists(st.one_of(*(unicast(v) for v in versions)), max_size=4, unique=True))
        names = draw(st.lists(labels, min_size=len(addresses), max_size=len(addresses), unique=True))
        peers: list[Data] = [{"address": str(address)} for address in addresses]
        for peer, name in zip(peers, names, strict=True):
            maybe(draw, peer, "name", st.just(name))
        write_empty = draw(st.booleans())  # an explicit `peers: []`, sometimes
        if peers or write_empty:
            overlay["peers"] = peers
    return overlay


@st.composite
def dhcp_sections(draw: st.DrawFn) -> Data:
    prefix = draw(st.integers(16, 28))
    network = ip_network(f"10.{draw(st.integers(0, 255))}.0.0/{prefix}", strict=False)
    server = network.network_address + 1
    dhcp: Data = {"enabled": draw(st.booleans()), "server_address": f"{server}/{prefix}"}
    last = network.num_addresses - 2  # offset of the last host address
    bounds = draw(st.lists(st.integers(2, last), min_size=0, max_size=4, unique=True).map(sorted))
    # Consecutive pairs of sorted, distinct offsets never overlap.
    dhcp["ranges"] = [
        f"{network.network_address + a}-{network.network_address + b}"
        for a, b in zip(bounds[::2], bounds[1::2], strict=False)
    ]
    maybe(draw, dhcp, "domain", st.lists(labels, min_size=1, max_size=3).map(".".join))
    maybe(draw, dhcp, "lease_time", st.integers(60, 2**31 - 1))
    maybe(draw, dhcp, "ipv6_ra", st.booleans())
    return dhcp


@st.composite
def checks(draw: st.DrawFn) -> Data:
    kind = draw(st.sampled_from(["tcp", "udp", "dns", "http", "https", "exec"]))
    check: Data = {"type": kind}
    if kind == "exec":
        check["command"] = draw(
            st.lists(labels, min_size=1, max_size=3).map(lambda a: ["/usr/bin/" + a[0], *a[1:]])
        )
    elif kind in ("tcp", "udp"):
        check["port"] = draw(st.integers(1, 65535))
    else:
        maybe(draw, check, "port", st.integers(1, 65535))
    if kind == "udp":
        check["send"] = draw(printable)
        maybe(draw, check, "expect", printable)
    if kind == "dns":
        check["query"] = draw(st.lists(labels, min_size=1, max_size=3).map(".".join))
        maybe(draw, check, "query_type", st.sampled_from(["A", "AAAA", "SOA", "TXT"]))
        maybe(draw, check, "rcode", st.sampled_from(["NOERROR", "NXDOMAIN", "REFUSED"]))
        maybe(draw, check, "answer", st.booleans())
    if kind in ("http", "https"):
        maybe(draw, check, "path", labels.map(lambda name: "/" + name))
        maybe(draw, check, "status", st.lists(st.integers(100, 599), min_size=1, max_size=3))
    maybe(draw, check, "interval", positive)
    # The timeout may not exceed the interval (default 1 s).
    share = st.floats(min_value=0.01, max_value=1.0)
    maybe(draw, check, "timeout", share.map(lambda f: f * check.get("interval", 1.0)))
    maybe(draw, check, "rise", st.integers(1, 100))
    maybe(draw, check, "fall", st.integers(1, 100))
    return check


def announceable(address: IPv4Address | IPv6Address) -> bool:
    if address.is_loopback or address.is_link_local:
        return False
    if isinstance(address, IPv4Address):
        return not (address.is_reserved or address.packed[0] == 0)
    return address.ipv4_mapped is None


@st.composite
def backend_selectors(draw: st.DrawFn) -> Data:
    backends: Data = {}
    maybe(draw, backends, "project", labels)
    maybe(draw, backends, "network", labels)
    chosen = draw(st.sets(st.sampled_from(["instances", "pattern", "key"]), min_size=1))
    if "instances" in chosen:
        backends["instances"] = draw(st.lists(labels, min_size=1, max_size=3, unique=True))
    if "pattern" in chosen:
        backends["pattern"] = draw(labels.map(lambda name: name + "-*"))
    if "key" in chosen:
        backends["key"] = True
    return backends


@st.composite
def flaps(draw: st.DrawFn) -> Data:
    flap: Data = {}
    maybe(draw, flap, "limit", st.integers(0, 1000))
    maybe(draw, flap, "window", positive)
    maybe(draw, flap, "hold_down", st.one_of(st.just(0), positive))
    return flap


@st.composite
def service_lists(draw: st.DrawFn) -> list[Data]:
    names = draw(st.lists(labels, max_size=3, unique=True))
    pool = draw(st.lists(any_unicast.filter(announceable), min_size=3 * len(names), max_size=3 * len(names),
                         unique=True))  # fmt: skip
    services = []
    for n, name in enumerate(names):
        count = draw(st.integers(1, 3))
        service: Data = {"name": name, "addresses": [str(a) for a in pool[3 * n : 3 * n + count]]}
        service["backends"] = draw(backend_selectors())
        maybe(draw, service, "check", checks())
        maybe(draw, service, "med", st.integers(0, 2**31))
        maybe(
            draw, service, "communities", st.lists(st.sampled_from(["65000:1", "65000:2", "0:0"]), max_size=2)
        )
        med = service.get("med", -1)
        if draw(st.booleans()):
            service["on_failure"] = "degrade"
            service["degraded_med"] = draw(st.integers(med + 1, 2**32 - 1))
            maybe(
                draw, service, "degraded_communities", st.lists(st.just("65000:666"), min_size=1, max_size=1)
            )
        maybe(draw, service, "drain_delay", st.one_of(st.just(0), positive))
        maybe(draw, service, "drain_med", st.integers(med + 1, 2**32 - 1))
        maybe(draw, service, "flap", flaps())
        services.append(service)
    return services


@st.composite
def networks(draw: st.DrawFn) -> str:
    address = draw(any_unicast)
    length = draw(st.integers(0, 32 if address.version == 4 else 128))
    return str(ip_network(f"{address}/{length}", strict=False))


@st.composite
def routes_sections(draw: st.DrawFn) -> Data:
    routes: Data = {}
    maybe(draw, routes, "allowed_ranges", st.lists(networks(), max_size=4))
    for family, top in (("v4", 32), ("v6", 128)):
        low, high = sorted(draw(st.lists(st.integers(0, top), min_size=2, max_size=2)))
        maybe(draw, routes, f"min_prefix_length_{family}", st.just(low))
        maybe(draw, routes, f"max_prefix_length_{family}", st.just(high))
    # A lone min or max must also respect the default on the other side.
    for family, default_min, default_max in (("v4", 8, 32), ("v6", 16, 128)):
        if routes.get(f"min_prefix_length_{family}", default_min) > routes.get(
            f"max_prefix_length_{family}", default_max
        ):
            routes.pop(f"min_prefix_length_{family}", None)
            routes.pop(f"max_prefix_length_{family}", None)
    maybe(draw, routes, "max_prefixes", st.integers(1, 2**31 - 1))
    maybe(draw, routes, "announce_instance_addresses", st.booleans())
    return routes


@st.composite
def small_sections(draw: st.DrawFn) -> Data:
    """control, metrics, logging and reconcile."""
    control: Data = {}
    maybe(draw, control, "socket", labels.map(lambda name: f"/run/{name}.sock"))
    maybe(draw, control, "mode", st.integers(0, 0o777).map(lambda mode: f"0{mode:03o}"))
    maybe(draw, control, "group", labels)
    listen_hosts = st.sampled_from(["127.0.0.1", "0.0.0.0", "[::1]", "[::]", "localhost"])  # noqa: S104
    listen = st.tuples(listen_hosts, st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}")
    sections: Data = {
        "control": control,
        "metrics": draw(st.fixed_dictionaries({}, optional={"listen": listen})),
        "logging": draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "level": st.sampled_from(["debug", "info", "warning", "error"]),
                    "format": st.sampled_from(["auto", "json", "console"]),
                },
            )
        ),
        "reconcile": draw(st.fixed_dictionaries({}, optional={"interval": positive})),
    }
    return {key: value for key, value in sections.items() if value or draw(st.booleans())}


@st.composite
def configs(draw: st.DrawFn) -> Data:
    host = draw(host_sections())
    data: Data = {"host": host}
    maybe(draw, data, "lxd", lxd_sections())
    maybe(draw, data, "bgp", bgp_sections(host))
    maybe(draw, data, "overlay", overlay_sections(host))
    maybe(draw, data, "dhcp", dhcp_sections())
    if data.get("dhcp", {}).get("enabled"):
        # The authority serves the overlay; standalone election needs this host in its list.
        overlay = data.setdefault("overlay", {})
        overlay["enabled"] = True
        if overlay.get("peers") != "lxd-cluster":
            data["dhcp"]["priority"] = [host["name"]]
    maybe(draw, data, "services", service_lists())
    maybe(draw, data, "routes", routes_sections())
    data.update(draw(small_sections()))
    return data


# --- the model reflects the data ----------------------------------------------------------------


def addr(text: str) -> IPv4Address | IPv6Address:
    return ip_address(text)


def check_reflects(cfg: FabricConfig, data: Data) -> None:
    host = data["host"]
    assert cfg.host.name == host["name"]
    assert cfg.host.underlay_address == addr(host["underlay_address"])
    assert cfg.host.underlay_address6 == (
        addr(host["underlay_address6"]) if "underlay_address6" in host else None
    )
    assert cfg.host.underlay_interface == host.get("underlay_interface")

    lxd = data.get("lxd", {})
    assert cfg.lxd.url == lxd.get("url")
    expected_socket = None if "url" in lxd else lxd.get("socket", "/var/lib/lxd/unix.socket")
    assert cfg.lxd.socket == (None if expected_socket is None else Path(expected_socket))
    assert cfg.lxd.project == lxd.get("project", "default")
    assert cfg.lxd.resync_interval == lxd.get("resync_interval", 300)

    check_bgp(cfg, data)
    check_overlay(cfg, data.get("overlay", {}))

    dhcp = data.get("dhcp")
    if dhcp is not None:
        assert cfg.dhcp.enabled == dhcp["enabled"]
        assert cfg.dhcp.server_address == ip_interface(dhcp["server_address"])
        assert [f"{a}-{b}" for a, b in cfg.dhcp.ranges] == dhcp["ranges"]
        assert cfg.dhcp.domain == dhcp.get("domain", "fabric.internal")
        assert cfg.dhcp.lease_time == dhcp.get("lease_time", 3600)
        cluster = data.get("overlay", {}).get("peers") == "lxd-cluster"
        assert cfg.dhcp.election == ("lxd-cluster" if cluster else "standalone")
        assert cfg.dhcp.priority == tuple(dhcp.get("priority", ()))
        assert cfg.dhcp.ipv6_ra == dhcp.get("ipv6_ra", False)

    check_services(cfg, data.get("services", []))

    routes = data.get("routes", {})
    assert cfg.routes.allowed_ranges == tuple(ip_network(n) for n in routes.get("allowed_ranges", []))
    assert cfg.routes.min_prefix_length_v4 == routes.get("min_prefix_length_v4", 8)
    assert cfg.routes.max_prefix_length_v6 == routes.get("max_prefix_length_v6", 128)
    assert cfg.routes.max_prefixes == routes.get("max_prefixes", 100000)
    assert cfg.routes.announce_instance_addresses == routes.get("announce_instance_addresses", False)

    control = data.get("control", {})
    assert cfg.control.mode == int(control.get("mode", "0660"), 8)
    assert cfg.control.group == control.get("group")
    assert cfg.metrics.listen == data.get("metrics", {}).get("listen")
    assert cfg.logging.level == data.get("logging", {}).get("level", "info")
    assert cfg.reconcile.interval == data.get("reconcile", {}).get("interval", 30.0)


def check_services(cfg: FabricConfig, services: list[Data]) -> None:
    assert [(s.name, s.addresses) for s in cfg.services] == [
        (s["name"], tuple(addr(a) for a in s["addresses"])) for s in services
    ]
    for service, spec in zip(cfg.services, services, strict=True):
        backends = spec["backends"]
        assert service.backends.project == backends.get("project", "default")
        assert service.backends.instances == tuple(backends.get("instances", ()))
        assert service.backends.pattern == backends.get("pattern")
        assert service.backends.key == backends.get("key", False)
        assert service.backends.network == backends.get("network")
        assert service.on_failure == spec.get("on_failure", "withdraw")
        assert service.med == spec.get("med")
        assert service.communities == (
            tuple(dict.fromkeys(spec["communities"])) if "communities" in spec else None
        )
        assert service.degraded_med == spec.get("degraded_med")
        assert service.drain_delay == spec.get("drain_delay", 10)
        assert service.drain_med == spec.get("drain_med", 4294967294)
        flap = spec.get("flap", {})
        assert service.flap.limit == flap.get("limit", 3)
        assert (service.flap.window, service.flap.hold_down) == (
            flap.get("window", 60),
            flap.get("hold_down", 120),
        )
        check = spec.get("check")
        assert (service.check is None) == (check is None)
        if service.check is None or check is None:
            continue
        kind = check["type"]
        assert service.check.type == kind
        assert service.check.port == check.get("port", {"dns": 53, "http": 80, "https": 443}.get(kind))
        assert service.check.interval == check.get("interval", 1.0)
        assert service.check.timeout == check.get("timeout", min(0.5, check.get("interval", 1.0)))
        assert (service.check.rise, service.check.fall) == (check.get("rise", 2), check.get("fall", 2))
        assert service.check.command == (tuple(check["command"]) if "command" in check else None)
        assert (service.check.send, service.check.expect) == (check.get("send"), check.get("expect"))
        assert service.check.query == check.get("query")
        rcode = check.get("rcode", "NOERROR")
        assert service.check.rcode == rcode
        assert service.check.answer == check.get("answer", rcode == "NOERROR")
        assert service.check.path == check.get("path", "/")
        assert service.check.status == tuple(dict.fromkeys(check.get("status", [200])))


def check_bgp(cfg: FabricConfig, data: Data) -> None:
    bgp = data.get("bgp")
    if bgp is None:
        assert cfg.bgp is None
        return
    assert cfg.bgp is not None
    assert cfg.bgp.local_asn == bgp["local_asn"]
    assert cfg.bgp.router_id == addr(bgp.get("router_id", data["host"]["underlay_address"]))
    assert cfg.bgp.hold_time == bgp.get("hold_time", 9)
    assert cfg.bgp.graceful_restart.enabled == bgp.get("graceful_restart", {}).get("enabled", False)
    assert len(cfg.bgp.peers) == len(bgp["peers"])
    for peer, spec in zip(cfg.bgp.peers, bgp["peers"], strict=True):
        address = addr(spec["address"])
        assert peer.address == address
        assert peer.name == spec.get("name", str(address))
        assert peer.asn == spec["asn"]
        assert peer.password == spec.get("password")
        assert peer.hold_time == spec.get("hold_time")
        assert peer.families == tuple(spec.get("families", [FAMILY[address.version]]))
        assert peer.local_address == (addr(spec["local_address"]) if "local_address" in spec else None)


def check_overlay(cfg: FabricConfig, overlay: Data) -> None:
    assert cfg.overlay.enabled == overlay.get("enabled", False)
    assert cfg.overlay.vni == overlay.get("vni", 100)
    assert cfg.overlay.mtu == overlay.get("mtu")
    peers = overlay.get("peers", [])
    if isinstance(peers, str):
        assert cfg.overlay.peers == peers
    else:
        assert isinstance(cfg.overlay.peers, tuple)
        assert [(p.name, p.address) for p in cfg.overlay.peers] == [
            (p.get("name", p["address"]), addr(p["address"])) for p in peers
        ]


@FAST
@given(configs())
def test_generated_configs_load_as_written(data: Data) -> None:
    check_reflects(load_config_text(write(data).text()), data)


@FAST
@given(configs())
def test_plain_yaml_reads_the_same_as_quoted(data: Data) -> None:
    # yaml.safe_dump leaves most scalars plain (addresses, names), exercising the text-as-written rule.
    assert load_config_text(yaml.safe_dump(data, sort_keys=False)) == load_config_text(write(data).text())


# --- one corrupted value is reported at its key path and line ----------------------------------

ANY4 = "0.0.0.0"  # noqa: S104 - only ever a value to reject
NOT_A_NAME = ["-x", "a b", ""]
NOT_AN_IP = ["nope", "300.1.2.3", ANY4, "ff02::1", True, ["10.0.0.1"]]
NOT_POSITIVE = [0, -1, "fast", False, -0.5]
# Bad values per key path ("[*]" is any list index). Each is invalid whatever the rest of the config.
INVALID: dict[str, list[Any]] = {
    "host.name": ["-host", "a_b", "x" * 64, Flow({"a": 1})],
    "host.underlay_address": NOT_AN_IP,
    "host.underlay_address6": ["192.0.2.1", "nope", "::"],
    "host.underlay_interface": ["x" * 16, "a/b", "a:b", "."],
    "lxd.socket": ["relative/unix.socket", 5],
    "lxd.url": ["http://lxd:8443", "https://lxd", "https://lxd:8443/path", "lxd:8443"],
    "lxd.client_cert": ["client.crt"],
    "lxd.client_key": ["client.key"],
    "lxd.server_cert": ["server.crt"],
    "lxd.project": ["a b", "", "a/b"],
    "lxd.resync_interval": NOT_POSITIVE,
    "lxd.reconnect_backoff_max": NOT_POSITIVE,
    "bgp.local_asn": [0, 2**32, "abc", "65000", True, 1.5, [1]],
    "bgp.router_id": ["2001:db8::1", ANY4, "nope"],
    "bgp.hold_time": [1, 2, 65536, -1, "9"],
    "bgp.graceful_restart.enabled": ["yes", 1],
    "bgp.graceful_restart.restart_time": [0, 4096],
    "bgp.peers[*].name": NOT_A_NAME,
    "bgp.peers[*].address": NOT_AN_IP,
    "bgp.peers[*].asn": [0, 2**32, "abc", False],
    "bgp.peers[*].password": ["", "x" * 81, "tab\there", "caf\u00e9"],
    "bgp.peers[*].hold_time": [1, 65536],
    "bgp.peers[*].families": [[], "ipv4-unicast", ["ipv4-unicast", "ipv4-unicast"], Flow({"a": 1})],
    "bgp.peers[*].local_address": ["nope", ANY4, "::"],
    "overlay.enabled": ["true", 0],
    "overlay.bridge": ["", "x" * 16, "a b"],
    "overlay.vni": [0, 2**24, "100"],
    "overlay.port": [0, 65536],
    "overlay.mtu": [1279, 9001, "auto"],
    "overlay.peers": ["lxd", 5, Flow({"a": 1})],
    "overlay.peers[*].name": NOT_A_NAME,
    "overlay.peers[*].address": ["nope", ANY4],
    "dhcp.enabled": ["no", 1],
    "dhcp.domain": ["-bad", "a..b", "a_b"],
    "dhcp.server_address": ["10.0.0.1", "10.0.0.1/31", "10.0.0.0/24", "2001:db8::1/64", "nope"],
    "dhcp.ranges": ["10.0.0.1-10.0.0.2", 5],
    "dhcp.ranges[*]": ["10.0.0.5", "b-a", "10.0.0.9-10.0.0.1"],
    "dhcp.lease_time": [59, "1h", 2**31],
    "services[*].name": [*NOT_A_NAME, "a.b", "a_b"],
    "services[*].addresses": ["10.0.0.1", [], 5],
    "services[*].addresses[*]": [*NOT_AN_IP, "127.0.0.1", "fe80::1", "240.0.0.1"],
    "services[*].backends.project": ["a b", "*", ""],
    "services[*].backends.instances": [[], "dns1"],
    "services[*].backends.instances[*]": ["a_b", "-a"],
    "services[*].backends.pattern": ["a b", "", "a/b"],
    "services[*].backends.key": ["yes", 1],
    "services[*].backends.network": ["x" * 16, "a b"],
    "services[*].check.type": ["icmp", 1],
    "services[*].check.port": [0, 65536, "http"],
    "services[*].check.interval": NOT_POSITIVE,
    "services[*].check.timeout": NOT_POSITIVE,
    "services[*].check.rise": [0, 101],
    "services[*].check.fall": [0, 101],
    "services[*].check.path": ["healthz", ""],
    "services[*].check.status": [[], 200],
    "services[*].check.status[*]": [99, 600, "ok"],
    "services[*].check.send": ["", "x" * 1025],
    "services[*].check.expect": [""],
    "services[*].check.query": ["a..b", "-", ""],
    "services[*].check.query_type": ["a", "ANY"],
    "services[*].check.rcode": ["ok"],
    "services[*].check.answer": ["yes"],
    "services[*].check.command": [[], "/bin/true"],
    "services[*].on_failure": ["drop"],
    "services[*].med": [-1, 2**32],
    "services[*].communities": ["65000:1"],
    "services[*].communities[*]": ["65536:1", "a:b"],
    "services[*].degraded_med": [-1],
    "services[*].degraded_communities[*]": ["1:2:3"],
    "services[*].drain_delay": [-1, "soon"],
    "services[*].drain_med": [-1],
    "services[*].flap.limit": [-1, 1001, 2.5, "often"],
    "services[*].flap.window": NOT_POSITIVE,
    "services[*].flap.hold_down": [-1, "long"],
    "routes.allowed_ranges": ["10.0.0.0/8"],
    "routes.allowed_ranges[*]": ["10.0.0.1/8", "10.0.0.0", "nope/8", "2001:db8::1/32"],
    "routes.max_prefix_length_v4": [33, -1],
    "routes.min_prefix_length_v4": [33, -1],
    "routes.max_prefix_length_v6": [129],
    "routes.min_prefix_length_v6": [129],
    "routes.max_prefixes": [0, 2**31],
    "routes.announce_instance_addresses": ["false", 0],
    "control.socket": ["fabricd.sock"],
    "control.mode": ["0999", "rw-rw----", "1777", True],
    "control.group": ["1000", "a b"],
    "metrics.listen": ["9100", "localhost:0", "[10.0.0.1]:80", "a b:1"],
    "logging.level": ["verbose", "INFO"],
    "logging.format": ["xml"],
    "reconcile.interval": NOT_POSITIVE,
}


def leaves(value: Any, path: str = "") -> list[str]:
    """Key paths of every scalar and scalar list (lists of scalars are leaves, and so are items)."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in leaves(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [p for i, item in enumerate(value) for p in leaves(item, f"{path}[{i}]")]
    if isinstance(value, list):
        return [path, *(f"{path}[{i}]" for i in range(len(value)))]
    return [path]


def pattern(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


def replace(data: Any, path: str, new: Any) -> None:
    *parents, last = re.findall(r"[^.\[\]]+", path)
    for step in parents:
        data = data[int(step)] if step.isdigit() else data[step]
    data[int(last) if last.isdigit() else last] = new


@FAST
@given(configs(), st.data())
def test_one_bad_value_is_reported_where_it_is(data: Data, draw: st.DataObject) -> None:
    candidates = [path for path in leaves(data) if pattern(path) in INVALID]
    path = draw.draw(st.sampled_from(candidates), label="path")
    bad = draw.draw(st.sampled_from(INVALID[pattern(path)]), label="bad value")
    replace(data, path, bad)
    writer = write(data)
    try:
        load_config_text(writer.text(), "gen.yaml")
    except ConfigError as error:
        found = [(p.key_path, p.line) for p in error.problems]
        assert found == [(path, writer.line_of[path])], f"{error}\n---\n{writer.text()}"
    else:
        raise AssertionError(f"{path}: {bad!r} was accepted\n---\n{writer.text()}")
