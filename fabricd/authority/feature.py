"""The DHCP/DNS authority as a feature: election → plan → floating address and dnsmasq.

- Observer: the election's current state (`AUTHORITY`), read from memory; the election itself
  runs as a background task (cluster: lease in LXD; standalone: priority list and probe).
- Planner: dnsmasq's files from the LXD snapshot, on every host (so every host's status lists
  conflicts and refusals), and whether this host serves.
- Applier: claims the address and serves, or withdraws. Fencing does not wait for a pass: the
  election calls `Serving.withdraw` directly.
The overlay planner reads `AUTHORITY` too, so the static FDB entry for the server MAC follows
the holder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fabricd.agent.feature import CommandHandler, Feature, FeatureStatus
from fabricd.agent.loop import Key, Observations
from fabricd.authority.dnsmasq import DnsmasqServer, LeaseTable, read_leases
from fabricd.authority.dnsmasq_plan import DnsmasqPlan, dnsmasq_directory, plan_dnsmasq
from fabricd.authority.election import Elector
from fabricd.authority.floating import FloatingAddress, FloatingError, FloatingSpec
from fabricd.authority.handover import HandoverStore
from fabricd.authority.handover_runner import LeaseHandover
from fabricd.authority.lease_store import LeaseStore
from fabricd.authority.prober import Prober
from fabricd.authority.runner import ElectionRunner
from fabricd.authority.serving import Serving
from fabricd.authority.standalone import StandaloneElector, busy_probes, rank_probes
from fabricd.authority.standalone_runner import StandaloneRunner
from fabricd.authority.state import AUTHORITY, AuthorityState
from fabricd.authority.status import (
    ServerFacts,
    authority_metrics,
    authority_problems,
    authority_section,
    lease_rows,
)
from fabricd.config.model import FabricConfig
from fabricd.log import get_logger
from fabricd.lxd.api import LXDApi
from fabricd.lxd.members import MEMBERS
from fabricd.lxd.observer import LXD
from fabricd.overlay.feature import OVERLAY

log = get_logger("fabricd.authority")

# The lease store's LXD calls: short, so a hung LXD makes a renewal late, never the fence.
STORE_TIMEOUT = (1.0, 1.0)
STOP_GRACE = 0.5


class Election(Protocol):
    mode: str

    def serving(self) -> bool: ...

    def state(self) -> AuthorityState: ...


@dataclass(frozen=True, slots=True)
class ServingIntent:
    serve: bool
    plan: DnsmasqPlan | None  # None until LXD was read (and the overlay planned)
    waiting: str | None = None  # why this host, elected, cannot serve yet
    standbys: tuple[str, ...] = ()
    member: str | None = None  # this host's LXD member name, as LXD says


SERVING: Key[ServingIntent] = Key("authority-serving")


class AuthorityObserver:
    key = AUTHORITY

    def __init__(self, election: Election) -> None:
        self._election = election

    async def observe(self) -> AuthorityState:
        return self._election.state()


class AuthorityPlanning:
    """dnsmasq's files from LXD and the overlay MTU; re-planned only when either changed."""

    key = SERVING
    inputs = (AUTHORITY, OVERLAY)

    def __init__(self, config: FabricConfig, spec: FloatingSpec) -> None:
        self._config = config
        self._spec = spec
        self._cache: tuple[object, int, DnsmasqPlan] | None = None

    def plan(self, observed: Observations) -> ServingIntent | None:
        state = observed.get(AUTHORITY)
        overlay = observed.get(OVERLAY)
        lxd = observed.get(LXD)
        snapshot = lxd.snapshot if lxd is not None else None
        if state is None or overlay is None:
            return None
        standbys = self._standbys(state, observed)
        if snapshot is None:
            return ServingIntent(state.serving, None, "LXD has not been read yet", standbys)
        mtu = overlay.plan.mtu
        if self._cache is None or self._cache[0] is not snapshot or self._cache[1] != mtu:
            plan = plan_dnsmasq(snapshot, self._config, interface=self._spec.device, mtu=mtu)
            self._cache = (snapshot, mtu, plan)
        return ServingIntent(state.serving, self._cache[2], None, standbys, snapshot.member)

    def _standbys(self, state: AuthorityState, observed: Observations) -> tuple[str, ...]:
        if state.mode == "standalone":
            hosts: Sequence[str] = self._config.dhcp.priority
        else:
            members = observed.get(MEMBERS)
            hosts = members.online() if members is not None else ()
        return tuple(h for h in hosts if h != state.known_holder)


class AuthorityApplying:
    name = "authority"
    inputs = (SERVING,)

    def __init__(self, serving: Serving) -> None:
        self._serving = serving
        self.intent: ServingIntent | None = None
        self.error: str | None = None

    async def apply(self, desired: Observations) -> None:
        intent = desired.get(SERVING)
        if intent is None:
            return
        self.intent = intent
        if not intent.serve:
            self.error = None
            await self._serving.withdraw("not the authority")
            return
        if intent.plan is None:
            return  # elected, but nothing to serve from yet: the status says why
        try:
            await self._serving.serve(intent.plan)
        except FloatingError as failure:
            self.error = f"cannot claim the server address: {failure}"
            raise
        self.error = None


class AuthorityFeature(Feature):
    name = "authority"

    def __init__(self, config: FabricConfig, on_change: Callable[[], None]) -> None:
        dhcp = config.dhcp
        self.config = config
        self.spec = FloatingSpec.from_config(config, dhcp.server_address6)
        # A short grace: dnsmasq busy in a ping check ignores SIGTERM for up to 3 s, which held a
        # clean handover back to the standby's 2 s expiry (bench.authority); its lease file is
        # written on every change, so SIGKILL loses nothing.
        self.dnsmasq = DnsmasqServer(dnsmasq_directory(config), stop_grace=STOP_GRACE)
        self.election: ElectionRunner | StandaloneRunner
        on_probe = None
        self.handover: LeaseHandover | None = None
        if dhcp.election == "lxd-cluster":
            store = LeaseStore(LXDApi(config.lxd, timeout=STORE_TIMEOUT))
            published = HandoverStore(LXDApi(config.lxd, timeout=STORE_TIMEOUT))
            handover = LeaseHandover(
                published,
                self.dnsmasq,
                self.spec.address.network,
                lambda: self.election.serving(),
                lambda: self.election.state().epoch or 0,
            )
            self.election = ElectionRunner(
                Elector(config.host.name),
                store,
                on_change,
                self._fence,
                on_take=handover.on_take,
                on_release=handover.on_release,
            )
            self.handover = handover
        else:
            interval = dhcp.probe_interval
            elector = StandaloneElector(
                config.host.name,
                dhcp.priority,
                dhcp.silent_probes,
                rank_probes(interval),
                busy_probes(interval),
            )
            self.election = StandaloneRunner(elector, on_change, self._withdraw)
            on_probe = self.election.on_probe
        self.serving = Serving(FloatingAddress(self.spec), self.dnsmasq, self.election.serving)
        self.prober = Prober(self.spec, dhcp.probe_interval, on_probe, on_news=on_change)
        self.applying = AuthorityApplying(self.serving)
        self.observers = (AuthorityObserver(self.election),)
        self.planners = (AuthorityPlanning(config, self.spec),)
        self.appliers = (self.applying,)

    async def _fence(self) -> None:
        await self.serving.withdraw("fenced: the lease was not renewed in time")

    async def _withdraw(self, why: str) -> None:
        await self.serving.withdraw(why)

    def background(self, stop: asyncio.Event) -> Sequence[Awaitable[None]]:
        tasks: list[Awaitable[None]] = [self.prober.run(stop)]
        if isinstance(self.election, ElectionRunner):
            tasks.append(self.election.run(stop))
        if self.handover is not None:
            tasks.append(self.handover.run(stop))
        return tasks

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"leases": lambda status, args: {"leases": status["leases"], "authority": status["authority"]}}

    def dead(self) -> str | None:
        return self.dnsmasq.dead()

    async def stop(self) -> None:
        # Cluster mode: the election task then frees the record, so a standby takes over at once.
        await self.serving.withdraw("fabricd is stopping")

    def facts(self) -> ServerFacts:
        dnsmasq = self.dnsmasq
        return ServerFacts(
            dnsmasq.pid,
            dnsmasq.starts,
            dnsmasq.reloads,
            dnsmasq.restarts,
            dnsmasq.last_exit,
            self.serving.last_action,
            self.applying.error,
            self.prober.probes,
            self.prober.second_servers_seen,
            self.handover.last_taken if self.handover is not None else None,
            self.handover.publishes if self.handover is not None else 0,
        )

    async def status(self) -> FeatureStatus:
        state = self.election.state()
        leases = LeaseTable()
        if self.dnsmasq.serving:
            leases = await asyncio.to_thread(read_leases, self.dnsmasq.lease_file)
        now, facts, intent, probe = time.time(), self.facts(), self.applying.intent, self.prober.last
        return FeatureStatus(
            sections={
                "authority": authority_section(state, self.spec, facts, intent, probe, leases, now),
                "leases": lease_rows(leases, now),
            },
            problems=authority_problems(state, facts, intent, probe),
            metrics=authority_metrics(state, facts, leases, now),
        )
