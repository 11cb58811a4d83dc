"""BIRD 2's configuration for fabricd's BFD sessions, rendered from the validated config (pure).

BIRD runs BFD and nothing else: `protocol device` only lets it learn the interfaces (single-hop
sessions need to know which one a neighbor is on), and no protocol here has a channel, so BIRD
neither imports nor exports a single route. Facts about BIRD 2.0.12 this relies on:
- only one `protocol bfd` works: with a second one, neighbors land in the first and stay Down;
- timers are per interface (single-hop) and one set for every multihop session, never per
  neighbor, so the loader makes peers of one kind agree;
- `timeformat protocol "%s.%3f"` makes `show bfd sessions` print each session's Since in unix time;
- `birdc configure` adds and removes neighbors without touching the sessions that stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabricd.bgp.exabgp_config import local_address
from fabricd.config.model import BFDConfig, BGPConfig, HostConfig, PeerConfig

PROTOCOL_NAME = "fabricd_bfd"
_LOG_CLASSES = "info, remote, warning, error, auth, fatal, bug"


def _timers(bfd: BFDConfig) -> str:
    return (
        f"min rx interval {bfd.interval_ms} ms; min tx interval {bfd.interval_ms} ms; "
        f"multiplier {bfd.multiplier};"
    )


def _first(peers: Sequence[PeerConfig], multihop: bool) -> BFDConfig | None:
    return next((p.bfd for p in peers if p.bfd is not None and p.bfd.multihop == multihop), None)


def render_bird_config(bgp: BGPConfig, host: HostConfig) -> str:
    """The whole file. Every BFD peer is a neighbor, from the BGP session's own local address, so
    the router's BFD session (keyed by both addresses) is the one its BGP session asked for."""
    peers = bgp.bfd_peers
    lines = [
        "# Written by fabricd; edits are lost. BFD only: no protocol here has a channel, so BIRD",
        "# neither learns nor installs nor announces a route.",
        f"router id {bgp.router_id};",
        'timeformat protocol "%s.%3f";',
        f"log stderr {{ {_LOG_CLASSES} }};",
        "",
        "protocol device {",
        "}",
        "",
        f"protocol bfd {PROTOCOL_NAME} {{",
    ]
    single, multi = _first(peers, False), _first(peers, True)
    if single is not None:
        lines.append(f'    interface "*" {{ {_timers(single)} }};')
    if multi is not None:
        lines.append(f"    multihop {{ {_timers(multi)} }};")
    for peer in peers:
        hop = " multihop" if peer.bfd is not None and peer.bfd.multihop else ""
        lines.append(f"    neighbor {peer.address} local {local_address(peer, host)}{hop};")
    lines.append("}")
    return "\n".join(lines) + "\n"
