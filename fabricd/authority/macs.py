"""The authority's fixed MAC addresses, derived from the overlay's VNI.

Every host derives the same addresses, so whichever host serves, clients see one server MAC and
one server identifier, and the overlay's FDB entry for that MAC simply moves. All are locally
administered unicast (bit 1 of the first octet set, bit 0 clear), so they never collide with a
vendor's address; the second octet `fd` and a role octet keep them apart from each other:

    02:fd:01:<vni>  the server (the floating device that carries the server address)
    02:fd:02:<vni>  the DHCP probe's client address
    fe:fd:01:<vni>  the floating device's bridge port; a bridge whose own MAC was never set takes
                    its lowest port MAC, and fe… is higher than any vendor address, so adding the
                    port never changes the bridge's MAC
"""

from __future__ import annotations

from ipaddress import IPv6Interface

_SERVER, _PROBE = 0x01, 0x02
_MAX_VNI = 2**24 - 1


def _vni_mac(first: int, role: int, vni: int) -> str:
    if not 1 <= vni <= _MAX_VNI:
        raise ValueError(f"a VNI is 1..{_MAX_VNI}, not {vni}")
    octets = (first, 0xFD, role, vni >> 16 & 0xFF, vni >> 8 & 0xFF, vni & 0xFF)
    return ":".join(f"{octet:02x}" for octet in octets)


def server_mac(vni: int) -> str:
    return _vni_mac(0x02, _SERVER, vni)


def port_mac(vni: int) -> str:
    return _vni_mac(0xFE, _SERVER, vni)


def probe_mac(vni: int) -> str:
    return _vni_mac(0x02, _PROBE, vni)


def is_local_unicast(mac: str) -> bool:
    first = int(mac.split(":")[0], 16)
    return bool(first & 0x02) and not first & 0x01


def link_local(mac: str) -> IPv6Interface:
    """The EUI-64 link-local address for `mac` (RFC 4291 appendix A): the same on every host."""
    octets = bytes.fromhex(mac.replace(":", ""))
    iid = bytes((octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:6]))
    groups = ":".join(iid[i : i + 2].hex() for i in range(0, 8, 2))
    return IPv6Interface(f"fe80::{groups}/64")
