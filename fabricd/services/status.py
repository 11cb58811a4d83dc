"""The services part of the status: per service its backends and addresses, problems, metrics (pure).

Backends are shown with the state of their state machine (`drained` while drained), the last
check's result and reason; a backend that cannot be checked (stopped, on OVN, no address) is
`excluded` with the reason, and one of a service without a check is `up` while it runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from fabricd.agent.status import Metric
from fabricd.services.health import BackendHealth
from fabricd.services.model import Backend, BackendId, DrainState, Service, ServicePlan

NO_CHECK = "no check: a running backend serves"


def drain_dict(drains: DrainState) -> dict[str, Any]:
    return {"host": drains.host, "services": dict(drains.services)}


def _check_text(plan_service: Service) -> str | None:
    check = plan_service.config.check
    if check is None:
        return None
    where = "" if check.port is None else f" port {check.port}"
    counts = f"timeout {check.timeout:g} s, rise {check.rise}, fall {check.fall}"
    return f"{check.type}{where} every {check.interval:g} s ({counts})"


def backend_row(
    backend: Backend,
    has_check: bool,
    drained: bool,
    state: BackendHealth | None,
    now_monotonic: float,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "instance": backend.id.instance,
        "project": backend.id.project,
        "device": backend.device,
        "addresses": [str(a) for a in backend.addresses],
        "last_result": None,
    }
    if backend.problem:
        row.update(state="excluded", reason=backend.problem, since_seconds=None)
    elif not has_check:
        row.update(state="drained" if drained else "up", reason=NO_CHECK, since_seconds=None)
    elif state is None:
        row.update(state="drained" if drained else "rising", reason="not checked yet", since_seconds=None)
    else:
        row.update(
            state=state.state,
            reason=state.reason,
            since_seconds=round(max(0.0, now_monotonic - state.since), 3),
        )
        if state.last is not None:
            row["last_result"] = {
                "ok": state.last.ok,
                "reason": state.last.reason,
                "seconds_ago": round(max(0.0, now_monotonic - state.last.at), 3),
            }
    return row


def service_rows(
    plan: ServicePlan,
    health: Mapping[BackendId, BackendHealth],
    drains: DrainState,
    now_monotonic: float,
) -> list[dict[str, Any]]:
    rows = []
    for service in plan.services:
        drained_since = drains.since(service.name)
        has_check = service.config.check is not None
        backends = [
            backend_row(b, has_check, drained_since is not None, health.get(b.id), now_monotonic)
            for b in plan.backends
            if b.id.service == service.name
        ]
        addresses = [
            {"address": str(a.address), "state": a.state, "reason": a.reason}
            for a in plan.addresses
            if a.service == service.name
        ]
        rows.append(
            {
                "name": service.name,
                "source": service.source,
                "project": service.project,
                "check": _check_text(service),
                "drained_since": drained_since,
                "backends": backends,
                "addresses": addresses,
            }
        )
    return rows


def service_problems(plan: ServicePlan, rows: list[dict[str, Any]]) -> list[str]:
    """Refused definitions, OVN backends fabricd cannot route to, and services whose local backends
    are all unhealthy (a service with no backend on this host is no problem of this host's)."""
    problems = []
    for problem in plan.problems:
        who = f"instance {problem.project}/{problem.instance}" if problem.instance else "definition"
        problems.append(f"service {problem.service}: {who} refused: {problem.reason}")
    for row in rows:
        for backend in row["backends"]:
            if backend["state"] == "excluded" and "OVN" in backend["reason"]:
                problems.append(f"service {row['name']}: backend {backend['instance']} {backend['reason']}")
        if not row["backends"]:
            continue
        for address in row["addresses"]:
            if address["state"] == "withdrawn" and address["reason"].startswith("no healthy backend"):
                problems.append(f"service {row['name']}: {address['address']} withdrawn: {address['reason']}")
    return problems


def service_metrics(
    rows: list[dict[str, Any]],
    results: Mapping[tuple[BackendId, bool], int],
    changes: int,
    drains: DrainState,
) -> tuple[Metric, ...]:
    metrics: list[Metric] = []
    for row in rows:
        counts = Counter(b["state"] for b in row["backends"])
        for backend in row["backends"]:
            # "backend", not "instance": Prometheus gives every scraped sample its own `instance`.
            labels = (
                ("service", row["name"]),
                ("project", backend["project"]),
                ("backend", backend["instance"]),
            )
            metrics.append(
                Metric(
                    "fabricd_service_backend_up",
                    1.0 if backend["state"] in ("up", "falling") else 0.0,
                    labels,
                    "1 while the backend's checks say it is healthy (up or falling), drained or not",
                )
            )
        for state in ("rising", "up", "falling", "down", "drained", "excluded"):
            metrics.append(
                Metric(
                    "fabricd_service_backends",
                    float(counts.get(state, 0)),
                    (("service", row["name"]), ("state", state)),
                    "this host's backends of the service, by state",
                )
            )
        for address in row["addresses"]:
            metrics.append(
                Metric(
                    "fabricd_service_address_announced",
                    1.0 if address["state"] in ("announced", "degraded", "draining") else 0.0,
                    (("service", row["name"]), ("address", address["address"]), ("state", address["state"])),
                    "1 while this host announces the anycast address; the state label says how",
                )
            )
        metrics.append(
            Metric(
                "fabricd_service_drained",
                1.0 if row["drained_since"] is not None else 0.0,
                (("service", row["name"]),),
                "1 while the service is drained on this host (itself or the whole host)",
            )
        )
    for (backend, ok), count in sorted(results.items(), key=lambda item: (item[0][0], item[0][1])):
        metrics.append(
            Metric(
                "fabricd_service_checks_total",
                float(count),
                (
                    ("service", backend.service),
                    ("project", backend.project),
                    ("backend", backend.instance),
                    ("result", "pass" if ok else "fail"),
                ),
                "health checks run, by result",
                "counter",
            )
        )
    metrics.append(
        Metric(
            "fabricd_service_health_changes_total",
            float(changes),
            help="times a backend started or stopped serving",
            kind="counter",
        )
    )
    metrics.append(
        Metric(
            "fabricd_service_host_drained",
            1.0 if drains.host is not None else 0.0,
            help="1 while the whole host is drained",
        )
    )
    return tuple(metrics)
