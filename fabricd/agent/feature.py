"""What a feature brings to the agent: its steps, its part of the status, its commands and its stop.

The agent knows features only through this shape, so a new capability (the DHCP/DNS authority,
anycast services) is a new bundle, not new code in the agent. Shared views of the world (LXD, the
cluster's members) are bundles too: an observer with a background task and problems of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fabricd.agent.loop import Applier, Observer, Planner
from fabricd.agent.status import Sample

if TYPE_CHECKING:
    from fabricd.config.model import FabricConfig
    from fabricd.config.reload import ConfigChange


@dataclass(frozen=True, slots=True)
class FeatureStatus:
    """A feature's part of the status snapshot. `sections` are top-level keys of `fabricctl status
    --json`; the data in them is built fresh for each snapshot and never changed afterwards."""

    sections: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    metrics: tuple[Sample, ...] = ()


# A control command answered from the last status snapshot (a plain dict), never by doing I/O on
# the event loop. A command that changes state (a drain) returns an awaitable instead, which does
# its I/O in a worker thread.
CommandHandler = Callable[
    [Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any] | Awaitable[Mapping[str, Any]]
]


class Feature:
    """Base bundle: override what the feature has. Every hook has a harmless default."""

    name = "feature"
    observers: Sequence[Observer[Any]] = ()
    planners: Sequence[Planner] = ()
    appliers: Sequence[Applier] = ()

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    async def start(self) -> None:
        """Start child processes before the first pass (the BGP speaker, say)."""

    def background(self, stop: asyncio.Event) -> Sequence[Awaitable[None]]:
        """Long-running tasks (event streams, pollers) that end when `stop` is set."""
        return ()

    def dead(self) -> str | None:
        """Why the agent must be restarted (the watchdog stops pinging systemd), or None."""
        return None

    async def reconfigure(self, config: FabricConfig, change: ConfigChange) -> None:
        """Take a reloaded config that `fabricd.config.reload` judged live (only its live keys
        differ). Called between reconcile passes; what did not change must be left alone."""

    async def status(self) -> FeatureStatus:
        """Built after a pass, off the control path; any I/O must run in a worker thread."""
        return FeatureStatus()

    async def stop(self) -> None:
        """Release what the feature holds; called once, in reverse order of registration."""
