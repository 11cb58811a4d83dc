"""The BGP speaker fabricd's route applier talks to, and its ExaBGP implementation.

The applier hands over the whole desired set every time (like MetalLB's session.Set); the speaker
sends only the difference, and finds it at the cost of what changed: the very same set costs
nothing, one changed route costs one route's work. Nothing holds the event loop for long (its
heartbeats keep ExaBGP alive): big sends, such as the full set for a new ExaBGP, yield between
slices. A route counts as announced when ExaBGP acked it for a peer whose
session is established. When ExaBGP goes away the speaker forgets everything it sent, and the next
ExaBGP gets the full set again as soon as its relay connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fabricd.bgp import commands as cmd
from fabricd.bgp.exabgp_config import exabgp_environment, render_config
from fabricd.bgp.exabgp_main import PATCHED_SPEED, UNPATCHED_SPEED
from fabricd.bgp.peer_state import Ack, NeighborChange, PeerStatus, PeerTable, Shutdown, parse_line
from fabricd.bgp.relay import DEFAULT_TIMEOUT
from fabricd.bgp.supervisor import Supervisor
from fabricd.config.model import BGPConfig, HostConfig, IPAddress
from fabricd.config.reload import PeerChanges
from fabricd.log import get_logger
from fabricd.routes.model import IPNetwork, Route

log = get_logger("fabricd.bgp.speaker")

# announced: every established peer it is meant for acknowledged it as it is now; partial: some
# did; pending: none did (yet), or no session it is meant for is up.
RouteStatus = Literal["announced", "partial", "pending"]
PeerRouteState = Literal["announced", "pending", "session down"]
HEARTBEAT_LINE = b"#heartbeat\n"
HEARTBEAT_INTERVAL = 0.5
SLICE_S = 0.02  # the longest stretch of work between two chances for other tasks to run
# ExaBGP 5.0.15 drops a SIGUSR1 that arrives while it still has updates queued for a peer (reactor
# loop: `if self._pending_adjribout(): continue` after rearming), without a word. So a reload is
# signalled again until ExaBGP reports a session it touched; re-reading an unchanged file is a no-op.
RELOAD_CONFIRM_INTERVAL = 2.0
RELOAD_CONFIRM_TRIES = 10


class Speaker(Protocol):
    async def start(self) -> None: ...

    async def set_routes(self, routes: Collection[Route]) -> None:
        """The complete desired set; what is not in it gets withdrawn."""

    def peers(self) -> tuple[PeerStatus, ...]: ...

    def route_states(self) -> Mapping[Route, RouteStatus]: ...

    async def stop(self) -> None:
        """Close the sessions; peers withdraw everything at once (nothing is withdrawn first)."""


_wire = cmd.wire


class _Pacer:
    """Lets other tasks (the heartbeat first) run once a stretch of work has taken SLICE_S."""

    def __init__(self, budget: float = SLICE_S) -> None:
        self.budget = budget
        self.since = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self.since >= self.budget:
            await asyncio.sleep(0)
            self.since = time.perf_counter()


@dataclass(frozen=True, slots=True)
class SpeakerView:
    """What the speaker knew at one moment, copied so it can be read off the event loop."""

    peers: tuple[PeerStatus, ...]
    routes: Mapping[IPNetwork, Route]  # the chosen route per prefix
    # Per configured peer, in config order: (name, established, prefixes meant for it, acked).
    sessions: tuple[tuple[str, bool, frozenset[IPNetwork], Mapping[IPNetwork, Route]], ...]
    unconfirmed: tuple[Route, ...]  # handed over but never sent: duplicates, invalid
    version: int  # changes whenever anything above may have changed

    def per_peer(self) -> dict[Route, tuple[tuple[str, PeerRouteState], ...]]:
        """Where each route really went: per peer it is meant for (family, families)."""
        found: dict[Route, tuple[tuple[str, PeerRouteState], ...]] = {}
        for prefix, route in self.routes.items():
            wire = _wire(route)
            states: list[tuple[str, PeerRouteState]] = []
            for name, up, meant, acked in self.sessions:
                if prefix not in meant:
                    continue
                if not up:
                    states.append((name, "session down"))
                else:
                    states.append((name, "announced" if _wire(acked.get(prefix)) == wire else "pending"))
            found[route] = tuple(states)
        for route in self.unconfirmed:
            found[route] = ()
        return found

    def route_states(self) -> dict[Route, RouteStatus]:
        return {route: overall(states) for route, states in self.per_peer().items()}


def overall(states: tuple[tuple[str, PeerRouteState], ...]) -> RouteStatus:
    """Announced only where it really went: every established peer it is meant for has it."""
    up = [state for _, state in states if state != "session down"]
    done = sum(state == "announced" for state in up)
    if up and done == len(up):
        return "announced"
    return "partial" if done else "pending"


class ExaBGPSpeaker:
    def __init__(
        self,
        bgp: BGPConfig,
        host: HostConfig,
        state_dir: Path,
        *,
        watchdog_timeout: float = DEFAULT_TIMEOUT,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        python: str = sys.executable,
        exabgp_log_level: str = "WARNING",  # INFO logs every route; fabricd logs sessions itself
    ) -> None:
        self.bgp, self.state_dir = bgp, state_dir
        self.heartbeat_interval = heartbeat_interval
        self.host = host
        self.config_file = state_dir / "exabgp.conf"
        socket_path = state_dir / "relay.sock"
        relay = [python, "-m", "fabricd.bgp.relay", str(socket_path), "--timeout", f"{watchdog_timeout:g}"]
        self._relay_argv = relay
        self.config_text = render_config(bgp, host, relay)  # fails here, before anything runs
        if bgp.exabgp is None:  # the ExaBGP installed with fabricd, its reactor patched to idle
            exabgp, speed = [python, "-m", "fabricd.bgp.exabgp_main"], PATCHED_SPEED
        else:
            exabgp, speed = [str(bgp.exabgp)], UNPATCHED_SPEED
        # Inherited exabgp_* settings must not override ours.
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith(("exabgp_", "exabgp."))}
        env |= exabgp_environment(state_dir / "exabgp.log", exabgp_log_level, speed)
        self.supervisor = Supervisor(
            [*exabgp, "server", str(self.config_file)],
            env,
            state_dir / "exabgp.out",
            socket_path,
            self._session,
            logs=[state_dir / "exabgp.log"],
        )
        self._addresses = tuple(p.address for p in bgp.peers)
        self._table = PeerTable(bgp.peers)
        self._desired = cmd.DesiredState(bgp.peers)
        self._input: Collection[Route] | None = None  # the last set handed over, when immutable
        self._dirty: set[IPNetwork] = set()  # prefixes to compare again (a refused withdraw)
        self._sent: dict[IPAddress, dict[IPNetwork, Route]] = {a: {} for a in self._addresses}
        self._acked: dict[IPAddress, dict[IPNetwork, Route]] = {a: {} for a in self._addresses}
        self._inflight: deque[cmd.Command] = deque()
        # Peers a reload added or changed: their routes wait until ExaBGP reports their session
        # established, which proves it runs the new config (a command for a neighbor it does not
        # know yet fails; one sent to a changed peer's old session may be lost with it).
        self._awaiting: set[IPAddress] = set()
        # Peers a reload started or ended that ExaBGP has said nothing about since, and the task
        # that signals it again meanwhile.
        self._unconfirmed: set[IPAddress] = set()
        self._stale: dict[IPAddress, dict[IPNetwork, Route]] = {}
        self._resend: set[IPAddress] = set()  # restarted sessions due their whole set
        self._confirming: asyncio.Task[None] | None = None
        self.reload_confirm = (RELOAD_CONFIRM_INTERVAL, RELOAD_CONFIRM_TRIES)
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.version = 0  # bumped whenever the status could read something new
        # Told when sessions change or every command sent was acked (the status is worth rebuilding).
        self.on_change: Callable[[], None] | None = None
        self.on_peer: Callable[[PeerStatus, str | None], None] | None = None

    @property
    def exabgp_pid(self) -> int | None:
        return self.supervisor.pid

    async def start(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)  # holds the MD5 passwords and the relay socket
        self.config_file.write_text(self.config_text)
        self.config_file.chmod(0o600)
        await self.supervisor.start()

    async def stop(self) -> None:
        if self._confirming is not None:
            self._confirming.cancel()
        await self.supervisor.stop()

    async def reconfigure(self, bgp: BGPConfig, peers: PeerChanges) -> None:
        """New peers (only `bgp.peers` differs): ExaBGP re-reads its config on SIGUSR1 and starts or
        ends only the sessions of added, removed and changed peers; the others keep running, with
        their announcements. Raises before changing anything when the file cannot be written."""
        text = render_config(bgp, self.host, self._relay_argv)
        async with self._lock:
            await asyncio.to_thread(_write_private, self.config_file, text)
            self.bgp, self.config_text = bgp, text
            restarted = set(peers.restarted())
            # A removed peer with a session gets a "down" when ExaBGP drops it; an idle one gets nothing.
            ending = {p.address for p in peers.removed if self._table.state(p.address) != "idle"}
            self._addresses = tuple(p.address for p in bgp.peers)
            self._table.reconfigure(bgp.peers, restarted)
            # What a changed peer had: ExaBGP may keep it (its RIB is kept by local and peer address,
            # AS and router ID) and send it on the new session, so what is no longer wanted by
            # then gets withdrawn explicitly.
            self._stale = {a: dict(self._sent[a]) for a in restarted if a in self._sent}
            for old in (self._sent, self._acked):
                kept = {a: routes for a, routes in old.items() if a in self._addresses and a not in restarted}
                old.clear()
                old.update({a: kept.get(a, {}) for a in self._addresses})
            self._awaiting = (self._awaiting & set(self._addresses)) | restarted
            # The desired set per peer is rebuilt from the next set handed over; every prefix sent
            # anywhere is compared again, and kept peers, whose routes are unchanged, get nothing.
            for sent in self._sent.values():
                self._dirty.update(sent)
            self._desired = cmd.DesiredState(bgp.peers)
            self._input = None
            self.version += 1
            self._unconfirmed = restarted | ending
            pid = self.supervisor.pid
            # None running: the next ExaBGP reads the new file anyway. One still starting defers
            # the signal until it is ready, or dies of it and is restarted on the new file.
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
                if self._unconfirmed and (self._confirming is None or self._confirming.done()):
                    self._confirming = asyncio.create_task(self._confirm_reload(pid), name="exabgp-reload")
        log.info(
            "bgp peers reconfigured",
            added=[p.name for p in peers.added],
            removed=[p.name for p in peers.removed],
            changed=[p.name for p in peers.changed],
            exabgp_pid=pid,
        )
        self._notify()

    def dead(self) -> str | None:
        return self.supervisor.child.dead()

    async def _confirm_reload(self, pid: int) -> None:
        interval, tries = self.reload_confirm
        for attempt in range(1, tries + 1):
            await asyncio.sleep(interval)
            if not self._unconfirmed or self.supervisor.pid != pid:
                return  # confirmed, or that ExaBGP is gone and the next one reads the new file
            log.warning(
                "exabgp has not taken the new peers yet, signalling it again",
                waiting_for=sorted(str(a) for a in self._unconfirmed),
                attempt=attempt,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        if self._unconfirmed:  # a new peer that never answers looks the same: say so, not more
            log.warning(
                "exabgp reported nothing about these peers since the reload",
                peers=sorted(str(a) for a in self._unconfirmed),
            )

    async def set_routes(self, routes: Collection[Route]) -> None:
        if routes is self._input and not self._dirty:
            return  # the very same (immutable) set: nothing can have changed
        async with self._lock:
            changed = self._dirty
            self._dirty = set()
            pace = _Pacer()
            try:
                for _ in self._desired.update(routes, changed):
                    await pace()
            except BaseException:  # cancelled half-way: start again from nothing next time
                self._desired = cmd.DesiredState(self.bgp.peers)
                self._input = None
                self._dirty |= changed
                for sent in self._sent.values():  # withdrawn if the next set lacks them
                    self._dirty.update(sent)
                raise
            self._input = routes if isinstance(routes, (tuple, frozenset)) else None
            self.version += 1
            self._log_problems()
            try:
                await self._sync_locked(changed, pace)
            except BaseException:  # what was not sent yet must be compared again next time
                self._dirty |= changed
                raise

    def peers(self) -> tuple[PeerStatus, ...]:
        return self._table.snapshot({a: len(r) for a, r in self._acked.items()})

    def route_states(self) -> Mapping[Route, RouteStatus]:
        return self.state_view().route_states()

    def state_view(self) -> SpeakerView:
        """A copy of what the status needs, taken on the event loop in a few milliseconds even for
        50,000 routes; the per-route work (`route_states`) then runs wherever the caller likes."""
        desired = self._desired
        names = {p.address: p.name for p in self.bgp.peers}
        return SpeakerView(
            peers=self.peers(),
            routes=dict(desired.routes),
            sessions=tuple(
                (
                    names[peer],
                    self._table.established(peer),
                    frozenset(desired.by_peer.get(peer, ())),
                    dict(self._acked[peer]) if self._table.established(peer) else {},
                )
                for peer in self._addresses
            ),
            unconfirmed=tuple(r for rs in desired.duplicates.values() for r in rs) + tuple(desired.invalid),
            version=self.version,
        )

    def _log_problems(self) -> None:
        # set_routes runs every reconcile pass: each problem is said once, when it appears.
        desired = self._desired
        for route in desired.new_duplicates:
            kept = desired.routes[route.prefix]
            log.error(
                "route dropped",
                prefix=str(route.prefix),
                next_hop=str(route.next_hop),
                origin=str(route.origin),
                kept_next_hop=str(kept.next_hop),
                reason="another route for the same prefix was chosen (the lowest); the planner should dedupe",
            )
        for route, why in desired.new_invalid:
            log.error("route dropped", prefix=str(route.prefix), origin=str(route.origin), reason=why)
        for route in desired.new_unreachable:
            log.warning(
                "route has no peer",
                prefix=str(route.prefix),
                origin=str(route.origin),
                reason=f"no peer has an IPv{route.version} session with ipv{route.version}-unicast",
            )

    async def _sync_locked(self, changed: Iterable[IPNetwork] | None, pace: _Pacer) -> None:
        """Send what differs between desired and sent for these prefixes (None: all of them).

        `sent` is updated as written, `acked` on `done`. The caller holds the lock.
        """
        writer = self._writer
        if writer is None:
            return  # nothing to talk to; the next ExaBGP gets the full set
        desired = self._desired.by_peer
        batches: list[tuple[IPAddress, cmd.Action, list[Route]]] = []
        for peer in self._addresses:
            if peer in self._awaiting:
                continue  # sent once ExaBGP reports the session
            want, sent = desired.get(peer, {}), self._sent[peer]
            gone: list[Route] = []
            new: list[Route] = []
            if peer in self._resend:
                # A session a reload restarted: ExaBGP may or may not still hold what it had
                # (`sent`), so everything wanted goes out and the rest is withdrawn.
                self._resend.discard(peer)
                gone = [r for prefix, r in sent.items() if prefix not in want]
                new = list(want.values())
            elif changed is None:  # sent is empty (a new ExaBGP): everything
                new = list(want.values())
            else:
                for n, prefix in enumerate(changed, 1):
                    route, old = want.get(prefix), sent.get(prefix)
                    if _wire(route) != _wire(old):
                        if route is not None:
                            new.append(route)
                        elif old is not None:
                            gone.append(old)
                    if not n % 1000:
                        await pace()
            batches += [(peer, "withdraw", gone), (peer, "announce", new)]
        for peer, action, routes in batches:
            if not routes:
                continue
            sent, first = self._sent[peer], True
            for command in cmd.render_steps(peer, action, routes):
                if command is None:
                    await pace()
                    continue
                if self._writer is not writer:
                    return  # that ExaBGP is gone; the next one starts afresh
                if first:  # one log line per peer and action, as its first line goes out
                    first = False
                    log.info(
                        "bgp commands sent",
                        peer=str(peer),
                        action=action,
                        routes=len(routes),
                        first=command.line[:200],
                    )
                for route in command.routes:
                    if action == "announce":
                        sent[route.prefix] = route
                    else:
                        sent.pop(route.prefix, None)
                self._inflight.append(command)
                writer.write(f"{command.line}\n".encode())
                await pace()
            try:
                await writer.drain()
            except ConnectionError as exc:  # the session is ending; the next one starts afresh
                log.warning("bgp commands not delivered", reason=str(exc))
                return

    def _notify(self) -> None:
        self.version += 1
        if self.on_change is not None:
            self.on_change()

    def _on_ack(self, ok: bool) -> None:
        if not self._inflight:
            log.warning("unexpected ack from exabgp", ok=ok)
            return
        self.version += 1
        command = self._inflight.popleft()
        if command.peer not in self._acked:
            return  # a peer removed by a reload since
        acked, sent = self._acked[command.peer], self._sent[command.peer]
        if ok and command.action == "announce":
            for route in command.routes:
                acked[route.prefix] = route
        elif ok:
            for route in command.routes:
                acked.pop(route.prefix, None)
        elif len(command.routes) > 1:
            # One bad route fails its whole line: try each (still current) route on its own.
            log.warning("exabgp refused a bulk command, retrying route by route", routes=len(command.routes))
            announce = command.action == "announce"
            retry = [
                r for r in command.routes if (sent.get(r.prefix) is r if announce else r.prefix not in sent)
            ]
            if self._writer is not None and retry:
                lines = []
                for route in retry:
                    single = cmd.Command(
                        command.peer,
                        command.action,
                        (route,),
                        cmd.bulk_line(command.peer, command.action, (route,)),
                    )
                    self._inflight.append(single)
                    lines.append(f"{single.line}\n")
                self._writer.write("".join(lines).encode())
        else:
            log.error("exabgp refused a command", command=command.line, reason="acked error")
            (route,) = command.routes
            if command.action == "withdraw" and route.prefix in acked and route.prefix not in sent:
                # Still announced: put it back so the next set_routes tries again.
                sent[route.prefix] = acked[route.prefix]
                self._dirty.add(route.prefix)

    def _on_line(self, text: str) -> None:
        message = parse_line(text)
        if isinstance(message, Ack):
            self._on_ack(message.ok)
            if not self._inflight:
                self._notify()
        elif isinstance(message, NeighborChange):
            self._unconfirmed.discard(message.peer)  # ExaBGP runs the new config
            if message.peer in self._awaiting and message.state == "established":
                # ExaBGP runs the new config now (the session is the new one): send this peer its set.
                self._awaiting.discard(message.peer)
                self._sent[message.peer] = self._stale.pop(message.peer, {})
                self._resend.add(message.peer)
                self._input = None  # the next set_routes syncs even when the set is the same
            status = self._table.apply(message)
            if status is not None:
                log.info(
                    "bgp session",
                    peer=status.name,
                    address=str(status.address),
                    state=status.state,
                    reason=message.reason,
                )
                if self.on_peer is not None:
                    self.on_peer(status, message.reason)
                self._notify()
        elif isinstance(message, Shutdown):
            log.info("exabgp is shutting down")
        else:
            log.debug("exabgp message ignored", line=message.line[:200])

    def _forget(self) -> None:
        self._awaiting.clear()  # a new ExaBGP reads the current file and gets everything
        self._unconfirmed.clear()
        self._stale.clear()
        self._resend.clear()
        for address in self._addresses:
            self._sent[address].clear()
            self._acked[address].clear()
        self._inflight.clear()
        self.version += 1

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One relay connection, i.e. one ExaBGP: announce everything, then follow its messages."""
        async with self._lock:
            self._forget()
            self._writer = writer
        beat = asyncio.create_task(self._heartbeat(writer), name="exabgp-heartbeat")
        try:
            async with self._lock:
                await self._sync_locked(None, _Pacer())
            while line := await reader.readline():
                self._on_line(line.decode(errors="replace"))
        finally:
            beat.cancel()
            if self._writer is writer:
                self._writer = None
                self._forget()
                self._table.all_down("exabgp stopped")
                self._notify()

    async def _heartbeat(self, writer: asyncio.StreamWriter) -> None:
        # Written by the event loop itself: a blocked loop stops it, and the relay stops ExaBGP.
        while not writer.is_closing():
            writer.write(HEARTBEAT_LINE)
            await asyncio.sleep(self.heartbeat_interval)


def _write_private(path: Path, text: str) -> None:
    """Replace the file whole (ExaBGP may read it at any time), readable by root only."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)
    os.replace(tmp, path)
