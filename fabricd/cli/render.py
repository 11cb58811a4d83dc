"""Human-readable rendering of status replies: plain text tables, no colour, stable column order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fabricd.agent.health import Verdict, verdict
from fabricd.cli.render_authority import render_authority
from fabricd.cli.render_services import render_services_brief
from fabricd.cli.text import duration, table


def render_routes(routes: Sequence[dict[str, Any]]) -> str:
    if not routes:
        return "routes: none"
    rows = [
        (
            r.get("prefix"),
            r.get("next_hop"),
            r.get("origin"),
            r.get("state"),
            ",".join(name for name, state in (r.get("peers") or {}).items() if state == "announced") or None,
            r.get("reason") or r.get("note"),
        )
        for r in routes
    ]
    return table(("PREFIX", "NEXT HOP", "ORIGIN", "STATE", "AT", "REASON"), rows)


def render_bfd(sessions: Sequence[dict[str, Any]], daemon: dict[str, Any]) -> str:
    rows = [
        (
            s.get("peer"),
            s.get("address"),
            s.get("state"),
            duration(s.get("for_seconds")),
            f"{s.get('interval_ms')} ms x {s.get('multiplier')}",
            _ms(s.get("detect_time_s")) if s.get("state") == "Up" else None,
            "multihop" if s.get("multihop") else s.get("interface"),
        )
        for s in sessions
    ]
    pid = daemon.get("pid")
    line = f"bfd: bird pid {pid}" if pid is not None else "bfd: bird not running"
    line += f", {daemon.get('starts', 0)} start(s)"
    if daemon.get("starts", 0) > 1 and daemon.get("last_exit"):
        line += f", last exit: {daemon['last_exit']}"
    return line + "\n" + table(("BFD PEER", "ADDRESS", "STATE", "SINCE", "TIMERS", "DETECT", "VIA"), rows)


def render_events(events: Sequence[dict[str, Any]]) -> str:
    if not events:
        return "no decisions yet"
    rows = [
        (time.strftime("%H:%M:%S", time.localtime(float(e.get("at") or 0))), e.get("event"), e.get("reason"))
        for e in events
    ]
    return table(("TIME", "EVENT", "DECISION"), rows)


def render_config(config: dict[str, Any] | None) -> list[str]:
    if not config:
        return []
    last = config.get("last_reload")
    if not last:
        return [f"config: {config.get('file')} (no reload since start)"]
    at = time.strftime("%H:%M:%S", time.localtime(float(last.get("at") or 0)))
    verdict = "ok" if last.get("ok") else "NOT APPLIED"
    outcome = f"{last.get('outcome')} ({verdict}): {last.get('reason')}"
    return [f"config: {config.get('file')}, last reload at {at}: {outcome}"]


def render_status(status: dict[str, Any]) -> str:
    host = status.get("host", {})
    recon = status.get("reconcile", {})
    lines = [
        f"fabricd {host.get('version', '?')} on {host.get('name', '?')} "
        f"(underlay {host.get('underlay_address', '?')}, pid {host.get('pid', '?')}, "
        f"up {duration(host.get('uptime_seconds'))})",
        f"reconcile: {recon.get('passes', 0)} passes, last took "
        f"{_ms(recon.get('last_pass_seconds'))}"
        + (f", last error: {recon['last_error']}" if recon.get("last_error") else ""),
        *render_config(status.get("config")),
        "",
    ]
    bfd = {s.get("address"): s for s in status.get("bfd_sessions") or []}
    lines.append(render_bgp_peers(status.get("bgp_peers", []), bfd))
    if bfd:
        lines += ["", render_bfd(list(bfd.values()), status.get("bfd_daemon") or {})]
    lines += ["", render_routes(status.get("routes", [])), ""]
    lines += render_overlay(status.get("overlay"), status.get("overlay_peers", []))
    lines += ["", *render_authority(status.get("authority"))]
    services = render_services_brief(status.get("services"))
    if services:
        lines += ["", *services]
    lines += ["", *render_health(verdict(status))]
    return "\n".join(lines)


def render_health(found: Verdict) -> list[str]:
    """The verdict fabricctl exits with, and every reason for it."""
    if not found.reasons:
        return [f"health: {found.state} (exit {found.code})"]
    return [f"health: {found.state} (exit {found.code}); problems:"] + [f"  - {r}" for r in found.reasons]


def render_check(found: Verdict) -> str:
    """One line in the shape monitoring plugins print: state, then the reasons."""
    if not found.reasons:
        return "FABRICD OK - healthy"
    reasons = "; ".join(" ".join(reason.split()) for reason in found.reasons)  # one line, always
    return f"FABRICD DEGRADED - {len(found.reasons)} problem(s): {reasons}"


def render_bgp_peers(peers: Sequence[dict[str, Any]], bfd: dict[Any, dict[str, Any]] | None = None) -> str:
    """The peer table; with `bfd` (sessions by peer address) a BFD column, "off" for a peer without."""
    if not peers:
        return "BGP peers: none"
    rows = [
        (
            p.get("name"),
            p.get("address"),
            p.get("asn"),
            p.get("state"),
            duration(p.get("uptime_seconds")),
            p.get("prefixes_sent"),
            p.get("flaps"),
            *(() if bfd is None else ((bfd.get(p.get("address")) or {}).get("state", "off"),)),
            p.get("last_error"),
        )
        for p in peers
    ]
    bfd_header = () if bfd is None else ("BFD",)
    header = ("BGP PEER", "ADDRESS", "ASN", "STATE", "UPTIME", "SENT", "FLAPS", *bfd_header, "LAST ERROR")
    return table(header, rows)


def render_peers(reply: dict[str, Any]) -> str:
    sessions = reply.get("bfd_sessions")
    bfd = None if sessions is None else {s.get("address"): s for s in sessions}
    lines = [render_bgp_peers(reply.get("bgp_peers", []), bfd), ""]
    lines += render_overlay(reply.get("overlay"), reply.get("overlay_peers", []))
    return "\n".join(lines)


def render_overlay(overlay: dict[str, Any] | None, peers: Sequence[dict[str, Any]]) -> list[str]:
    if not overlay:
        return ["overlay: disabled"]
    flood = overlay.get("flood") or []
    lines = [
        f"overlay {overlay.get('bridge')} vni {overlay.get('vni')} port {overlay.get('port')}: "
        f"{overlay.get('state')}, mtu {overlay.get('mtu')} ({overlay.get('mtu_source')}), "
        f"{overlay.get('known_macs', 0)} known MACs",
        "flood list: " + (", ".join(f"{f.get('vtep')} ({f.get('peer')})" for f in flood) or "empty"),
    ]
    firewall = overlay.get("firewall") or {}
    if firewall:
        dropped = (firewall.get("counters") or {}).get("vxlan_dropped")
        lines.append(
            f"vxlan filter: {len(firewall.get('peers') or [])} peers allowed"
            + (f", {dropped} packets dropped" if dropped is not None else "")
        )
    if peers:
        rows = [
            (
                p.get("name"),
                p.get("address"),
                p.get("state"),
                "yes" if p.get("flood") else "no",
                p.get("reason"),
            )
            for p in peers
        ]
        lines += ["", table(("OVERLAY PEER", "ADDRESS", "STATE", "FLOOD", "REASON"), rows)]
    else:
        lines.append("overlay peers: none")
    return lines


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"
