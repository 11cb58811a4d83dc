"""Anycast services as a feature: health, drain and host routes → a plan → checks, routes, BGP.

- observer: each backend's health (from the health runner), the drain state, the host routes
  fabricd has in the kernel (pyroute2, in a worker thread) and the wall-clock time;
- planner: `plan_services` (pure), and its `routes` as a contribution to ROUTE_PLANS, which the
  route applier merges with LXD's and hands the BGP speaker (next hop: this host);
- appliers: the health runner takes the plan's `checks` (one task per backend); the host-route
  applier takes the kernel to the plan's `host_routes` following `ordered_steps`, after the
  route applier in the same pass, so a withdraw has happened before the route it needs goes.

The planner announces an address only once the observer has seen its host route in the kernel,
so installing a route asks for another pass, which announces it. On stop: the health tasks end,
the service announcements are withdrawn, and only then are the host routes removed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import CommandHandler, Feature, FeatureStatus
from fabricd.agent.loop import Key, Observations
from fabricd.config.model import FabricConfig
from fabricd.config.reload import ConfigChange
from fabricd.log import get_logger
from fabricd.lxd.api import LXDApi
from fabricd.lxd.observer import LXD
from fabricd.routes.feature import ROUTE_PLANS
from fabricd.routes.model import IPNetwork, Route, RoutePlan
from fabricd.services.checkers import Checker
from fabricd.services.drain_store import DrainFileError, DrainStore, drained, undrained
from fabricd.services.health import BackendHealth, Change, Rules
from fabricd.services.host_routes import NetlinkRoutes, RouteOutcome, apply_route_steps
from fabricd.services.lxd_forwards import ForwardWriter, LXDForwards
from fabricd.services.model import BackendId, DrainState, ForwardStep, HostRoute, ServicePlan
from fabricd.services.ordering import ordered_steps
from fabricd.services.planner import ServiceInputs, plan_services
from fabricd.services.runner import CheckSpec, HealthRunner
from fabricd.services.status import drain_dict, service_metrics, service_problems, service_rows

log = get_logger("fabricd.services")

SERVICE_KIND = "service"  # the origin kind of service announcements in the route plans
STOP_WAIT = 5.0  # seconds a stop waits for the withdraw (or ExaBGP's exit) before removing routes
# After ExaBGP has gone, the routers' time to drop this host's paths before its host routes go
# (FRR took 0.08-0.12 s after the session closed in the anycast lab; a loaded router takes longer).
WITHDRAW_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class ServiceObservation:
    health: Mapping[BackendId, BackendHealth]
    drains: DrainState
    installed: tuple[HostRoute, ...]
    now: float  # wall clock: drains are kept in it


SERVICES_OBSERVED: Key[ServiceObservation] = Key("services-observed")
SERVICE_PLAN: Key[ServicePlan] = Key("services")


class HostRouteKernel(Protocol):
    def read(self) -> tuple[HostRoute, ...]: ...

    def install(self, route: HostRoute) -> None: ...

    def replace(self, route: HostRoute) -> None: ...

    def remove(self, prefix: IPNetwork) -> None: ...


class Announcements(Protocol):
    """What the services feature needs of the route feature."""

    def announced(self, kind: str) -> tuple[Route, ...]: ...

    async def withdraw(self, kind: str) -> None: ...

    def speaker_running(self) -> bool: ...


class ServiceObserver:
    key = SERVICES_OBSERVED

    def __init__(self, feature: ServicesFeature) -> None:
        self._feature = feature

    async def observe(self) -> ServiceObservation:
        installed = await asyncio.to_thread(self._feature.kernel.read)
        self._feature.installed = installed
        return ServiceObservation(self._feature.runner.health(), self._feature.drains, installed, time.time())


class ServicePlanning:
    key = SERVICE_PLAN
    inputs = (LXD, SERVICES_OBSERVED)

    def __init__(self, feature: ServicesFeature) -> None:
        self._feature = feature

    def plan(self, observed: Observations) -> ServicePlan | None:
        lxd = observed.get(LXD)
        seen = observed.get(SERVICES_OBSERVED)
        if lxd is None or lxd.snapshot is None or seen is None:
            return None  # nothing is known of the backends yet
        snapshot = lxd.snapshot
        return plan_services(
            ServiceInputs(
                self._feature.config,
                snapshot,
                snapshot.member,
                seen.health,
                seen.drains,
                seen.installed,
                seen.now,
            )
        )


class ServiceRoutePlanning:
    """The plan's announcements, as a contribution to the route feature's plans."""

    key = ROUTE_PLANS
    inputs = (SERVICE_PLAN,)

    def plan(self, observed: Observations) -> RoutePlan | None:
        plan = observed.get(SERVICE_PLAN)
        return None if plan is None else plan.routes


class HealthChecksApplying:
    name = "service-checks"
    inputs = (SERVICE_PLAN,)

    def __init__(self, feature: ServicesFeature) -> None:
        self._feature = feature

    async def apply(self, desired: Observations) -> None:
        plan = desired.get(SERVICE_PLAN)
        if plan is None:
            return
        self._feature.plan = plan
        configs = {s.name: s.config for s in plan.services}
        wanted = {}
        for check in plan.checks:
            config = configs[check.id.service]
            if config.check is not None:
                rules = Rules(config.check.rise, config.check.fall, config.flap)
                wanted[check.id] = CheckSpec(config.check, check.target, rules)
        self._feature.runner.set_checks(wanted)
        self._feature.wake_at(plan.wake_at)


class HostRouteApplying:
    """After the route applier: withdraws are done by then, so the routes they protect may go."""

    name = "service-routes"
    inputs = (SERVICE_PLAN, SERVICES_OBSERVED)

    def __init__(self, feature: ServicesFeature) -> None:
        self._feature = feature
        self._last_done: list[tuple[str, Any]] = []

    async def apply(self, desired: Observations) -> RouteOutcome | None:
        plan = desired.get(SERVICE_PLAN)
        seen = desired.get(SERVICES_OBSERVED)
        if plan is None or seen is None:
            return None
        feature = self._feature
        steps = ordered_steps(
            seen.installed, feature.routes.announced(SERVICE_KIND), plan.host_routes, plan.routes.routes
        )
        if not any(s.kind.startswith("route.") for s in steps.steps):
            self._last_done = []
            return None
        outcome = await asyncio.to_thread(apply_route_steps, steps, feature.kernel)
        for kind, prefix in outcome.done:
            done = {"route.install": "installed", "route.replace": "replaced (next hops changed)"}
            why = f"host route to {prefix} {done.get(kind, 'removed')}"
            feature.decisions.record(f"service.{kind}", str(prefix), why)
            log.info("service host route", event_kind=f"service.{kind}", prefix=str(prefix))
        # The next pass sees the kernel as it is now (and announces what went in). Not twice for
        # the same steps: a step that "succeeds" without effect must not spin the loop.
        if outcome.changed and outcome.done != self._last_done:
            feature.on_change()
        self._last_done = list(outcome.done)
        if outcome.failed:
            raise RuntimeError("; ".join(f"{kind} {prefix}: {why}" for kind, prefix, why in outcome.failed))
        return outcome


class ForwardApplying:
    """The managing member's LXD forwards for OVN services. No announcement here: the route
    planner announces a forward once LXD lists it, with the OVN router's uplink address."""

    name = "service-forwards"
    inputs = (SERVICE_PLAN,)

    def __init__(self, feature: ServicesFeature) -> None:
        self._feature = feature
        self._last_done: list[ForwardStep] = []

    async def apply(self, desired: Observations) -> None:
        plan = desired.get(SERVICE_PLAN)
        if plan is None or not plan.forward_steps:
            self._last_done = []
            return
        feature = self._feature
        failed = []
        done = []
        for step in plan.forward_steps:
            try:
                await asyncio.to_thread(feature.forwards.apply, step)
            except Exception as exc:
                failed.append(f"{step.action} forward {step.listen} on {step.network.network}: {exc}")
                continue
            done.append(step)
            why = f"forward {step.listen} on {step.network.network}: {step.action} {step.target}".rstrip()
            feature.decisions.record(f"service.forward.{step.action}", step.listen, why)
            log.info("service forward", event_kind=f"service.forward.{step.action}", listen=step.listen,
                     network=step.network.network, target=step.target)  # fmt: skip
        # The next pass reads LXD again (and the route planner announces what LXD lists). Not twice
        # for the same steps: a step that "succeeds" without effect must not spin the loop.
        if done and done != self._last_done:
            feature.on_change()
        self._last_done = done
        if failed:
            raise RuntimeError("; ".join(failed))


class ServicesFeature(Feature):
    name = "services"

    def __init__(
        self,
        config: FabricConfig,
        decisions: DecisionLog,
        on_change: Callable[[], None],
        routes: Announcements,
        *,
        kernel: HostRouteKernel | None = None,
        checker: Checker | None = None,
        forwards: ForwardWriter | None = None,
    ) -> None:
        self.config = config
        self.decisions = decisions
        self.on_change = on_change
        self.routes = routes
        self.kernel: HostRouteKernel = kernel if kernel is not None else NetlinkRoutes()
        self.store = DrainStore(config.daemon.state_dir / "services")
        self.drains = DrainState()
        self.drain_error: str | None = None
        self._exec_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="service-exec")
        api = LXDApi(config.lxd)
        self.forwards: ForwardWriter = forwards if forwards is not None else LXDForwards(api)
        if checker is None:
            checker = Checker(api.exec_in_instance, self._exec_pool)
        self.runner = HealthRunner(checker, on_change, on_serving=self._serving_changed)
        self.plan = ServicePlan()
        self.installed: tuple[HostRoute, ...] = ()
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self._drain_lock = asyncio.Lock()
        self.observers = (ServiceObserver(self),)
        self.planners = (ServicePlanning(self), ServiceRoutePlanning())
        self.appliers = (HealthChecksApplying(self), ForwardApplying(self), HostRouteApplying(self))

    def _serving_changed(self, backend: BackendId, change: Change, health: BackendHealth) -> None:
        verb = "serves" if change.serving else "stopped serving"
        self.decisions.record(
            "service.backend", str(backend), f"{backend} {verb}: {change.reason}", state=health.state
        )

    async def start(self) -> None:
        try:
            self.drains = await asyncio.to_thread(self.store.load)
        except (DrainFileError, OSError) as exc:
            # Never start undrained on a damaged file: drain the whole host (gracefully) and say
            # why; `fabricctl undrain` writes a good file again.
            self.drain_error = str(exc)
            self.drains = DrainState(host=time.time())
            log.error("cannot read the drain file; draining the host", reason=self.drain_error)
        self.runner.set_drained(lambda service: self.drains.since(service) is not None)

    async def reconfigure(self, config: FabricConfig, change: ConfigChange) -> None:
        self.config = config  # only live keys (routes:) differ; the next pass plans with them

    def wake_at(self, when: float | None) -> None:
        """Ask for a pass at wall-clock `when` (a drain delay running out)."""
        if when == self._wake_at:
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at, self._wake = when, None
        if when is not None:
            delay = max(0.0, when - time.time()) + 0.01
            self._wake = asyncio.get_running_loop().call_later(delay, self.on_change)

    def commands(self) -> Mapping[str, CommandHandler]:
        return {
            "drain": lambda status, args: self._drain_command(args, drain=True),
            "undrain": lambda status, args: self._drain_command(args, drain=False),
        }

    def _drain_command(self, args: Mapping[str, Any], *, drain: bool) -> Awaitable[Mapping[str, Any]]:
        service = args.get("service")
        if service is not None and not isinstance(service, str):
            raise ValueError("args.service must be a service name")
        known = sorted(s.name for s in self.plan.services)
        if service is not None and service not in known and service not in self.drains.services:
            raise ValueError(f"no service {service!r} here; known: {', '.join(known) or 'none'}")
        return self._set_drain(service, drain)

    async def _set_drain(self, service: str | None, drain: bool) -> Mapping[str, Any]:
        async with self._drain_lock:
            now = time.time()
            new = drained(self.drains, service, now) if drain else undrained(self.drains, service)
            await asyncio.to_thread(self.store.save, new)  # on disk first: it survives a restart
            self.drains, self.drain_error = new, None
        self.runner.set_drained(lambda name: self.drains.since(name) is not None)
        what = f"service {service}" if service else "host"
        verb = "drained" if drain else "undrained"
        self.decisions.record(f"service.{verb}", what, f"{what} {verb} by fabricctl")
        log.info(f"{what} {verb}", event_kind=f"service.{verb}", service=service)
        self.on_change()
        note = ""
        if not drain and service is not None and new.host is not None:
            note = "the whole host is still drained (fabricctl undrain without --service ends that)"
        return {"drain": drain_dict(new), "changed": what, "note": note}

    async def stop(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
        await self.runner.stop()
        self._exec_pool.shutdown(wait=False, cancel_futures=True)
        try:
            await asyncio.wait_for(self.routes.withdraw(SERVICE_KIND), STOP_WAIT)
        except Exception as exc:  # ExaBGP going away withdraws too: the wait below covers it
            log.warning("service withdraw at stop failed; waiting for the speaker to end", reason=repr(exc))
        # Withdraw before the host routes go: the withdraw (or, as the speaker stops at the same
        # time, the closed session) must reach the routers and be acted on first. Handing ExaBGP the
        # withdraw is not enough (lab: it was never sent, the session closed with it unsent).
        deadline = time.monotonic() + STOP_WAIT
        while self.routes.speaker_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.installed:
            await asyncio.sleep(WITHDRAW_GRACE)
        try:
            installed = await asyncio.to_thread(self.kernel.read)
            for route in installed:
                await asyncio.to_thread(self.kernel.remove, route.prefix)
                log.info("service host route removed at stop", prefix=str(route.prefix))
        except Exception as exc:
            log.error("cannot remove the service host routes", reason=repr(exc))

    async def status(self) -> FeatureStatus:
        plan = self.plan
        health = self.runner.health()
        rows = service_rows(plan, health, self.drains, time.monotonic())
        problems = service_problems(plan, rows)
        if self.drain_error is not None:
            problems.append(f"services: drain file unreadable, host drained: {self.drain_error}")
        section = {
            "drain": drain_dict(self.drains),
            "services": rows,
            "problems": [
                {"service": p.service, "project": p.project, "instance": p.instance, "reason": p.reason}
                for p in plan.problems
            ],
            "host_routes": [
                {"prefix": str(r.prefix), "next_hops": [f"{h.address} dev {h.device}" for h in r.next_hops]}
                for r in self.installed
            ],
        }
        metrics = service_metrics(rows, self.runner.results, self.runner.changes, self.drains)
        return FeatureStatus(sections={"services": section}, problems=tuple(problems), metrics=metrics)
