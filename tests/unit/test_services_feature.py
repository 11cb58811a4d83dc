"""The services feature against a fake kernel: step order, the whole pass, drain commands, stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.loop import Observations, ReconcileLoop
from fabricd.config.loader import load_config_text
from fabricd.config.model import FabricConfig, HealthCheckConfig
from fabricd.frozen import FrozenMap
from fabricd.lxd.api import LXDRequestFailed
from fabricd.lxd.observer import LXD, LXDObservation
from fabricd.lxd.records import InstanceRecord, LXDSnapshot, NetworkRecord, NicRecord
from fabricd.routes.feature import RouteFeature
from fabricd.routes.model import IPAddress, IPNetwork, Origin, Route
from fabricd.services.feature import SERVICE_PLAN, ForwardApplying, ServicesFeature
from fabricd.services.health import CheckResult
from fabricd.services.host_routes import apply_route_steps
from fabricd.services.model import BackendId, ForwardStep, HostRoute, NetworkKey, NextHop, ServicePlan
from fabricd.services.ordering import ordered_steps

A, B, C = ip_network("10.250.0.1/32"), ip_network("10.250.0.2/32"), ip_network("fd00:250::3/128")
ORIGIN = Origin("service", "default", "web", "", "addresses")


def hop(address: str) -> NextHop:
    return NextHop(ip_address(address), "lxdbr0")


def route(prefix: IPNetwork, *hops: str) -> HostRoute:
    return HostRoute(prefix, tuple(sorted((hop(h) for h in hops), key=NextHop.key)))


def ad(prefix: IPNetwork, med: int = 10) -> Route:
    from fabricd.routes.model import RouteAttributes

    return Route(prefix, ip_address("192.0.2.11"), ORIGIN, RouteAttributes(med=med))


class FakeKernel:
    """Host routes in memory; every change is appended to `log` (shared with other fakes)."""

    def __init__(self, log: list[str] | None = None, failing: set[IPNetwork] | None = None) -> None:
        self.routes: dict[IPNetwork, HostRoute] = {}
        self.log = log if log is not None else []
        self.failing = failing or set()

    def read(self) -> tuple[HostRoute, ...]:
        return tuple(sorted(self.routes.values(), key=HostRoute.key))

    def _check(self, prefix: IPNetwork) -> None:
        if prefix in self.failing:
            raise OSError(f"cannot touch {prefix}")

    def install(self, new: HostRoute) -> None:
        self._check(new.prefix)
        assert new.prefix not in self.routes, "install over an existing route"
        self.routes[new.prefix] = new
        self.log.append(f"install {new.prefix}")

    def replace(self, new: HostRoute) -> None:
        self._check(new.prefix)
        self.routes[new.prefix] = new
        self.log.append(f"replace {new.prefix}")

    def remove(self, prefix: Any) -> None:
        self._check(prefix)
        self.routes.pop(prefix, None)
        self.log.append(f"remove {prefix}")


def test_a_route_still_announced_is_not_removed_and_installs_go_before_removes() -> None:
    kernel = FakeKernel()
    kernel.routes = {A: route(A, "10.0.0.1"), B: route(B, "10.0.0.1")}
    # A is still announced (the route applier has not withdrawn it): its route stays. B is not
    # announced any more: it goes, after C went in. A's route changes next hops: replaced.
    steps = ordered_steps(kernel.read(), [ad(A)], [route(C, "fd00::1")], [])
    outcome = apply_route_steps(steps, kernel)
    assert kernel.log == [f"install {C}", f"remove {B}"]
    assert outcome.skipped == [("route.remove", A, "waits for bgp.withdraw")]
    steps = ordered_steps(kernel.read(), [], [route(A, "10.0.0.1", "10.0.0.2"), route(C, "fd00::1")], [ad(A)])
    apply_route_steps(steps, kernel)
    assert kernel.log[-1] == f"replace {A}" and kernel.routes[A] == route(A, "10.0.0.1", "10.0.0.2")


def test_a_failing_route_fails_alone() -> None:
    kernel = FakeKernel(failing={A})
    steps = ordered_steps((), (), [route(A, "10.0.0.1"), route(B, "10.0.0.1")], [ad(A), ad(B)])
    outcome = apply_route_steps(steps, kernel)
    assert set(kernel.routes) == {B}
    assert [(kind, prefix) for kind, prefix, _ in outcome.failed] == [("route.install", A)]


prefixes = st.sampled_from([A, B, C])
hops = st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1"])
routes = st.dictionaries(prefixes, st.sets(hops, min_size=1, max_size=2)).map(
    lambda d: [route(p, *h) for p, h in d.items()]
)


@settings(max_examples=200)
@given(routes, routes, st.sets(prefixes))
def test_steps_reach_the_wanted_routes_and_never_remove_an_announced_one(
    have: list[HostRoute], want: list[HostRoute], announced: set[IPNetwork]
) -> None:
    kernel = FakeKernel()
    kernel.routes = {r.prefix: r for r in have}
    ads = [ad(p) for p in announced]
    apply_route_steps(ordered_steps(kernel.read(), ads, want, []), kernel)
    wanted = {r.prefix: r for r in want}
    for prefix in {r.prefix for r in have} | set(wanted):
        if prefix in wanted:
            assert set(kernel.routes[prefix].next_hops) == set(wanted[prefix].next_hops)
        elif prefix in announced:
            assert prefix in kernel.routes  # withdraw first: the route waits for it
        else:
            assert prefix not in kernel.routes


# The whole feature in reconcile passes: a fake LXD, the real route feature (no BGP speaker), a
# scripted checker and the fake kernel.

BRIDGE = NetworkRecord(
    "default",
    "lxdbr0",
    "bridge",
    True,
    FrozenMap({"ipv4.address": "10.0.0.1/24", "ipv6.address": "fd00::1/64"}),
)
WEB1 = InstanceRecord(
    "default",
    "web-1",
    "container",
    "Running",
    "none",
    (NicRecord("eth0", FrozenMap({"network": "lxdbr0"}), addresses=("10.0.0.11/24", "fd00::11/64")),),
    FrozenMap({}),
)


def config(tmp_path: Path) -> FabricConfig:
    return load_config_text(
        "host: {name: h1, underlay_address: 192.0.2.11, underlay_address6: '2001:db8::11'}\n"
        f"daemon: {{state_dir: {tmp_path}/state}}\n"
        "services:\n"
        "  - name: web\n"
        "    addresses: [10.250.0.80, 'fd00:250::80']\n"
        "    backends: {pattern: 'web-*'}\n"
        "    check: {type: tcp, port: 80, interval: 0.05, timeout: 0.05, rise: 1, fall: 1}\n"
        "    drain_delay: 0.3\n"
    )


class FakeLXD:
    key = LXD
    snapshot = LXDSnapshot("none", False, ("default",), (BRIDGE,), (WEB1,))

    async def observe(self) -> LXDObservation:
        return LXDObservation(self.snapshot, True, 0.0, None, None)


class SwitchChecker:
    def __init__(self) -> None:
        self.ok = True
        self.targets: list[IPAddress | None] = []

    async def check(
        self, check: HealthCheckConfig, backend: BackendId, target: IPAddress | None
    ) -> CheckResult:
        self.targets.append(target)
        await asyncio.sleep(0)
        return CheckResult(self.ok, "connected" if self.ok else "connection refused", 0.0)


class Stack:
    def __init__(self, tmp_path: Path) -> None:
        self.config = config(tmp_path)
        self.decisions = DecisionLog()
        self.triggers = 0
        self.log: list[str] = []
        self.kernel = FakeKernel(self.log)
        self.checker = SwitchChecker()
        self.routes = RouteFeature(self.config, tmp_path, self.decisions, self.trigger)
        self.services = ServicesFeature(
            self.config,
            self.decisions,
            self.trigger,
            self.routes,
            kernel=self.kernel,
            checker=self.checker,  # type: ignore[arg-type]
        )
        features = [self.routes, self.services]
        self.loop = ReconcileLoop(
            [FakeLXD(), *(o for f in features for o in f.observers)],
            [p for f in features for p in f.planners],
            [a for f in features for a in f.appliers],
            interval=1.0,
        )

    def trigger(self) -> None:
        self.triggers += 1

    def announced(self) -> set[str]:
        return {str(r.prefix) for r in self.routes.announced("service")}

    async def passes(self, n: int = 1) -> Observations:
        seen = Observations()
        for _ in range(n):
            seen = await self.loop.run_pass()
            assert self.loop.health() == (), self.loop.health()
        return seen


async def settle() -> None:
    await asyncio.sleep(0.12)  # a few 0.05 s checks


def test_a_pass_installs_first_announces_next_and_withdraws_before_removing(tmp_path: Path) -> None:
    async def main() -> None:
        stack = Stack(tmp_path)
        await stack.services.start()
        await stack.passes()  # checks start; nothing healthy yet
        assert stack.announced() == set() and stack.kernel.routes == {}
        await settle()
        await stack.passes()  # healthy: the host routes go in, not announced yet
        assert set(map(str, stack.kernel.routes)) == {"10.250.0.80/32", "fd00:250::80/128"}
        assert stack.announced() == set()
        assert stack.kernel.routes[ip_network("10.250.0.80/32")].next_hops == (hop("10.0.0.11"),)
        await stack.passes()  # the routes are seen installed: announced
        assert stack.announced() == {"10.250.0.80/32", "fd00:250::80/128"}
        assert ip_address("10.0.0.11") in stack.checker.targets  # one check per backend, IPv4
        # The check fails: in one pass the route applier withdraws, then the routes go.
        stack.checker.ok = False
        await settle()
        await stack.passes()
        assert stack.announced() == set() and stack.kernel.routes == {}
        status = await stack.services.status()
        web = status.sections["services"]["services"][0]
        assert [b["state"] for b in web["backends"]] == ["down"]
        assert any("service web" in p for p in status.problems)
        events = [(e["event"], e["reason"]) for e in stack.decisions.recent()]
        assert ("service.backend", "web:default/web-1 serves: connected") in events
        assert ("service.backend", "web:default/web-1 stopped serving: connection refused") in events
        assert ("service.route.install", "host route to 10.250.0.80/32 installed") in events
        assert ("service.route.remove", "host route to fd00:250::80/128 removed") in events
        await stack.services.stop()

    asyncio.run(main())


def test_drain_is_kept_on_disk_announces_gracefully_then_withdraws(tmp_path: Path) -> None:
    async def main() -> None:
        stack = Stack(tmp_path)
        await stack.services.start()
        await stack.passes()
        await settle()
        await stack.passes(2)
        assert stack.announced() == {"10.250.0.80/32", "fd00:250::80/128"}
        commands = stack.services.commands()
        with pytest.raises(ValueError, match="no service 'nope' here; known: web"):
            commands["drain"]({}, {"service": "nope"})
        reply = await commands["drain"]({}, {"service": "web"})  # type: ignore[misc]
        assert reply["drain"]["services"].keys() == {"web"}
        saved = json.loads((tmp_path / "state" / "services" / "drain.json").read_text())
        assert saved["services"].keys() == {"web"} and saved["host"] is None
        await stack.passes()
        drained = [r for r in stack.routes.announced("service")]
        assert {r.attributes.med for r in drained} == {4294967294}
        assert all("65535:0" in r.attributes.communities for r in drained)
        await asyncio.sleep(0.35)  # the drain delay
        await stack.passes()
        assert stack.announced() == set()
        assert len(stack.kernel.routes) == 2  # the host routes stay while drained
        # A new agent reads the drain back.
        again = ServicesFeature(stack.config, DecisionLog(), lambda: None, stack.routes, kernel=FakeKernel())
        await again.start()
        assert again.drains.since("web") is not None
        await again.stop()
        reply = await commands["undrain"]({}, {"service": "web"})  # type: ignore[misc]
        assert reply["drain"] == {"host": None, "services": {}}
        await stack.passes()
        assert stack.announced() == {"10.250.0.80/32", "fd00:250::80/128"}
        await stack.services.stop()

    asyncio.run(main())


def test_a_damaged_drain_file_drains_the_host_and_says_so(tmp_path: Path) -> None:
    async def main() -> None:
        stack = Stack(tmp_path)
        (tmp_path / "state" / "services").mkdir(parents=True)
        (tmp_path / "state" / "services" / "drain.json").write_text("{")
        await stack.services.start()
        assert stack.services.drains.host is not None
        status = await stack.services.status()
        assert any("drain file unreadable" in p for p in status.problems)
        await stack.services.stop()

    asyncio.run(main())


class RecordingRoutes:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log = log
        self.fail = fail
        self.running = True

    def announced(self, kind: str) -> tuple[Route, ...]:
        return ()

    async def withdraw(self, kind: str) -> None:
        # The route feature stops at the same time: ExaBGP exits a moment later either way.
        asyncio.get_running_loop().call_later(0.1, self._exit)
        if self.fail:
            raise ConnectionError("relay gone")
        self.log.append(f"withdraw {kind}")

    def _exit(self) -> None:
        self.log.append("speaker exited")
        self.running = False

    def speaker_running(self) -> bool:
        return self.running


@pytest.mark.parametrize("fail", [False, True])
def test_stop_withdraws_then_removes_the_host_routes(tmp_path: Path, fail: bool) -> None:
    async def main() -> None:
        log: list[str] = []
        kernel = FakeKernel(log)
        kernel.routes = {A: route(A, "10.0.0.1"), C: route(C, "fd00::1")}
        routes = RecordingRoutes(log, fail)
        feature = ServicesFeature(config(tmp_path), DecisionLog(), lambda: None, routes, kernel=kernel)
        await feature.start()
        await feature.stop()
        # The host routes go only once the speaker has gone (the withdraw sent, or the session closed).
        first = [] if fail else ["withdraw service"]
        assert log == [*first, "speaker exited", f"remove {A}", f"remove {C}"]

    asyncio.run(main())


def test_status_rows_and_metrics_cover_backends_addresses_and_checks(tmp_path: Path) -> None:
    async def main() -> None:
        stack = Stack(tmp_path)
        await stack.services.start()
        await stack.passes()
        await settle()
        await stack.passes(2)
        status = await stack.services.status()
        section: Mapping[str, Any] = status.sections["services"]
        (web,) = section["services"]
        assert {a["address"]: a["state"] for a in web["addresses"]} == {
            "10.250.0.80": "announced",
            "fd00:250::80": "announced",
        }
        (backend,) = web["backends"]
        assert backend["state"] == "up" and backend["last_result"]["ok"] is True
        names = {m.name for m in status.metrics}
        assert {
            "fabricd_service_backend_up",
            "fabricd_service_backends",
            "fabricd_service_address_announced",
            "fabricd_service_checks_total",
            "fabricd_service_health_changes_total",
        } <= names
        await stack.services.stop()

    asyncio.run(main())


def test_teardown_removes_the_host_routes_a_crashed_agent_left() -> None:
    from fabricd.cli.teardown import remove_service_routes

    kernel = FakeKernel()
    kernel.routes = {A: route(A, "10.0.0.1"), C: route(C, "fd00::1")}
    assert remove_service_routes(kernel) == [f"service host route {A}", f"service host route {C}"]
    assert kernel.routes == {} and remove_service_routes(kernel) == []


def test_ovn_backends_and_refused_definitions_are_problems_a_service_elsewhere_is_not() -> None:
    from fabricd.config.model import BackendSelector, ServiceConfig
    from fabricd.services.backends import OVN_UNROUTABLE
    from fabricd.services.model import AddressState, Backend, Service, ServicePlan, ServiceProblem
    from fabricd.services.model import DrainState as Drains
    from fabricd.services.status import service_problems, service_rows

    web = Service(ServiceConfig("web", (ip_address("10.250.0.80"),), BackendSelector(pattern="web-*")))
    far = Service(ServiceConfig("far", (ip_address("10.250.0.90"),), BackendSelector(pattern="far-*")))
    ovn = Backend(BackendId("web", "default", "web-2"), problem=OVN_UNROUTABLE.format(network="ovn0"))
    plan = ServicePlan(
        services=(far, web),
        backends=(ovn,),
        addresses=(
            AddressState("far", ip_address("10.250.0.90"), "withdrawn", "no backend on this host"),
            AddressState(
                "web", ip_address("10.250.0.80"), "withdrawn", "no healthy backend here (web-2 ...)"
            ),
        ),
        problems=(ServiceProblem("dns", "default", "d1", "disagrees with d2"),),
    )
    rows = service_rows(plan, {}, Drains(), 0.0)
    assert [b["state"] for r in rows for b in r["backends"]] == ["excluded"]
    problems = service_problems(plan, rows)
    assert problems[0] == "service dns: instance default/d1 refused: disagrees with d2"
    assert any("backend web-2 is on OVN network ovn0" in p for p in problems)
    assert any(p.startswith("service web: 10.250.0.80 withdrawn") for p in problems)
    assert not any("far" in p for p in problems)


class RecordingForwards:
    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def apply(self, step: ForwardStep) -> None:
        self.calls.append(f"{step.action} {step.listen} {step.target}".strip())
        if step.listen in self.fail:
            raise LXDRequestFailed("/networks/ovn0/forwards", 400, "listen address overlaps")


def test_forward_steps_go_to_lxd_and_a_failure_is_raised_after_the_others(tmp_path: Path) -> None:
    async def main() -> None:
        passes: list[int] = []
        writer = RecordingForwards({"10.250.0.54"})
        routes = RecordingRoutes([], False)
        feature = ServicesFeature(config(tmp_path), DecisionLog(), lambda: passes.append(1), routes,
                                  kernel=FakeKernel(), forwards=writer)  # fmt: skip
        network = NetworkKey("default", "ovn0")
        steps = (
            ForwardStep(network, "10.250.0.53", "update", "10.1.0.6"),
            ForwardStep(network, "10.250.0.54", "create", "10.1.0.5"),
            ForwardStep(network, "10.250.0.55", "delete"),
        )
        observed = Observations()
        observed.put(SERVICE_PLAN, ServicePlan(forward_steps=steps))
        applier = ForwardApplying(feature)
        with pytest.raises(RuntimeError, match=r"create forward 10\.250\.0\.54 on ovn0: .*overlaps"):
            await applier.apply(observed)
        assert writer.calls == [
            "update 10.250.0.53 10.1.0.6",
            "create 10.250.0.54 10.1.0.5",
            "delete 10.250.0.55",
        ]
        assert passes == [1]  # one more pass to read LXD again
        with pytest.raises(RuntimeError):
            await applier.apply(observed)
        assert passes == [1]  # the same steps again: no pass asked for, the loop does not spin

    asyncio.run(main())
