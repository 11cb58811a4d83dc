"""Text for the DHCP/DNS authority: its status block and the lease table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fabricd.cli.text import duration, table


def render_authority(authority: dict[str, Any] | None) -> list[str]:
    if not authority:
        return ["DHCP/DNS authority: not enabled on this host (dhcp.enabled)"]
    server = authority.get("server") or {}
    address = server.get("address") or "?"
    if server.get("address6"):
        address += f", {server['address6']}"
    holder = authority.get("holder") or "none"
    head = f"DHCP/DNS authority ({authority.get('mode')}): {holder}"
    if authority.get("role") == "authority":
        head += f" (this host, since {_clock(authority.get('since'))}"
        expires = authority.get("lease_expires")
        if expires is not None:  # as of the last status snapshot; renewals push it on every 0.5 s
            head += f", lease held until {_clock(expires, tenths=True)}"
        head += ")"
    if authority.get("epoch") is not None:
        head += f", epoch {authority['epoch']}"
    lines = [
        head,
        f"  server {address} mac {server.get('mac')}; {authority.get('reason')}",
        f"  standbys: {', '.join(authority.get('standbys') or []) or 'none'}",
        f"  {authority.get('reservations', 0)} reservations, {authority.get('names', 0)} DNS names",
    ]
    leases = authority.get("leases")
    if leases is not None:
        lines.append(
            f"  leases: {leases.get('active')} active ({leases.get('reserved')} reserved, "
            f"{leases.get('dynamic')} dynamic)"
        )
    probe = authority.get("probe") or {}
    if probe:
        answering = ", ".join(probe.get("answering") or []) or "nobody"
        seen = f"  probe {_clock(probe.get('at'))}: authority answered from {answering}"
        if probe.get("error"):
            seen = f"  probe {_clock(probe.get('at'))} failed: {probe['error']}"
        lines.append(seen)
        lines += [f"  SECOND DHCP SERVER: {s}" for s in probe.get("second_servers") or []]
    conflicts = authority.get("conflicts") or []
    if conflicts:
        rows = [
            (c.get("name"), ", ".join(c.get("instances") or []), c.get("holder") or "nobody")
            for c in conflicts
        ]
        lines += ["", table(("NAME CONFLICT", "INSTANCES", "BARE NAME GOES TO"), rows)]
    refused = authority.get("refused") or []
    if refused:
        lines += [
            "",
            table(("DHCP/DNS REFUSED", "REASON"), [(r.get("subject"), r.get("reason")) for r in refused]),
        ]
    return lines


def render_leases(leases: Sequence[dict[str, Any]], authority: dict[str, Any] | None) -> str:
    if not authority:
        return "DHCP/DNS authority: not enabled on this host (dhcp.enabled)"
    if authority.get("role") != "authority":
        holder = authority.get("holder") or "no host"
        return f"this host does not serve DHCP; {holder} does: run fabricctl leases there"
    if not leases:
        return "leases: none"
    rows = [
        (lease.get("address"), lease.get("mac"), lease.get("hostname"), duration(lease.get("remaining")))
        for lease in leases
    ]
    return table(("ADDRESS", "MAC", "HOSTNAME", "EXPIRES IN"), rows)


def _clock(at: float | None, tenths: bool = False) -> str:
    if at is None:
        return "-"
    text = time.strftime("%H:%M:%S", time.localtime(at))
    return f"{text}.{int(at * 10) % 10}" if tenths else text
