"""The `services` section: announced service addresses and their health checks."""

from __future__ import annotations

from fabricd.config import converters as convert
from fabricd.config.model import CheckType, HealthCheckConfig, ServiceConfig
from fabricd.config.reader import CheckedMapping, Invalid, Unique, Value, convert_all

CHECK_TYPES: tuple[CheckType, ...] = ("tcp", "http", "exec")


_SERVICE_KEYS = ("name", "address", "instance", "check")
_CHECK_KEYS = ("type", "port", "interval", "rise", "fall", "path", "command")


def parse_services(value: Value) -> tuple[ServiceConfig, ...]:
    names = Unique("service name")
    return convert_all(value.items(), lambda item: _parse_service(item, names))


def _parse_service(value: Value, names: Unique) -> ServiceConfig:
    m = value.mapping(_SERVICE_KEYS)
    name = m.require("name", convert.name)
    address = m.require("address", convert.any_ip)
    instance = m.get("instance", convert.instance_name, None)
    check = m.get("check", _parse_check, None)
    if name is not None:
        names.check(m, "name", name)
    if not m.clean() or name is None or address is None:
        raise Invalid
    return ServiceConfig(name, address, instance, check)


_command = convert.list_of(convert.matching(r".+", "a non-empty string"), non_empty=True)
_http_path = convert.matching(r"/[!-~]*", "a request path starting with '/'")


def _parse_check(value: Value) -> HealthCheckConfig:
    m = value.mapping(_CHECK_KEYS)
    default = HealthCheckConfig("tcp")
    kind = m.require("type", convert.choice(CHECK_TYPES))
    port = m.get("port", convert.port, None)
    interval = m.get("interval", convert.positive_number, default.interval)
    rise = m.get("rise", convert.integer(1, 100), default.rise)
    fall = m.get("fall", convert.integer(1, 100), default.fall)
    path = m.get("path", _http_path, None)
    command = m.get("command", _command, None)
    if kind is not None:
        _check_fits_type(m, kind)
    if not m.clean() or kind is None:
        raise Invalid
    if kind == "http" and path is None:
        path = "/"
    return HealthCheckConfig(kind, port, interval, rise, fall, path, command)


def _check_fits_type(m: CheckedMapping, kind: CheckType) -> None:
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
