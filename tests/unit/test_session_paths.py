"""Session paths read from this machine's own kernel: the loopback peer, which every host has."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from fabricd.bgp.paths import read_session_paths
from fabricd.config.model import PeerConfig


def test_a_peer_on_loopback_leaves_by_lo_from_its_own_address() -> None:
    peers = [PeerConfig("local", ip_address("127.0.0.2"), 65000), PeerConfig("v6", ip_address("::1"), 65000)]
    v4, v6 = read_session_paths(peers).paths
    assert (v4.peer, v4.interface, v4.error) == ("local", "lo", None)
    assert v4.local is not None and v4.local in ip_network("127.0.0.0/8")
    assert ip_network("127.0.0.0/8") in v4.connected
    assert v4.reaches(ip_address("127.0.0.9")) and not v4.reaches(ip_address("10.0.0.1"))
    assert (v6.interface, v6.error) == ("lo", None) and ip_network("::1/128") in v6.connected


def test_the_configured_local_address_wins_over_the_kernels_source() -> None:
    peer = PeerConfig("local", ip_address("127.0.0.2"), 65000, local_address=ip_address("127.0.0.5"))
    (path,) = read_session_paths([peer]).paths
    assert path.local == ip_address("127.0.0.5") and path.interface == "lo"
