"""Converters from a config value to a typed one: numbers, names, addresses, paths, lists.

Each takes a `Value` and returns the converted value, or records a problem and raises `Invalid`.
"""

from __future__ import annotations

import math
import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from yaml.constructor import SafeConstructor
from yaml.nodes import Node, ScalarNode

from fabricd.config.model import Family, IPAddress, IPNetwork
from fabricd.config.reader import Convert, Value, convert_all
from fabricd.yaml_lines import TAG_PREFIX

_T = TypeVar("_T")

_BOOL, _INT, _FLOAT = (TAG_PREFIX + t for t in ("bool", "int", "float"))
_SCALARS = SafeConstructor()  # only its scalar converters are used, so YAML 1.1 forms (0x1f, 0660) work
_STR = TAG_PREFIX + "str"
# YAML 1.1 (PyYAML) reads a float only with a '.', so a plain `1e-5` or `2E3` would be text; YAML
# 1.2 and every other reader take it as the number people mean, and so does fabricd.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+")

MAX_ASN = 2**32 - 1
FAMILIES: tuple[Family, ...] = ("ipv4-unicast", "ipv6-unicast")


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
    if node.tag == _STR and node.style is None and _EXPONENT_FLOAT.fullmatch(str(node.value)):
        value = float(str(node.value))
        return value if math.isfinite(value) else None
    return None


def integer(low: int, high: int, what: str = "") -> Convert[int]:
    def convert(value: Value) -> int:
        number = _int_of(value.node)
        if number is None or not low <= number <= high:
            raise value.expected(what or f"an integer {low}..{high}")
        return number

    return convert


asn = integer(1, MAX_ASN)
port = integer(1, 65535)


def hold_time(value: Value) -> int:
    number = _int_of(value.node)
    if number is None or not (number == 0 or 3 <= number <= 65535):
        raise value.expected("0 or an integer 3..65535")
    return number


def positive_number(value: Value) -> float:
    number = _float_of(value.node)
    if number is None or number <= 0:
        raise value.expected("a number > 0")
    return number


def non_negative_number(value: Value) -> float:
    number = _float_of(value.node)
    if number is None or number < 0:
        raise value.expected("a number >= 0")
    return number


def boolean(value: Value) -> bool:
    node = value.node
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        return _SCALARS.construct_yaml_bool(node)
    raise value.expected("true or false")


def matching(pattern: str, what: str) -> Convert[str]:
    compiled = re.compile(pattern)

    def convert(value: Value) -> str:
        text = value.text()
        if text is None or not compiled.fullmatch(text):
            raise value.expected(what)
        return text

    return convert


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOTTED = rf"{_LABEL}(?:\.{_LABEL})*"
hostname = matching(rf"(?=.{{1,253}}$){_DOTTED}", "a hostname (letters, digits and '-', dot-separated)")
instance_name = matching(_LABEL, "an LXD instance name (letters, digits and '-', at most 63)")
# Linux rejects '/', ':' and whitespace in interface names, and IFNAMSIZ leaves 15 characters.
ifname = matching(r"(?!\.\.?$)(?!.*[/:])[!-~]{1,15}", "an interface name (1..15 characters, no '/' or ':')")
name = matching(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}", "a name of letters, digits, '.', '_', ':', '-' (max 63)")
project = matching(r"\*|(?!\.\.?$)[^\s/]{1,63}", "an LXD project name or '*' for all projects")
# The control socket's group is looked up with getgrnam, so a name, not a number.
group = matching(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", "a group name")


def choice(options: tuple[_T, ...]) -> Convert[_T]:
    def convert(value: Value) -> _T:
        text = value.text()
        for option in options:
            if text == option:
                return option
        raise value.expected("one of: " + ", ".join(str(option) for option in options))

    return convert


def password(value: Value) -> str:
    text = value.text()
    if text is None or not re.fullmatch(r"[ -~]{1,80}", text):
        raise value.fail("expected 1..80 printable ASCII characters (value not shown)")
    return text


def _ip(version: int | None = None) -> Convert[IPAddress]:
    what = {None: "an IP address", 4: "an IPv4 address", 6: "an IPv6 address"}[version]

    def convert(value: Value) -> IPAddress:
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


any_ip, _v4_only, _v6_only = _ip(), _ip(4), _ip(6)


def ipv4(value: Value) -> IPv4Address:
    address = _v4_only(value)
    if not isinstance(address, IPv4Address):  # unreachable: the version was checked; this narrows the type
        raise value.expected("an IPv4 address")
    return address


def ipv6(value: Value) -> IPv6Address:
    address = _v6_only(value)
    if not isinstance(address, IPv6Address):  # unreachable, as above
        raise value.expected("an IPv6 address")
    return address


def network(value: Value) -> IPNetwork:
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


def absolute_path(value: Value) -> Path:
    text = value.text()
    if text is None or not text.startswith("/") or "\0" in text:
        raise value.expected("an absolute path")
    return Path(text)


def https_url(value: Value) -> str:
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


def listen(value: Value) -> str:
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


def mode(value: Value) -> int:
    # Always octal digits, as for chmod: "0660", 0660 and 660 all mean rw-rw----.
    match = re.fullmatch(r"(?:0o|0)?([0-7]{1,3})", value.text() or "")
    if match is None:
        raise value.expected('a permission mode in octal, like "0660"')
    return int(match[1], 8)


def list_of(convert: Convert[_T], *, non_empty: bool = False) -> Convert[tuple[_T, ...]]:
    def convert_list(value: Value) -> tuple[_T, ...]:
        items = value.items()
        if non_empty and not items:
            raise value.expected("a non-empty list")
        return convert_all(items, convert)

    return convert_list


def _colon_numbers(parts: int, high: int, what: str) -> Convert[str]:
    def convert(value: Value) -> str:
        text = value.text()
        fields = text.split(":") if text is not None else []
        if len(fields) != parts or not all(f.isdigit() and int(f) <= high for f in fields):
            raise value.expected(what)
        return ":".join(str(int(f)) for f in fields)

    return convert


community = _colon_numbers(2, 65535, "a community ASN:VALUE, each 0..65535 (e.g. 65000:100)")
large_community = _colon_numbers(3, 4294967295, "a large community A:B:C, each 0..4294967295")
med = integer(0, 4294967295)
local_pref = integer(0, 4294967295)


def families(value: Value) -> tuple[Family, ...]:
    listed = list_of(choice(FAMILIES), non_empty=True)(value)
    if len(set(listed)) != len(listed):
        raise value.fail("each family may be listed only once")
    return listed


def family_of(address: IPAddress) -> Family:
    return "ipv4-unicast" if address.version == 4 else "ipv6-unicast"
