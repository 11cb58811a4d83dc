"""Load and validate fabricd.yaml, reporting every problem with its file, key path and line.

The YAML is composed into nodes (never constructed into Python objects) so each value keeps the
line it came from. A small reader walks the nodes section by section. A conversion that finds a
bad value records a problem and raises `_Invalid`; the enclosing mapping read catches it and moves
on to the next key, so one pass finds every problem. A section with any problem is itself invalid,
which lets checks that depend on it (the BGP router ID defaulting to the host's address, say) stay
quiet instead of piling follow-on errors onto the real one.

Conventions: a key whose value is null (`key:` with nothing after it) counts as absent. Text
fields take any scalar as the text written, so `password: 1234` and `name: 2001` need no quotes.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fabricd.config.errors import ConfigError, ConfigProblem
from fabricd.config.model import (
    DEFAULT_LXD_SOCKET,
    LXD_CLUSTER_PEERS,
    BGPConfig,
    CheckType,
    ControlConfig,
    DHCPConfig,
    FabricConfig,
    Family,
    GracefulRestartConfig,
    HealthCheckConfig,
    HostConfig,
    IPAddress,
    IPNetwork,
    LogFormat,
    LoggingConfig,
    LogLevel,
    LXDConfig,
    MetricsConfig,
    OverlayConfig,
    OverlayPeer,
    PeerConfig,
    ReconcileConfig,
    RoutesConfig,
    ServiceConfig,
)

_T = TypeVar("_T")
_D = TypeVar("_D")

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR, _MERGE = (
    _TAG + t for t in ("null", "bool", "int", "float", "str", "merge")
)
_SCALARS = SafeConstructor()  # only its scalar converters are used, so YAML 1.1 forms (0x1f, 0660) work

MAX_ASN = 2**32 - 1
BGP_HOLD_TIME = 9
LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
FAMILIES: tuple[Family, ...] = ("ipv4-unicast", "ipv6-unicast")
CHECK_TYPES: tuple[CheckType, ...] = ("tcp", "http", "exec")


# --- the reader -------------------------------------------------------------------------------


class _Invalid(Exception):
    """Raised once a problem is recorded, to abandon the value being read."""


class _Context:
    """The file being read and the problems found in it so far."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []

    def report(self, path: str, line: int | None, message: str) -> _Invalid:
        self.problems.append(ConfigProblem(self.file, path, line, message))
        return _Invalid()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: Node) -> str:
    """How a wrong value is shown after 'got'."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    text = str(node.value)
    if len(text) > 60:
        text = text[:57] + "..."
    if not node.tag.startswith(_TAG):
        return f"{text!r} tagged {node.tag}"
    return repr(text) if node.tag == _STR else text


@dataclass(frozen=True, slots=True)
class _Value:
    """One YAML node and the key path that led to it."""

    ctx: _Context
    path: str
    node: Node

    @property
    def line(self) -> int:
        return _line(self.node)

    def fail(self, message: str) -> _Invalid:
        """Record a problem with this value; the caller raises what this returns."""
        return self.ctx.report(self.path, self.line, message)

    def expected(self, what: str) -> _Invalid:
        return self.fail(f"expected {what}, got {_describe(self.node)}")

    def text(self) -> str | None:
        """The scalar exactly as written, or None when this is not a (core-tagged, non-null) scalar."""
        node = self.node
        if isinstance(node, ScalarNode) and node.tag != _NULL and node.tag.startswith(_TAG):
            return str(node.value)
        return None

    def items(self) -> list[_Value]:
        if not isinstance(self.node, SequenceNode):
            raise self.expected("a list")
        return [_Value(self.ctx, f"{self.path}[{i}]", item) for i, item in enumerate(self.node.value)]

    def mapping(self, keys: Collection[str]) -> _Mapping:
        """Read this value as a mapping that may hold only `keys`, with YAML merge keys applied."""
        if not isinstance(self.node, MappingNode):
            raise self.expected("a mapping")
        result = _Mapping(self, keys)
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in self.node.value:
            if key_node.tag == _MERGE:
                merged.extend(self._merge_sources(value_node, frozenset()))
            else:
                result.add(key_node, value_node, from_merge=False)
        for key_node, value_node in merged:
            result.add(key_node, value_node, from_merge=True)
        return result

    def _merge_sources(self, node: Node, visiting: frozenset[int]) -> list[tuple[Node, Node]]:
        """Pairs a YAML merge key (`<<: *defaults`) brings in, in precedence order."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        pairs: list[tuple[Node, Node]] = []
        for source in sources:
            if not isinstance(source, MappingNode) or id(source) in visiting:
                self.ctx.report(self.path, _line(source), "expected a mapping (or list of mappings) to merge")
                continue
            pairs.extend((k, v) for k, v in source.value if k.tag != _MERGE)
            for k, v in source.value:
                if k.tag == _MERGE:
                    pairs.extend(self._merge_sources(v, visiting | {id(source)}))
        return pairs


class _Mapping:
    """A mapping checked for unknown and duplicate keys, with typed reads of its values."""

    def __init__(self, value: _Value, allowed: Collection[str]) -> None:
        self.value = value
        self.allowed = allowed
        self.entries: dict[str, _Value] = {}
        self.key_lines: dict[str, int] = {}
        self.mark = len(value.ctx.problems)

    @property
    def path(self) -> str:
        return self.value.path

    @property
    def line(self) -> int:
        return self.value.line

    def report(self, path: str, line: int, message: str) -> None:
        self.value.ctx.report(path, line, message)

    def add(self, key_node: Node, value_node: Node, *, from_merge: bool) -> None:
        if not isinstance(key_node, ScalarNode):
            self.report(self.path, _line(key_node), "keys must be plain strings")
            return
        key = str(key_node.value)
        path = _join(self.path, key)
        if key in self.key_lines:
            # Keys written in the mapping itself override merged ones, as YAML specifies.
            if not from_merge:
                first = self.key_lines[key]
                self.report(path, _line(key_node), f"duplicate key '{key}' (first given on line {first})")
            return
        self.key_lines[key] = _line(key_node)
        if key not in self.allowed:
            self.report(path, _line(key_node), _unknown_key_message(key, self.allowed))
            return
        self.entries[key] = _Value(self.value.ctx, path, value_node)

    def _present(self, key: str) -> _Value | None:
        value = self.entries.get(key)
        if value is None or value.node.tag == _NULL:
            return None
        return value

    def has(self, key: str) -> bool:
        return self._present(key) is not None

    def get(self, key: str, convert: Callable[[_Value], _T], default: _D) -> _T | _D:
        """The converted value; the default when absent or (after reporting it) invalid."""
        value = self._present(key)
        if value is None:
            return default
        try:
            return convert(value)
        except _Invalid:
            return default

    def require(self, key: str, convert: Callable[[_Value], _T], why: str = "") -> _T | None:
        """The converted value; None (after reporting it) when absent or invalid."""
        value = self._present(key)
        if value is None:
            self.missing(key, why)
            return None
        return self.get(key, convert, None)

    def missing(self, key: str, why: str = "") -> None:
        given_null = self.entries.get(key)
        if given_null is not None:
            given_null.fail(f"a value is required{why}")
        else:
            self.report(_join(self.path, key), self.line, f"missing required key '{key}'{why}")

    def fail_at(self, key: str, message: str) -> None:
        """Report against one key: at its line when given, else at this mapping's line."""
        value = self.entries.get(key)
        self.report(_join(self.path, key), self.line if value is None else value.line, message)

    def clean(self) -> bool:
        """No problems were found since this mapping was opened."""
        return len(self.value.ctx.problems) == self.mark


def _unknown_key_message(key: str, allowed: Collection[str]) -> str:
    message = f"unknown key '{key}'; expected one of: {', '.join(allowed)}"
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f"{message} (did you mean '{close[0]}'?)" if close else message


@dataclass
class _Unique:
    """Flags the second and later uses of a value that must be unique within a list."""

    what: str
    first_use: dict[object, str] = field(default_factory=dict)

    def check(self, mapping: _Mapping, key: str, item: object) -> bool:
        """True when this is the first use; otherwise report the duplicate."""
        first = self.first_use.setdefault(item, mapping.path)
        if first != mapping.path:
            mapping.fail_at(key, f"duplicate {self.what} '{item}'; already used by {first}")
            return False
        return True


def _check_names(
    m: _Mapping, name: str | None, address: IPAddress | None, names: _Unique, addresses: _Unique
) -> str | None:
    """Peers are unique by address and by name; an unnamed peer is named after its address."""
    fresh_address = address is not None and addresses.check(m, "address", address)
    if name is not None:
        names.check(m, "name", name)
        return name
    if address is None:
        return None
    if fresh_address:  # a repeated address is already reported; its default name would repeat too
        names.check(m, "name", str(address))
    return str(address)


def _convert_all(items: list[_Value], convert: Callable[[_Value], _T]) -> tuple[_T, ...]:
    """Convert every item, reporting all bad ones before giving up on the list."""
    results: list[_T] = []
    failed = False
    for item in items:
        try:
            results.append(convert(item))
        except _Invalid:
            failed = True
    if failed:
        raise _Invalid
    return tuple(results)


# --- scalar conversions -----------------------------------------------------------------------
# Each takes a _Value and returns the converted value, or records a problem and raises _Invalid.

_Convert = Callable[[_Value], _T]


def _int_of(node: Node) -> int | None:
    if isinstance(node, ScalarNode) and node.tag == _INT:
        try:
            return _SCALARS.construct_yaml_int(node)
        except ValueError:
            return None
    return None


def _float_of(node: Node) -> float | None:
    if not isinstance(node, ScalarNode):
        return None
    if node.tag == _INT:
        number = _int_of(node)
        return None if number is None else float(number)
    if node.tag == _FLOAT:
        try:
            value = _SCALARS.construct_yaml_float(node)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def _integer(low: int, high: int, what: str = "") -> _Convert[int]:
    def convert(value: _Value) -> int:
        number = _int_of(value.node)
        if number is None or not low <= number <= high:
            raise value.expected(what or f"an integer {low}..{high}")
        return number

    return convert


_asn = _integer(1, MAX_ASN)
_port = _integer(1, 65535)


def _hold_time(value: _Value) -> int:
    number = _int_of(value.node)
    if number is None or not (number == 0 or 3 <= number <= 65535):
        raise value.expected("0 or an integer 3..65535")
    return number


def _positive_number(value: _Value) -> float:
    number = _float_of(value.node)
    if number is None or number <= 0:
        raise value.expected("a number > 0")
    return number


def _boolean(value: _Value) -> bool:
    node = value.node
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        return _SCALARS.construct_yaml_bool(node)
    raise value.expected("true or false")


def _matching(pattern: str, what: str) -> _Convert[str]:
    compiled = re.compile(pattern)

    def convert(value: _Value) -> str:
        text = value.text()
        if text is None or not compiled.fullmatch(text):
            raise value.expected(what)
        return text

    return convert


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOTTED = rf"{_LABEL}(?:\.{_LABEL})*"
_hostname = _matching(rf"(?=.{{1,253}}$){_DOTTED}", "a hostname (letters, digits and '-', dot-separated)")
_instance_name = _matching(_LABEL, "an LXD instance name (letters, digits and '-', at most 63)")
# Linux rejects '/', ':' and whitespace in interface names, and IFNAMSIZ leaves 15 characters.
_ifname = _matching(r"(?!\.\.?$)(?!.*[/:])[!-~]{1,15}", "an interface name (1..15 characters, no '/' or ':')")
_name = _matching(
    r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}", "a name of letters, digits, '.', '_', ':', '-' (max 63)"
)
_project = _matching(r"\*|(?!\.\.?$)[^\s/]{1,63}", "an LXD project name or '*' for all projects")
# The control socket's group is looked up with getgrnam, so a name, not a number.
_group = _matching(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", "a group name")


def _choice(options: tuple[_T, ...]) -> _Convert[_T]:
    def convert(value: _Value) -> _T:
        text = value.text()
        for option in options:
            if text == option:
                return option
        raise value.expected("one of: " + ", ".join(str(option) for option in options))

    return convert


def _password(value: _Value) -> str:
    text = value.text()
    if text is None or not re.fullmatch(r"[ -~]{1,80}", text):
        raise value.fail("expected 1..80 printable ASCII characters (value not shown)")
    return text


def _ip(version: int | None = None) -> _Convert[IPAddress]:
    what = {None: "an IP address", 4: "an IPv4 address", 6: "an IPv6 address"}[version]

    def convert(value: _Value) -> IPAddress:
        try:
            address = ip_address(value.text() or "")
        except ValueError:
            raise value.expected(what) from None
        if version is not None and address.version != version:
            raise value.expected(what)
        if address.is_unspecified or address.is_multicast:
            kind = "unspecified" if address.is_unspecified else "multicast"
            raise value.expected(f"a unicast address ({address} is {kind})")
        return address

    return convert


_any_ip, _v4_only, _v6_only = _ip(), _ip(4), _ip(6)


def _ipv4(value: _Value) -> IPv4Address:
    address = _v4_only(value)
    if not isinstance(address, IPv4Address):  # unreachable: the version was checked; this narrows the type
        raise value.expected("an IPv4 address")
    return address


def _ipv6(value: _Value) -> IPv6Address:
    address = _v6_only(value)
    if not isinstance(address, IPv6Address):  # unreachable, as above
        raise value.expected("an IPv6 address")
    return address


def _network(value: _Value) -> IPNetwork:
    what = "a prefix such as 10.0.0.0/8 or 2001:db8::/32"
    text = value.text()
    if text is None or "/" not in text:
        raise value.expected(what)
    try:
        return ip_network(text)
    except ValueError:
        pass
    try:
        loose = ip_network(text, strict=False)
    except ValueError:
        raise value.expected(what) from None
    raise value.fail(f"{text} has host bits set; did you mean {loose}?")


def _absolute_path(value: _Value) -> Path:
    text = value.text()
    if text is None or not text.startswith("/") or "\0" in text:
        raise value.expected("an absolute path")
    return Path(text)


def _https_url(value: _Value) -> str:
    text = value.text() or ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        port = None
    if (
        port is None
        or parts.scheme != "https"
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise value.expected("a URL of the form https://host:port")
    return text


def _listen(value: _Value) -> str:
    match = re.fullmatch(r"(\[[^\]]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", value.text() or "")
    if match is None or not 1 <= int(match[2]) <= 65535 or not _listen_host_ok(match[1]):
        raise value.expected("'host:port' or '[IPv6 address]:port'")
    return match[0]


def _listen_host_ok(host: str) -> bool:
    if host.startswith("["):
        try:
            return ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    if re.fullmatch(r"[0-9.]+", host):  # looks like IPv4, so it must be one
        try:
            ip_address(host)
        except ValueError:
            return False
        return True
    return re.fullmatch(_DOTTED, host) is not None


def _mode(value: _Value) -> int:
    # Always octal digits, as for chmod: "0660", 0660 and 660 all mean rw-rw----.
    match = re.fullmatch(r"(?:0o|0)?([0-7]{1,3})", value.text() or "")
    if match is None:
        raise value.expected('a permission mode in octal, like "0660"')
    return int(match[1], 8)


def _list_of(convert: _Convert[_T], *, non_empty: bool = False) -> _Convert[tuple[_T, ...]]:
    def convert_list(value: _Value) -> tuple[_T, ...]:
        items = value.items()
        if non_empty and not items:
            raise value.expected("a non-empty list")
        return _convert_all(items, convert)

    return convert_list


def _families(value: _Value) -> tuple[Family, ...]:
    families = _list_of(_choice(FAMILIES), non_empty=True)(value)
    if len(set(families)) != len(families):
        raise value.fail("each family may be listed only once")
    return families


def _family_of(address: IPAddress) -> Family:
    return "ipv4-unicast" if address.version == 4 else "ipv6-unicast"


# --- sections -----------------------------------------------------------------------------------

_HOST_KEYS = ("name", "underlay_address", "underlay_address6", "underlay_interface")


def _parse_host(value: _Value) -> HostConfig:
    m = value.mapping(_HOST_KEYS)
    name = m.require("name", _hostname)
    address = m.require("underlay_address", _any_ip)
    address6 = m.get("underlay_address6", _ipv6, None)
    interface = m.get("underlay_interface", _ifname, None)
    if not m.clean() or name is None or address is None:
        raise _Invalid
    return HostConfig(name, address, address6, interface)


_LXD_KEYS = (
    "socket",
    "url",
    "client_cert",
    "client_key",
    "server_cert",
    "project",
    "resync_interval",
    "reconnect_backoff_max",
)


def _parse_lxd(value: _Value) -> LXDConfig:
    m = value.mapping(_LXD_KEYS)
    default = LXDConfig()
    socket = m.get("socket", _absolute_path, None)
    url = m.get("url", _https_url, None)
    _check_lxd_transport(m)
    client_cert = m.get("client_cert", _absolute_path, None)
    client_key = m.get("client_key", _absolute_path, None)
    server_cert = m.get("server_cert", _absolute_path, None)
    project = m.get("project", _project, default.project)
    resync_interval = m.get("resync_interval", _positive_number, default.resync_interval)
    backoff = m.get("reconnect_backoff_max", _positive_number, default.reconnect_backoff_max)
    if not m.clean():
        raise _Invalid
    if socket is None and url is None:
        socket = DEFAULT_LXD_SOCKET
    return LXDConfig(socket, url, client_cert, client_key, server_cert, project, resync_interval, backoff)


def _check_lxd_transport(m: _Mapping) -> None:
    """A local socket or a remote URL with client certificates; never both, never half."""
    if m.has("socket") and m.has("url"):
        m.fail_at("url", "give either 'socket' or 'url', not both")
    if m.has("url"):
        for key in ("client_cert", "client_key"):
            if not m.has(key):
                m.missing(key, " (needed with 'url')")
        return
    for key in ("client_cert", "client_key", "server_cert"):
        if m.has(key):
            m.fail_at(key, "only used with 'url'; the local socket needs no certificates")


_BGP_KEYS = ("local_asn", "router_id", "hold_time", "graceful_restart", "peers")
_PEER_KEYS = ("name", "address", "asn", "password", "hold_time", "families", "local_address")


def _parse_bgp(value: _Value, host: HostConfig | None) -> BGPConfig:
    m = value.mapping(_BGP_KEYS)
    local_asn = m.require("local_asn", _asn)
    router_id = _router_id(m, host)
    hold_time = m.get("hold_time", _hold_time, BGP_HOLD_TIME)
    graceful_restart = m.get("graceful_restart", _parse_graceful_restart, GracefulRestartConfig())
    peers = m.require("peers", _parse_bgp_peers)
    if peers == ():
        m.fail_at("peers", "at least one peer is required")
    if not m.clean() or local_asn is None or router_id is None or peers is None:
        raise _Invalid
    return BGPConfig(local_asn, router_id, hold_time, graceful_restart, peers)


def _router_id(m: _Mapping, host: HostConfig | None) -> IPv4Address | None:
    if m.has("router_id"):
        return m.get("router_id", _ipv4, None)
    if host is None:  # the host section is broken and already reported
        return None
    if isinstance(host.underlay_address, IPv4Address):
        return host.underlay_address
    m.missing("router_id", " (host.underlay_address is IPv6, so it cannot be the router ID)")
    return None


def _parse_graceful_restart(value: _Value) -> GracefulRestartConfig:
    m = value.mapping(("enabled", "restart_time"))
    default = GracefulRestartConfig()
    enabled = m.get("enabled", _boolean, default.enabled)
    restart_time = m.get("restart_time", _integer(1, 4095), default.restart_time)
    if not m.clean():
        raise _Invalid
    return GracefulRestartConfig(enabled, restart_time)


def _parse_bgp_peers(value: _Value) -> tuple[PeerConfig, ...]:
    names, addresses = _Unique("peer name"), _Unique("peer address")
    return _convert_all(value.items(), lambda item: _parse_bgp_peer(item, names, addresses))


def _parse_bgp_peer(value: _Value, names: _Unique, addresses: _Unique) -> PeerConfig:
    m = value.mapping(_PEER_KEYS)
    name = m.get("name", _name, None)
    address = m.require("address", _any_ip)
    asn = m.require("asn", _asn)
    password = m.get("password", _password, None)
    hold_time = m.get("hold_time", _hold_time, None)
    families = m.get("families", _families, None)
    local_address = m.get("local_address", _any_ip, None)
    if address is not None and local_address is not None and local_address.version != address.version:
        v = address.version
        m.fail_at(
            "local_address", f"expected an IPv{v} address like the peer's {address}, got {local_address}"
        )
    name = _check_names(m, name, address, names, addresses)
    if not m.clean() or name is None or address is None or asn is None:
        raise _Invalid
    families = families or (_family_of(address),)
    return PeerConfig(name, address, asn, password, hold_time, families, local_address)


_OVERLAY_KEYS = ("enabled", "bridge", "vni", "port", "mtu", "peers")
_MTU_WHAT = "an integer 1280..9000 (or no value, to follow the underlay)"


def _parse_overlay(value: _Value, host: HostConfig | None) -> OverlayConfig:
    m = value.mapping(_OVERLAY_KEYS)
    default = OverlayConfig()
    enabled = m.get("enabled", _boolean, default.enabled)
    bridge = m.get("bridge", _ifname, default.bridge)
    vni = m.get("vni", _integer(1, 2**24 - 1), default.vni)
    port = m.get("port", _port, default.port)
    mtu = m.get("mtu", _integer(1280, 9000, _MTU_WHAT), None)
    peers = m.get("peers", lambda v: _parse_overlay_peers(v, host), default.peers)
    if not m.clean():
        raise _Invalid
    return OverlayConfig(enabled, bridge, vni, port, mtu, peers)


def _parse_overlay_peers(value: _Value, host: HostConfig | None) -> str | tuple[OverlayPeer, ...]:
    if value.text() == LXD_CLUSTER_PEERS:
        return LXD_CLUSTER_PEERS
    if not isinstance(value.node, SequenceNode):
        raise value.expected(f"'{LXD_CLUSTER_PEERS}' or a list of peers")
    names, addresses = _Unique("overlay peer name"), _Unique("overlay peer address")
    return _convert_all(value.items(), lambda item: _parse_overlay_peer(item, host, names, addresses))


def _parse_overlay_peer(
    value: _Value, host: HostConfig | None, names: _Unique, addresses: _Unique
) -> OverlayPeer:
    m = value.mapping(("name", "address"))
    name = m.get("name", _name, None)
    address = m.require("address", _any_ip)
    if address is not None and host is not None and not _host_reaches(host, address):
        v = address.version
        m.fail_at("address", f"{address} is IPv{v} but this host has no IPv{v} underlay address")
    name = _check_names(m, name, address, names, addresses)
    if not m.clean() or name is None or address is None:
        raise _Invalid
    return OverlayPeer(name, address)


def _host_reaches(host: HostConfig, address: IPAddress) -> bool:
    """VXLAN needs a local underlay address of the peer's family."""
    if address.version == host.underlay_address.version:
        return True
    return address.version == 6 and host.underlay_address6 is not None


_DHCP_KEYS = ("enabled", "domain", "server_address", "ranges", "lease_time")


def _parse_dhcp(value: _Value) -> DHCPConfig:
    m = value.mapping(_DHCP_KEYS)
    default = DHCPConfig()
    enabled = m.get("enabled", _boolean, default.enabled)
    domain = m.get("domain", _hostname, default.domain)
    server = m.get("server_address", _server_interface, None)
    if enabled and not m.has("server_address"):
        m.missing("server_address", " (needed when DHCP is enabled)")
    ranges = m.get("ranges", lambda v: _dhcp_ranges(v, server), default.ranges)
    lease_time = m.get("lease_time", _integer(60, 2**31 - 1), default.lease_time)
    if not m.clean():
        raise _Invalid
    return DHCPConfig(enabled, domain, server, ranges, lease_time)


def _server_interface(value: _Value) -> IPv4Interface:
    text = value.text() or ""
    try:
        interface = IPv4Interface(text) if "/" in text else None
    except ValueError:
        interface = None
    if interface is None or interface.network.prefixlen > 30:
        raise value.expected("an IPv4 address with its prefix length (at most /30), like 10.200.0.1/24")
    network = interface.network
    if interface.ip in (network.network_address, network.broadcast_address):
        raise value.fail(
            f"{interface.ip} is the network or broadcast address of {network}; use a host address"
        )
    return interface


_Range = tuple[IPv4Address, IPv4Address]


def _dhcp_ranges(value: _Value, server: IPv4Interface | None) -> tuple[_Range, ...]:
    items = value.items()
    pools = _convert_all(items, lambda item: _dhcp_range(item, server))
    for i, (start, end) in enumerate(pools):
        for j in range(i):
            if start <= pools[j][1] and pools[j][0] <= end:
                raise items[i].fail(f"overlaps {value.path}[{j}]")
    return pools


def _dhcp_range(value: _Value, server: IPv4Interface | None) -> _Range:
    start_text, _, end_text = (value.text() or "").partition("-")
    try:
        start, end = IPv4Address(start_text.strip()), IPv4Address(end_text.strip())
    except ValueError:
        raise value.expected("a range like 10.200.0.100-10.200.0.199") from None
    if start > end:
        raise value.fail(f"the range starts ({start}) after it ends ({end})")
    if server is None:
        return start, end
    network = server.network
    hosts = (network.network_address + 1, network.broadcast_address - 1)
    if not (hosts[0] <= start and end <= hosts[1]):
        raise value.fail(f"{start}-{end} is outside {network}'s host addresses (from dhcp.server_address)")
    if start <= server.ip <= end:
        raise value.fail(f"{start}-{end} includes the server's own address {server.ip}")
    return start, end


_SERVICE_KEYS = ("name", "address", "instance", "check")
_CHECK_KEYS = ("type", "port", "interval", "rise", "fall", "path", "command")


def _parse_services(value: _Value) -> tuple[ServiceConfig, ...]:
    names = _Unique("service name")
    return _convert_all(value.items(), lambda item: _parse_service(item, names))


def _parse_service(value: _Value, names: _Unique) -> ServiceConfig:
    m = value.mapping(_SERVICE_KEYS)
    name = m.require("name", _name)
    address = m.require("address", _any_ip)
    instance = m.get("instance", _instance_name, None)
    check = m.get("check", _parse_check, None)
    if name is not None:
        names.check(m, "name", name)
    if not m.clean() or name is None or address is None:
        raise _Invalid
    return ServiceConfig(name, address, instance, check)


_command = _list_of(_matching(r".+", "a non-empty string"), non_empty=True)
_http_path = _matching(r"/[!-~]*", "a request path starting with '/'")


def _parse_check(value: _Value) -> HealthCheckConfig:
    m = value.mapping(_CHECK_KEYS)
    default = HealthCheckConfig("tcp")
    kind = m.require("type", _choice(CHECK_TYPES))
    port = m.get("port", _port, None)
    interval = m.get("interval", _positive_number, default.interval)
    rise = m.get("rise", _integer(1, 100), default.rise)
    fall = m.get("fall", _integer(1, 100), default.fall)
    path = m.get("path", _http_path, None)
    command = m.get("command", _command, None)
    if kind is not None:
        _check_fits_type(m, kind)
    if not m.clean() or kind is None:
        raise _Invalid
    if kind == "http" and path is None:
        path = "/"
    return HealthCheckConfig(kind, port, interval, rise, fall, path, command)


def _check_fits_type(m: _Mapping, kind: CheckType) -> None:
    """Each check type takes its own keys: a port to probe, or a command to run."""
    if kind == "exec":
        if not m.has("command"):
            m.missing("command", " (needed for an exec check)")
        if m.has("port"):
            m.fail_at("port", "not used by an exec check")
    else:
        if not m.has("port"):
            m.missing("port", f" (needed for a {kind} check)")
        if m.has("command"):
            m.fail_at("command", "only used by an exec check")
    if kind != "http" and m.has("path"):
        m.fail_at("path", "only used by an http check")


_ROUTES_KEYS = (
    "allowed_ranges",
    "max_prefix_length_v4",
    "max_prefix_length_v6",
    "min_prefix_length_v4",
    "min_prefix_length_v6",
    "max_prefixes",
    "announce_instance_addresses",
)


def _parse_routes(value: _Value) -> RoutesConfig:
    m = value.mapping(_ROUTES_KEYS)
    default = RoutesConfig()
    allowed = m.get("allowed_ranges", _list_of(_network), default.allowed_ranges)
    max_v4 = m.get("max_prefix_length_v4", _integer(0, 32), default.max_prefix_length_v4)
    max_v6 = m.get("max_prefix_length_v6", _integer(0, 128), default.max_prefix_length_v6)
    min_v4 = m.get("min_prefix_length_v4", _integer(0, 32), default.min_prefix_length_v4)
    min_v6 = m.get("min_prefix_length_v6", _integer(0, 128), default.min_prefix_length_v6)
    max_prefixes = m.get("max_prefixes", _integer(1, 2**31 - 1), default.max_prefixes)
    announce = m.get("announce_instance_addresses", _boolean, default.announce_instance_addresses)
    if not m.clean():  # compare lengths only once each is known to be valid
        raise _Invalid
    for low, high, family in ((min_v4, max_v4, "v4"), (min_v6, max_v6, "v6")):
        if low > high:
            m.fail_at(f"min_prefix_length_{family}", f"{low} is above max_prefix_length_{family} ({high})")
    if not m.clean():
        raise _Invalid
    return RoutesConfig(allowed, max_v4, max_v6, min_v4, min_v6, max_prefixes, announce)


def _parse_control(value: _Value) -> ControlConfig:
    m = value.mapping(("socket", "mode", "group"))
    default = ControlConfig()
    socket = m.get("socket", _absolute_path, default.socket)
    mode = m.get("mode", _mode, default.mode)
    group = m.get("group", _group, default.group)
    if not m.clean():
        raise _Invalid
    return ControlConfig(socket, mode, group)


def _parse_metrics(value: _Value) -> MetricsConfig:
    m = value.mapping(("listen",))
    listen = m.get("listen", _listen, None)
    if not m.clean():
        raise _Invalid
    return MetricsConfig(listen)


def _parse_logging(value: _Value) -> LoggingConfig:
    m = value.mapping(("level", "format"))
    default = LoggingConfig()
    level = m.get("level", _choice(LEVELS), default.level)
    fmt = m.get("format", _choice(FORMATS), default.format)
    if not m.clean():
        raise _Invalid
    return LoggingConfig(level, fmt)


def _parse_reconcile(value: _Value) -> ReconcileConfig:
    m = value.mapping(("interval",))
    interval = m.get("interval", _positive_number, ReconcileConfig().interval)
    if not m.clean():
        raise _Invalid
    return ReconcileConfig(interval)


_SECTIONS = (
    "host",
    "lxd",
    "bgp",
    "overlay",
    "dhcp",
    "services",
    "routes",
    "control",
    "metrics",
    "logging",
    "reconcile",
)


def _parse_root(root: _Value, source: Path) -> FabricConfig:
    m = root.mapping(_SECTIONS)
    host = m.require("host", _parse_host)
    lxd = m.get("lxd", _parse_lxd, LXDConfig())
    bgp = m.get("bgp", lambda v: _parse_bgp(v, host), None)
    overlay = m.get("overlay", lambda v: _parse_overlay(v, host), OverlayConfig())
    dhcp = m.get("dhcp", _parse_dhcp, DHCPConfig())
    services = m.get("services", _parse_services, ())
    routes = m.get("routes", _parse_routes, RoutesConfig())
    control = m.get("control", _parse_control, ControlConfig())
    metrics = m.get("metrics", _parse_metrics, MetricsConfig())
    logging = m.get("logging", _parse_logging, LoggingConfig())
    reconcile = m.get("reconcile", _parse_reconcile, ReconcileConfig())
    if not m.clean() or host is None:
        raise _Invalid
    return FabricConfig(
        source, host, lxd, bgp, overlay, dhcp, services, routes, control, metrics, logging, reconcile
    )


# --- entry points -------------------------------------------------------------------------------


def _compose(text: str, file: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        reason = "; ".join(part for part in (exc.context, exc.problem) if part)
        problem = ConfigProblem(file, "", line, f"invalid YAML: {reason}")
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, int(exc.position)) + 1
        problem = ConfigProblem(file, "", line, f"invalid YAML: {exc.reason} (character {exc.character!r})")
    except yaml.YAMLError as exc:
        problem = ConfigProblem(file, "", None, f"invalid YAML: {exc}")
    raise ConfigError([problem])


def _load(text: str, file: str, source: Path) -> FabricConfig:
    root = _compose(text, file)
    if root is None:
        raise ConfigError([ConfigProblem(file, "", None, "the file is empty; a 'host' section is needed")])
    ctx = _Context(file)
    try:
        config = _parse_root(_Value(ctx, "", root), source)
    except _Invalid:
        pass
    else:
        if not ctx.problems:
            return config
    # File order reads best; a stable sort keeps problems on one line in the order found.
    raise ConfigError(sorted(ctx.problems, key=lambda p: p.line or 0))


def load_config_text(text: str, source: str = "<string>") -> FabricConfig:
    """Validate config text; `source` names it in problems and becomes `FabricConfig.source`."""
    return _load(text, source, Path(source))


def load_config(path: str | Path) -> FabricConfig:
    """Read and validate a config file; raises ConfigError listing every problem found."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(file, "", None, message)]) from exc
    except UnicodeDecodeError as exc:
        message = f"the file is not valid UTF-8 (bad byte at offset {exc.start})"
        raise ConfigError([ConfigProblem(file, "", None, message)]) from exc
    return _load(text, file, Path(path))
