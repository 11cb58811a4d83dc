"""fabricctl's view of the anycast services: addresses with their announcement state, backends."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fabricd.cli.text import duration, table


def _drained_line(drain: dict[str, Any]) -> str | None:
    now = time.time()
    parts = []
    if drain.get("host") is not None:
        parts.append(f"host drained {duration(now - float(drain['host']))} ago")
    for name, at in sorted((drain.get("services") or {}).items()):
        parts.append(f"{name} drained {duration(now - float(at))} ago")
    return "drain: " + "; ".join(parts) if parts else None


def render_services(section: dict[str, Any] | None) -> str:
    """The `services` status section as two tables (addresses, then backends) and the refusals."""
    if not section:
        return "services: none (this fabricd does not run anycast services)"
    lines = []
    drained = _drained_line(section.get("drain") or {})
    if drained:
        lines.append(drained)
    services: Sequence[dict[str, Any]] = section.get("services") or []
    if not services:
        lines.append("services: none defined")
    else:
        addresses = [
            (s.get("name"), a.get("address"), a.get("state"), a.get("reason"))
            for s in services
            for a in s.get("addresses") or []
        ]
        lines.append(table(("SERVICE", "ADDRESS", "STATE", "REASON"), addresses))
        backends = [
            (
                s.get("name"),
                b.get("instance"),
                ",".join(b.get("addresses") or []) or None,
                b.get("state"),
                duration(b.get("since_seconds")) if b.get("since_seconds") is not None else None,
                _last(b.get("last_result")),
                b.get("reason"),
            )
            for s in services
            for b in s.get("backends") or []
        ]
        lines.append("")
        if backends:
            header = ("SERVICE", "BACKEND", "ADDRESS", "STATE", "SINCE", "LAST CHECK", "REASON")
            lines.append(table(header, backends))
        else:
            lines.append("backends: none on this host")
    refused = section.get("problems") or []
    if refused:
        rows = [(p.get("service"), p.get("instance") or "(definition)", p.get("reason")) for p in refused]
        lines += ["", table(("REFUSED SERVICE", "INSTANCE", "REASON"), rows)]
    return "\n".join(lines)


def _last(result: dict[str, Any] | None) -> str | None:
    if not result:
        return None
    return f"{'pass' if result.get('ok') else 'fail'} {result.get('seconds_ago', 0):.1f}s ago"


def render_services_brief(section: dict[str, Any] | None) -> list[str]:
    """A few lines for `fabricctl status`: each address and its state."""
    if not section or not section.get("services"):
        return []
    rows = [
        (s.get("name"), a.get("address"), a.get("state"), a.get("reason"))
        for s in section["services"]
        for a in s.get("addresses") or []
    ]
    lines = []
    drained = _drained_line(section.get("drain") or {})
    if drained:
        lines.append(drained)
    lines.append(table(("SERVICE", "ADDRESS", "STATE", "REASON"), rows) if rows else "services: no address")
    return lines


def render_drain(reply: dict[str, Any]) -> str:
    drain = reply.get("drain") or {}
    line = _drained_line(drain) or "drain: nothing drained"
    note = reply.get("note")
    return f"{line}\n{note}" if note else line
