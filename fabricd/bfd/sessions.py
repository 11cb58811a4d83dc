"""BFD session state: `birdc show bfd sessions` parsed into records, and joined with the peers.

BIRD 2.0.12 prints, after its banner and the protocol's name:

    IP address                Interface  State      Since         Interval  Timeout
    10.99.1.1                 eth1       Up         1796456833.104    0.100    0.300

one line per session: the neighbor, its interface (`---` for multihop), the state, when it last
changed (unix time, from the `timeformat` fabricd sets), the transmit interval and the detection
time in seconds. Anything else (banner, headers, blank lines) is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Literal

from fabricd.agent.loop import Key
from fabricd.config.model import IPAddress, PeerConfig

BFDState = Literal["Up", "Down", "Init", "AdminDown"]
STATES: tuple[BFDState, ...] = ("Up", "Down", "Init", "AdminDown")
_STATE_OF: Mapping[str, BFDState] = {s: s for s in STATES}


@dataclass(frozen=True, slots=True)
class BFDSession:
    address: IPAddress
    interface: str | None  # None for a multihop session
    state: BFDState
    since: float | None  # unix time of the last state change
    interval: float  # seconds between transmitted packets, as negotiated
    timeout: float  # the detection time in seconds (0 while down)


@dataclass(frozen=True, slots=True)
class BFDObservation:
    """What BIRD said this time; `error` when it could not be asked (not running, say)."""

    sessions: tuple[BFDSession, ...] = ()
    error: str | None = None

    def by_address(self) -> dict[IPAddress, BFDSession]:
        return {s.address: s for s in self.sessions}


BFD_SESSIONS: Key[BFDObservation] = Key("bfd-sessions")


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_session_line(line: str) -> BFDSession | None:
    fields = line.split()
    if len(fields) != 6:
        return None
    address, interface, state, since, interval, timeout = fields
    try:
        parsed = ip_address(address)
    except ValueError:
        return None
    known = _STATE_OF.get(state)
    interval_s, timeout_s = _seconds(interval), _seconds(timeout)
    if known is None or interval_s is None or timeout_s is None:
        return None
    return BFDSession(
        parsed, None if interface == "---" else interface, known, _seconds(since), interval_s, timeout_s
    )


def parse_show_bfd_sessions(text: str) -> tuple[BFDSession, ...]:
    sessions = (parse_session_line(line) for line in text.splitlines())
    return tuple(s for s in sessions if s is not None)


def session_rows(
    peers: Iterable[PeerConfig], observed: BFDObservation | None, now: float
) -> list[dict[str, Any]]:
    """One row per BGP peer with BFD on: its configured timers and what BIRD says of its session."""
    found = observed.by_address() if observed is not None else {}
    rows = []
    for peer in peers:
        if peer.bfd is None:
            continue
        session = found.get(peer.address)
        since = session.since if session is not None else None
        rows.append(
            {
                "peer": peer.name,
                "address": str(peer.address),
                "state": session.state if session is not None else "unknown",
                "since": since,
                "for_seconds": round(max(0.0, now - since), 3) if since is not None else None,
                "interface": session.interface if session is not None else None,
                "multihop": peer.bfd.multihop,
                "interval_ms": peer.bfd.interval_ms,
                "multiplier": peer.bfd.multiplier,
                "tx_interval_s": session.interval if session is not None else None,
                "detect_time_s": session.timeout if session is not None else None,
            }
        )
    return rows


def session_problems(rows: Iterable[Mapping[str, Any]], observed: BFDObservation | None) -> list[str]:
    if observed is None:
        return ["bfd: no session state read yet"]
    if observed.error is not None:
        return [f"bfd: cannot read the sessions from BIRD: {observed.error}"]
    return [
        f"bfd session with {row['peer']} ({row['address']}) is {row['state']}"
        for row in rows
        if row["state"] != "Up"
    ]
