"""The BGP speaker fabricd's route applier talks to, and its ExaBGP implementation.

The applier hands over the whole desired set every time (like MetalLB's session.Set); the speaker
sends only the difference. A route counts as announced when ExaBGP acked it for a peer whose
session is established. When ExaBGP goes away the speaker forgets everything it sent, and the next
ExaBGP gets the full set again as soon as its relay connects.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal, Protocol

from fabricd.bgp import commands as cmd
from fabricd.bgp.exabgp_config import exabgp_environment, render_config
from fabricd.bgp.peer_state import Ack, NeighborChange, PeerStatus, PeerTable, Shutdown, parse_line
from fabricd.bgp.relay import DEFAULT_TIMEOUT
from fabricd.bgp.supervisor import Supervisor
from fabricd.config.model import BGPConfig, HostConfig, IPAddress
from fabricd.log import get_logger
from fabricd.routes.model import IPNetwork, Route

log = get_logger("fabricd.bgp.speaker")

RouteStatus = Literal["announced", "pending"]
HEARTBEAT_LINE = b"#heartbeat\n"
HEARTBEAT_INTERVAL = 0.5


class Speaker(Protocol):
    async def start(self) -> None: ...

    async def set_routes(self, routes: Collection[Route]) -> None:
        """The complete desired set; what is not in it gets withdrawn."""

    def peers(self) -> tuple[PeerStatus, ...]: ...

    def route_states(self) -> Mapping[Route, RouteStatus]: ...

    async def stop(self) -> None:
        """Close the sessions; peers withdraw everything at once (nothing is withdrawn first)."""


def _wire(route: Route | None) -> object:
    """What a peer sees of a route; a different origin alone is the same announcement."""
    return None if route is None else (route.prefix, route.next_hop, route.attributes)


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
        self.config_file = state_dir / "exabgp.conf"
        socket_path = state_dir / "relay.sock"
        relay = [python, "-m", "fabricd.bgp.relay", str(socket_path), "--timeout", f"{watchdog_timeout:g}"]
        self.config_text = render_config(bgp, host, relay)  # fails here, before anything runs
        exabgp = bgp.exabgp or Path(sys.executable).parent / "exabgp"
        # Inherited exabgp_* settings must not override ours.
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith(("exabgp_", "exabgp."))}
        env |= exabgp_environment(state_dir / "exabgp.log", exabgp_log_level)
        self.supervisor = Supervisor(
            [str(exabgp), "server", str(self.config_file)],
            env,
            state_dir / "exabgp.out",
            socket_path,
            self._session,
            logs=[state_dir / "exabgp.log"],
        )
        self._addresses = tuple(p.address for p in bgp.peers)
        self._table = PeerTable(bgp.peers)
        self._desired = cmd.plan((), bgp.peers)
        self._problems: object = None
        self._sent: dict[IPAddress, dict[IPNetwork, Route]] = {a: {} for a in self._addresses}
        self._acked: dict[IPAddress, dict[IPNetwork, Route]] = {a: {} for a in self._addresses}
        self._inflight: deque[cmd.Command] = deque()
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

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
        await self.supervisor.stop()

    async def set_routes(self, routes: Collection[Route]) -> None:
        self._desired = cmd.plan(routes, self.bgp.peers)
        self._log_problems()
        await self._sync()

    def peers(self) -> tuple[PeerStatus, ...]:
        return self._table.snapshot({a: len(r) for a, r in self._acked.items()})

    def route_states(self) -> Mapping[Route, RouteStatus]:
        states: dict[Route, RouteStatus] = {}
        for route in self._desired.routes.values():
            announced = any(
                _wire(self._acked[peer].get(route.prefix)) == _wire(route) and self._table.established(peer)
                for peer, routes in self._desired.by_peer.items()
                if route.prefix in routes
            )
            states[route] = "announced" if announced else "pending"
        for route in self._desired.aliases:
            states[route] = states[self._desired.routes[route.prefix]]
        for route in (*self._desired.duplicates, *(r for r, _ in self._desired.invalid)):
            states[route] = "pending"
        return states

    def _log_problems(self) -> None:
        desired = self._desired
        problems = (desired.duplicates, desired.invalid, desired.unreachable)
        if problems == self._problems:
            return  # set_routes runs every reconcile pass: say it once per change
        self._problems = problems
        for route in desired.duplicates:
            kept = desired.routes[route.prefix]
            log.error(
                "route dropped",
                prefix=str(route.prefix),
                next_hop=str(route.next_hop),
                origin=str(route.origin),
                kept_next_hop=str(kept.next_hop),
                reason="another route for the same prefix was chosen (the lowest); the planner should dedupe",
            )
        for route, why in desired.invalid:
            log.error("route dropped", prefix=str(route.prefix), origin=str(route.origin), reason=why)
        for route in desired.unreachable:
            log.warning(
                "route has no peer",
                prefix=str(route.prefix),
                origin=str(route.origin),
                reason=f"no peer has an IPv{route.version} session with ipv{route.version}-unicast",
            )

    async def _sync(self) -> None:
        """Send what differs between desired and sent; sent is updated as written, acked on `done`."""
        async with self._lock:
            writer = self._writer
            if writer is None:
                return  # nothing to talk to; the next ExaBGP gets the full set
            lines = []
            for peer in self._addresses:
                sent = self._sent[peer]
                for command in cmd.diff(peer, self._desired.by_peer.get(peer, {}), sent):
                    if command.action == "announce":
                        sent[command.route.prefix] = command.route
                    else:
                        sent.pop(command.route.prefix, None)
                    self._inflight.append(command)
                    lines.append(command.line)
            if not lines:
                return
            log.info("bgp commands sent", count=len(lines), first=lines[0])
            writer.write("".join(f"{line}\n" for line in lines).encode())
            try:
                await writer.drain()
            except ConnectionError as exc:  # the session is ending; the next one starts afresh
                log.warning("bgp commands not delivered", reason=str(exc))

    def _on_ack(self, ok: bool) -> None:
        if not self._inflight:
            log.warning("unexpected ack from exabgp", ok=ok)
            return
        command = self._inflight.popleft()
        acked = self._acked[command.peer]
        if ok and command.action == "announce":
            acked[command.route.prefix] = command.route
        elif ok:
            acked.pop(command.route.prefix, None)
        else:
            log.error("exabgp refused a command", command=command.line, reason="acked error")
            if command.action == "withdraw" and command.route.prefix in acked:
                # Still announced: put it back so the next set_routes tries again.
                self._sent[command.peer].setdefault(command.route.prefix, acked[command.route.prefix])

    def _on_line(self, text: str) -> None:
        message = parse_line(text)
        if isinstance(message, Ack):
            self._on_ack(message.ok)
        elif isinstance(message, NeighborChange):
            status = self._table.apply(message)
            if status is not None:
                log.info(
                    "bgp session",
                    peer=status.name,
                    address=str(status.address),
                    state=status.state,
                    reason=message.reason,
                )
        elif isinstance(message, Shutdown):
            log.info("exabgp is shutting down")
        else:
            log.debug("exabgp message ignored", line=message.line[:200])

    def _forget(self) -> None:
        for address in self._addresses:
            self._sent[address].clear()
            self._acked[address].clear()
        self._inflight.clear()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One relay connection, i.e. one ExaBGP: announce everything, then follow its messages."""
        async with self._lock:
            self._forget()
            self._writer = writer
        beat = asyncio.create_task(self._heartbeat(writer), name="exabgp-heartbeat")
        try:
            await self._sync()
            while line := await reader.readline():
                self._on_line(line.decode(errors="replace"))
        finally:
            beat.cancel()
            if self._writer is writer:
                self._writer = None
                self._forget()
                self._table.all_down("exabgp stopped")

    async def _heartbeat(self, writer: asyncio.StreamWriter) -> None:
        # Written by the event loop itself: a blocked loop stops it, and the relay stops ExaBGP.
        while not writer.is_closing():
            writer.write(HEARTBEAT_LINE)
            await asyncio.sleep(self.heartbeat_interval)
