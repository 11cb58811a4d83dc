"""The `host` section (this machine on the underlay) and the `lxd` section (how to reach LXD)."""

from __future__ import annotations

from fabricd.config import converters as convert
from fabricd.config.model import DEFAULT_LXD_SOCKET, HostConfig, LXDConfig
from fabricd.config.reader import CheckedMapping, Invalid, Unique, Value, convert_all

_HOST_KEYS = ("name", "underlay_address", "underlay_address6", "underlay_interface")


def parse_host(value: Value) -> HostConfig:
    m = value.mapping(_HOST_KEYS)
    name = m.require("name", convert.hostname)
    address = m.require("underlay_address", convert.any_ip)
    address6 = m.get("underlay_address6", convert.ipv6, None)
    interface = m.get("underlay_interface", convert.ifname, None)
    if not m.clean() or name is None or address is None:
        raise Invalid
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
    "chassis_members",
)


def parse_lxd(value: Value) -> LXDConfig:
    m = value.mapping(_LXD_KEYS)
    default = LXDConfig()
    socket = m.get("socket", convert.absolute_path, None)
    url = m.get("url", convert.https_url, None)
    _check_lxd_transport(m)
    client_cert = m.get("client_cert", convert.absolute_path, None)
    client_key = m.get("client_key", convert.absolute_path, None)
    server_cert = m.get("server_cert", convert.absolute_path, None)
    project = m.get("project", convert.project, default.project)
    resync_interval = m.get("resync_interval", convert.positive_number, default.resync_interval)
    backoff = m.get("reconnect_backoff_max", convert.positive_number, default.reconnect_backoff_max)
    chassis_members = m.get("chassis_members", _parse_chassis_members, default.chassis_members)
    if not m.clean():
        raise Invalid
    if socket is None and url is None:
        socket = DEFAULT_LXD_SOCKET
    return LXDConfig(
        socket, url, client_cert, client_key, server_cert, project, resync_interval, backoff, chassis_members
    )


def _parse_chassis_members(value: Value) -> tuple[tuple[str, str], ...]:
    seen = Unique("chassis")
    return convert_all(value.items(), lambda item: _parse_chassis_member(item, seen))


def _parse_chassis_member(value: Value, seen: Unique) -> tuple[str, str]:
    m = value.mapping(("chassis", "member"))
    chassis = m.require("chassis", convert.hostname)
    member = m.require("member", convert.name)
    if chassis is not None:
        seen.check(m, "chassis", chassis)
    if not m.clean() or chassis is None or member is None:
        raise Invalid
    return (chassis, member)


def _check_lxd_transport(m: CheckedMapping) -> None:
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
