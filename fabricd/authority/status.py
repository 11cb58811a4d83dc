"""The authority's part of the status: who serves, since when, standbys, leases, conflicts, and
every DHCP server the probe saw. Pure: built from what the feature holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fabricd.agent.status import Metric
from fabricd.authority.dnsmasq import LeaseTable
from fabricd.authority.floating import FloatingSpec
from fabricd.authority.handover import HandedOver
from fabricd.authority.prober import ProbeView, describe
from fabricd.authority.state import AuthorityState

if TYPE_CHECKING:
    from fabricd.authority.feature import ServingIntent


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """dnsmasq and the applier as they are now."""

    dnsmasq_pid: int | None
    dnsmasq_starts: int
    dnsmasq_reloads: int
    dnsmasq_restarts: int
    dnsmasq_last_exit: str | None
    last_action: str
    apply_error: str | None
    probes: int
    second_server_probes: int
    handed_over: HandedOver | None = None  # what this host's last take started with (cluster)
    handover_publishes: int = 0


def authority_section(
    state: AuthorityState,
    spec: FloatingSpec,
    facts: ServerFacts,
    intent: ServingIntent | None,
    probe: ProbeView | None,
    leases: LeaseTable,
    now: float,
) -> dict[str, Any]:
    plan = intent.plan if intent is not None else None
    active = leases.active(now)
    reserved = {r.mac for r in plan.reservations} if plan is not None else set()
    return {
        "mode": state.mode,
        "host": state.me,
        "role": "authority" if state.serving else "standby",
        "holder": state.holder or None,
        "since": state.since,
        "lease_expires": state.expires,
        "epoch": state.epoch,
        "reason": state.reason,
        "standbys": list(intent.standbys) if intent is not None else [],
        "waiting": intent.waiting if intent is not None and state.serving else None,
        "server": {
            "address": str(spec.address),
            "address6": str(spec.address6) if spec.address6 is not None else None,
            "mac": spec.mac,
            "device": spec.device,
        },
        "dnsmasq": {
            "pid": facts.dnsmasq_pid,
            "starts": facts.dnsmasq_starts,
            "reloads": facts.dnsmasq_reloads,
            "restarts": facts.dnsmasq_restarts,
            "last_exit": facts.dnsmasq_last_exit,
            "last_action": facts.last_action,
        },
        "leases": {
            "active": len(active),
            "reserved": sum(1 for lease in active if lease.mac in reserved),
            "dynamic": sum(1 for lease in active if lease.mac not in reserved),
        }
        if state.serving
        else None,
        "reservations": len(plan.reservations) if plan is not None else 0,
        "names": len(plan.records) if plan is not None else 0,
        "conflicts": [
            {"name": c.name, "instances": list(c.instances), "holder": c.holder} for c in plan.conflicts
        ]
        if plan is not None
        else [],
        "refused": [{"subject": r.subject, "reason": r.reason} for r in plan.refused]
        if plan is not None
        else [],
        "probe": _probe_section(probe, facts),
        "handover": _handover_section(facts) if state.mode == "lxd-cluster" else None,
    }


def _handover_section(facts: ServerFacts) -> dict[str, Any]:
    taken = facts.handed_over
    return {
        "taken": None
        if taken is None
        else {"leases": taken.count, "refused": list(taken.refused), "why_none": taken.why_none or None},
        "published": facts.handover_publishes,
    }


def _probe_section(probe: ProbeView | None, facts: ServerFacts) -> dict[str, Any] | None:
    if probe is None:
        return None
    return {
        "at": probe.result.at,
        "error": probe.result.error,
        "answering": list(probe.answering_hosts),
        "second_servers": [describe(s) for s in probe.others],
        "probes": facts.probes,
        "second_server_probes": facts.second_server_probes,
    }


def authority_problems(
    state: AuthorityState, facts: ServerFacts, intent: ServingIntent | None, probe: ProbeView | None
) -> tuple[str, ...]:
    problems = []
    if probe is not None and probe.others:
        servers = "; ".join(describe(s) for s in probe.others)
        problems.append(f"second DHCP server on the overlay: {servers}")
    if probe is not None and probe.doubled:
        problems.append(f"two hosts answer as the DHCP/DNS authority: {', '.join(probe.answering_hosts)}")
    if state.serving and intent is not None and intent.waiting:
        problems.append(f"elected DHCP/DNS authority but not serving: {intent.waiting}")
    if state.serving and facts.apply_error:
        problems.append(facts.apply_error)
    if not state.serving and state.known_holder is None:
        problems.append(f"no DHCP/DNS authority: {state.reason}")
    if state.mode == "lxd-cluster" and intent is not None and intent.member not in (None, state.me):
        problems.append(
            f"host.name {state.me} is not this host's LXD member name ({intent.member}): "
            "the election and the overlay would name different hosts"
        )
    if intent is not None and intent.plan is not None and intent.plan.refused:
        problems.append(
            f"DHCP/DNS refused {len(intent.plan.refused)} instance(s) or NIC(s); see authority.refused"
        )
    return tuple(problems)


def lease_rows(leases: LeaseTable, now: float) -> list[dict[str, Any]]:
    return [
        {
            "address": str(lease.address),
            "mac": lease.mac,
            "hostname": lease.hostname,
            "client_id": lease.client_id,
            "expires": lease.expires,
            "remaining": None if lease.expires is None else round(lease.expires - now, 1),
        }
        for lease in leases.active(now)
    ]


def authority_metrics(
    state: AuthorityState, facts: ServerFacts, leases: LeaseTable, now: float
) -> tuple[Metric, ...]:
    return (
        Metric("fabricd_authority_serving", float(state.serving), help="1 while this host serves DHCP/DNS"),
        Metric(
            "fabricd_authority_leases", float(len(leases.active(now))), help="active leases, on the authority"
        ),
        Metric(
            "fabricd_authority_dnsmasq_starts_total",
            float(facts.dnsmasq_starts),
            help="dnsmasq processes started",
            kind="counter",
        ),
        Metric(
            "fabricd_authority_second_server_probes_total",
            float(facts.second_server_probes),
            help="probes that saw a DHCP server other than the authority",
            kind="counter",
        ),
    )
