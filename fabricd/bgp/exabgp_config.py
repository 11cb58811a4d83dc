"""ExaBGP's configuration file and environment, rendered from fabricd's validated config (pure).

Facts about ExaBGP 5.0 this relies on (checked against 5.0.15):
- The config tokeniser unescapes backslashes over the whole line and a quote of the other kind
  inside a quoted string switches the quoting, so not every string can be quoted. Passwords go in
  base64 (`md5-base64 true`) and every other string is either a plain token or refused.
- `api { processes [..]; neighbor-changes; }` inside a neighbor sends JSON `state` messages
  (connected/up/down) to the process; `encoder json` on the process selects JSON.
- A helper that dies does NOT take ExaBGP down (`exabgp.api.terminate` only covers peer errors),
  and ExaBGP keeps announcing what it had. So respawn is off and fabricd's supervisor kills
  ExaBGP itself when its relay goes away.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from fabricd.config.model import BGPConfig, Family, HostConfig, IPAddress, PeerConfig

PROCESS_NAME = "fabricd"
# ExaBGP refuses longer TCP-MD5 keys (RFC 2385 keys are at most 80 bytes in Linux too).
MAX_MD5_KEY = 80
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_./:@%+=-]+")
_FAMILY_WORDS: Mapping[Family, str] = {"ipv4-unicast": "ipv4 unicast", "ipv6-unicast": "ipv6 unicast"}


class ExaBGPConfigError(ValueError):
    """fabricd's config cannot be expressed for ExaBGP; the message names the peer and why."""


def token(text: str) -> str:
    """One configuration token: written plainly when that is safe, else double-quoted.

    Refuses what ExaBGP cannot read back unchanged: quotes, backslashes and line breaks.
    """
    if _PLAIN_TOKEN.fullmatch(text):
        return text
    if not text or any(c in text for c in "\"'\\\n\r") or not text.isprintable():
        raise ExaBGPConfigError(f"{text!r} cannot be written into an ExaBGP configuration")
    return f'"{text}"'


def peer_families(peer: PeerConfig) -> tuple[Family, ...]:
    """The families a peer negotiates; the loader fills them, direct construction may not."""
    if peer.families:
        return peer.families
    return ("ipv4-unicast",) if peer.address.version == 4 else ("ipv6-unicast",)


def local_address(peer: PeerConfig, host: HostConfig) -> IPAddress:
    """The session's source: the peer's own setting, else this host's underlay address of its family."""
    if peer.local_address is not None:
        return peer.local_address
    if peer.address.version == 4:
        if isinstance(host.underlay_address, IPv4Address):
            return host.underlay_address
    elif host.underlay_address6 is not None:
        return host.underlay_address6
    elif isinstance(host.underlay_address, IPv6Address):
        return host.underlay_address
    raise ExaBGPConfigError(
        f"peer {peer.name} ({peer.address}): this host has no IPv{peer.address.version} underlay "
        "address to connect from; set host.underlay_address6 or the peer's local_address"
    )


def hold_time(peer: PeerConfig, bgp: BGPConfig) -> int:
    return bgp.hold_time if peer.hold_time is None else peer.hold_time


def md5_base64(password: str) -> str:
    """The password as ExaBGP's `md5-base64` reads it: any printable byte survives unchanged."""
    key = password.encode("utf-8")
    if not 1 <= len(key) <= MAX_MD5_KEY:
        raise ExaBGPConfigError(f"an MD5 password must be 1..{MAX_MD5_KEY} bytes")
    return base64.b64encode(key).decode("ascii")


def _neighbor(peer: PeerConfig, bgp: BGPConfig, host: HostConfig) -> list[str]:
    families = "".join(f" {_FAMILY_WORDS[f]};" for f in peer_families(peer))
    lines = [
        f"neighbor {peer.address} {{",
        f"    description {token(peer.name)};",
        f"    router-id {bgp.router_id};",
        f"    local-address {local_address(peer, host)};",
        f"    local-as {bgp.local_asn};",
        f"    peer-as {peer.asn};",
        f"    hold-time {hold_time(peer, bgp)};",
    ]
    if peer.password is not None:
        lines += [f"    md5-password {md5_base64(peer.password)};", "    md5-base64 true;"]
    # Graceful restart would make peers keep a dead agent's routes: only when asked for.
    if bgp.graceful_restart.enabled:
        lines.append(f"    capability {{ graceful-restart {bgp.graceful_restart.restart_time}; }}")
    lines += [
        f"    family {{{families} }}",
        f"    api {{ processes [ {PROCESS_NAME} ]; neighbor-changes; }}",
        "}",
    ]
    return lines


def render_config(bgp: BGPConfig, host: HostConfig, relay_argv: Sequence[str]) -> str:
    """The whole ExaBGP configuration: the relay process and one neighbor block per peer."""
    if not bgp.peers:
        raise ExaBGPConfigError("no BGP peers configured")
    if not relay_argv or not relay_argv[0].startswith("/"):
        raise ExaBGPConfigError("the relay command must start with an absolute path")
    run = " ".join(token(arg) for arg in relay_argv)
    lines = [
        "# Written by fabricd on every start of ExaBGP; edits are lost.",
        f"process {PROCESS_NAME} {{",
        f"    run {run};",
        "    encoder json;",
        "    respawn false;",
        "}",
    ]
    for peer in bgp.peers:
        lines += ["", *_neighbor(peer, bgp, host)]
    return "\n".join(lines) + "\n"


# Without fabricd's reactor patch (bgp.exabgp names another ExaBGP): see fabricd.bgp.exabgp_main.
REACTOR_SPEED = "0.2"


def exabgp_environment(
    log_file: Path, level: str = "INFO", reactor_speed: str = REACTOR_SPEED
) -> dict[str, str]:
    """ExaBGP's settings, passed as environment so no machine-wide exabgp.env changes them."""
    return {
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_pid": "",
        "exabgp_log_destination": str(log_file),
        "exabgp_log_level": level,
        # Every command gets `done` or `error`, in order: that is how fabricd knows what is announced.
        "exabgp_api_ack": "true",
        "exabgp_api_encoder": "json",
        # A dead relay must not be replaced behind fabricd's back: the supervisor restarts ExaBGP.
        "exabgp_api_respawn": "false",
        # No named pipes: nothing else may drive this ExaBGP, and two instances never collide.
        "exabgp_api_cli": "false",
        # Never listen on port 179; fabricd's ExaBGP only connects out.
        "exabgp_tcp_bind": "",
        "exabgp_bgp_passive": "false",
        # The reactor runs 50 API steps (one route each) per turn and then polls with a timeout of
        # speed/100 s even when more steps are queued: at the default 1.0 that is 10 ms per 50
        # routes. Measured (50,000 routes, bulk lines of 1000): 1.0 → 14.3 s to r1's FIB, 0.2 →
        # 8.8 s; but 0.2 wakes ExaBGP 500 times a second when idle (3 % of a core). fabricd's own
        # launcher (fabricd.bgp.exabgp_main) polls without a timeout while work is queued, so it
        # runs at 1.0 and wakes once a second when idle; another ExaBGP (bgp.exabgp) gets 0.2.
        "exabgp_reactor_speed": reactor_speed,
    }
