"""The `services` section: anycast services, their backends, health checks and announcements.

The same readers parse a service defined on LXD instances (`fabricd.services.instance_keys`
turns `user.fabric.anycast.<service>.*` keys into a mapping read here), so both kinds of
definition follow one set of rules and give the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from fabricd.config import converters as convert
from fabricd.config.model import (
    BackendSelector,
    CheckType,
    DNSRcode,
    DNSType,
    FlapConfig,
    HealthCheckConfig,
    IPAddress,
    OnFailure,
    ServiceConfig,
)
from fabricd.config.reader import CheckedMapping, Invalid, Unique, Value, convert_all

CHECK_TYPES: tuple[CheckType, ...] = ("tcp", "udp", "dns", "http", "https", "exec")
DNS_TYPES: tuple[DNSType, ...] = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT")
DNS_RCODES: tuple[DNSRcode, ...] = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
ON_FAILURE: tuple[OnFailure, ...] = ("withdraw", "degrade")

SERVICE_KEYS = (
    "name",
    "addresses",
    "backends",
    "check",
    "on_failure",
    "med",
    "communities",
    "degraded_med",
    "degraded_communities",
    "drain_delay",
    "drain_med",
    "flap",
)
# What an instance may define: the name and the backends come from the key and the instance.
INSTANCE_SERVICE_KEYS = tuple(key for key in SERVICE_KEYS if key not in ("name", "backends"))
_BACKEND_KEYS = ("project", "instances", "pattern", "key", "network")
_CHECK_KEYS = (
    "type",
    "port",
    "interval",
    "timeout",
    "rise",
    "fall",
    "path",
    "status",
    "send",
    "expect",
    "query",
    "query_type",
    "rcode",
    "answer",
    "command",
)
_TYPED_KEYS = ("port", *_CHECK_KEYS[_CHECK_KEYS.index("path") :])
_FLAP_KEYS = ("limit", "window", "hold_down")
_flap_limit = convert.integer(0, 1000)

# Keys each check type reads besides type, interval, timeout, rise and fall.
CHECK_FIELDS: dict[CheckType, tuple[str, ...]] = {
    "tcp": ("port",),
    "udp": ("port", "send", "expect"),
    "dns": ("port", "query", "query_type", "rcode", "answer"),
    "http": ("port", "path", "status"),
    "https": ("port", "path", "status"),
    "exec": ("command",),
}
_REQUIRED: dict[CheckType, tuple[str, ...]] = {"tcp": ("port",), "udp": ("port", "send"), "dns": ("query",),
                                               "exec": ("command",)}  # fmt: skip
DEFAULT_PORTS: dict[CheckType, int] = {"dns": 53, "http": 80, "https": 443}
_ARTICLE = {"tcp": "a", "udp": "a", "dns": "a", "http": "an", "https": "an", "exec": "an"}

service_name = convert.matching(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", "a service name (letters, digits and '-', at most 63)"
)
_project = convert.matching(r"(?!\.\.?$)[^\s/*]{1,63}", "an LXD project name")
_glob = convert.matching(r"[A-Za-z0-9*?\[\]!-]{1,63}", "a glob of instance-name characters and * ? [ ] !")
_command = convert.list_of(convert.matching(r".+", "a non-empty string"), non_empty=True)
_http_path = convert.matching(r"/[!-~]*", "a request path starting with '/'")
_text = convert.matching(r"(?s).{1,1024}", "text of 1..1024 characters")
_dns_label = r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
_dns_name = convert.matching(
    rf"(?=.{{1,254}}$){_dns_label}(?:\.{_dns_label})*\.?", "a DNS name (labels of letters, digits, '_', '-')"
)
_status_code = convert.integer(100, 599)


def parse_services(value: Value) -> tuple[ServiceConfig, ...]:
    names = Unique("service name")
    owners: dict[IPAddress, str] = {}
    return convert_all(value.items(), lambda item: _parse_service(item, names, owners))


def _parse_service(value: Value, names: Unique, owners: dict[IPAddress, str]) -> ServiceConfig:
    m = value.mapping(SERVICE_KEYS)
    name = m.require("name", service_name)
    backends = m.require("backends", parse_backends)
    if name is not None:
        names.check(m, "name", name)
    service = service_body(m, name, backends)
    _check_addresses_unique(m, service.addresses, owners)
    if not m.clean():
        raise Invalid
    return service


def service_body(m: CheckedMapping, name: str | None, backends: BackendSelector | None) -> ServiceConfig:
    """Everything but the name and backends, read from `m`; raises Invalid after reporting."""
    addresses = m.require("addresses", _addresses)
    check = m.get("check", parse_check, None)
    default = ServiceConfig("", ())
    on_failure: OnFailure = m.get("on_failure", convert.choice(ON_FAILURE), default.on_failure)
    med = m.get("med", convert.med, None)
    communities = m.get("communities", convert.list_of(convert.community), None)
    degraded_med = m.get("degraded_med", convert.med, None)
    degraded_communities = m.get("degraded_communities", convert.list_of(convert.community), ())
    drain_delay = m.get("drain_delay", convert.non_negative_number, default.drain_delay)
    drain_med = m.get("drain_med", convert.med, default.drain_med)
    flap = m.get("flap", parse_flap, FlapConfig())
    if m.clean():
        _check_failure_mode(m, on_failure, degraded_med is not None or bool(degraded_communities))
        _check_worse(m, med, "degraded_med", degraded_med)
        _check_worse(m, med, "drain_med", drain_med)
    if not m.clean() or name is None or backends is None or addresses is None:
        raise Invalid
    return ServiceConfig(
        name, addresses, backends, check, on_failure, med, _unique(communities), degraded_med,
        _unique(degraded_communities) or (), drain_delay, drain_med, flap,
    )  # fmt: skip


def _unique(items: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if items is None else tuple(dict.fromkeys(items))


def _addresses(value: Value) -> tuple[IPAddress, ...]:
    found = convert.list_of(_service_address, non_empty=True)(value)
    if len(set(found)) != len(found):
        raise value.fail("each address may be listed only once")
    return found


def _service_address(value: Value) -> IPAddress:
    address = convert.any_ip(value)
    special = _special_kind(address)
    if special:
        raise value.expected(f"an address to announce ({address} is {special})")
    return address


def _special_kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, IPv4Address) and (address.is_reserved or int(address) >> 24 == 0):
        return "reserved"
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return "IPv4-mapped"
    return ""


def _check_addresses_unique(
    m: CheckedMapping, addresses: Sequence[IPAddress], owners: dict[IPAddress, str]
) -> None:
    """An anycast address belongs to one service: two would fight over its host route."""
    given = m.entries.get("addresses")
    if given is None or not m.clean():
        return
    for item, address in zip(given.items(), addresses, strict=True):
        first = owners.setdefault(address, m.path)
        if first != m.path:
            item.fail(f"address {address} is already used by {first}")


def _check_failure_mode(m: CheckedMapping, on_failure: OnFailure, degraded: bool) -> None:
    if on_failure == "degrade" and not degraded:
        m.fail_at("on_failure", "degrade needs degraded_med or degraded_communities, or it changes nothing")
    if on_failure == "withdraw":
        for key in ("degraded_med", "degraded_communities"):
            if m.has(key):
                m.fail_at(key, "only used with on_failure: degrade")


def _check_worse(m: CheckedMapping, med: int | None, key: str, worse: int | None) -> None:
    """A degraded or draining announcement must lose to a healthy one."""
    if med is not None and worse is not None and worse <= med:
        where = key if m.has(key) else "med"
        m.fail_at(where, f"{key} ({worse}) must be greater than med ({med})")


def parse_backends(value: Value) -> BackendSelector:
    m = value.mapping(_BACKEND_KEYS)
    project = m.get("project", _project, "default")
    instances = m.get("instances", convert.list_of(convert.instance_name, non_empty=True), ())
    pattern = m.get("pattern", _glob, None)
    key = m.get("key", convert.boolean, False)
    network = m.get("network", convert.ifname, None)
    if m.clean() and not (instances or pattern or key):
        m.report(m.path, m.line, "choose the backends: instances (names), pattern (a glob) or key: true")
    if not m.clean():
        raise Invalid
    return BackendSelector(project, tuple(dict.fromkeys(instances)), pattern, key, network)


def parse_check(value: Value) -> HealthCheckConfig:
    m = value.mapping(_CHECK_KEYS)
    default = HealthCheckConfig("tcp")
    kind = m.require("type", convert.choice(CHECK_TYPES))
    port = m.get("port", convert.port, None)
    interval = m.get("interval", convert.positive_number, default.interval)
    timeout = m.get("timeout", convert.positive_number, None)
    rise = m.get("rise", convert.integer(1, 100), default.rise)
    fall = m.get("fall", convert.integer(1, 100), default.fall)
    path = m.get("path", _http_path, default.path)
    status = m.get("status", convert.list_of(_status_code, non_empty=True), default.status)
    send = m.get("send", _text, None)
    expect = m.get("expect", _text, None)
    query = m.get("query", _dns_name, None)
    query_type = m.get("query_type", convert.choice(DNS_TYPES), default.query_type)
    rcode = m.get("rcode", convert.choice(DNS_RCODES), default.rcode)
    answer = m.get("answer", convert.boolean, rcode == "NOERROR")
    command = m.get("command", _command, None)
    if kind is not None:
        _check_fits_type(m, kind)
    if timeout is not None and m.clean() and timeout > interval:
        m.fail_at("timeout", f"must not exceed interval ({interval:g} s)")
    if not m.clean() or kind is None:
        raise Invalid
    if port is None:
        port = DEFAULT_PORTS.get(kind)
    return HealthCheckConfig(
        kind, port, interval, min(default.timeout, interval) if timeout is None else timeout, rise, fall,
        path, tuple(dict.fromkeys(status)), send, expect, query, query_type, rcode, answer, command,
    )  # fmt: skip


def _check_fits_type(m: CheckedMapping, kind: CheckType) -> None:
    """Each check type reads its own keys: one meant for another type is a mistake, not noise."""
    article = _ARTICLE[kind]
    for key in _REQUIRED.get(kind, ()):
        if not m.has(key):
            m.missing(key, f" (needed for {article} {kind} check)")
    fields = CHECK_FIELDS[kind]
    for key in _TYPED_KEYS:
        if key not in fields and m.has(key):
            users = ", ".join(t for t, keys in CHECK_FIELDS.items() if key in keys)
            m.fail_at(key, f"not used by {article} {kind} check (only by {users})")


def parse_flap(value: Value) -> FlapConfig:
    m = value.mapping(_FLAP_KEYS)
    default = FlapConfig()
    limit = m.get("limit", _flap_limit, default.limit)
    window = m.get("window", convert.positive_number, default.window)
    hold_down = m.get("hold_down", convert.non_negative_number, default.hold_down)
    if not m.clean():
        raise Invalid
    return FlapConfig(limit, window, hold_down)
