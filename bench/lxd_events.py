"""LXD lifecycle events as the benchmark's own listener sees them: the t0 of the event latencies.

The benchmark subscribes to h1's LXD itself (fabricd's EventStream on the node's unix socket, seen
from the machine). Each event carries the timestamp LXD wrote into it (`lxd_wall`): the latencies
start there, before any listener (fabricd's or this one) can have received the event. The arrival
here is kept beside it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from fabricd.config.model import LXDConfig
from fabricd.lxd.api import LXDApi
from fabricd.lxd.events import EventStream


@dataclass(frozen=True)
class Arrival:
    mono: float  # time.monotonic() when the message reached this process
    wall: float  # time.time() at the same moment, to line up with fabricd's log timestamps
    action: str
    instance: str  # the instance named by the event's source, "" for other objects
    lxd_timestamp: str
    lxd_wall: float | None  # the event's own timestamp as time.time() (None if unreadable)


def _wall(timestamp: str) -> float | None:
    """LXD's RFC 3339 timestamp (nanoseconds, any offset) as time.time()."""
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(timestamp).timestamp()
    return None


class LifecycleEvents:
    def __init__(self, socket: Path, project: str = "default") -> None:
        self._arrivals: list[Arrival] = []
        self._cond = threading.Condition()
        self.closed: str | None = None
        api = LXDApi(LXDConfig(socket=socket, project=project))
        self._stream = EventStream(api, project, self._on_message, self._on_close)

    def __enter__(self) -> LifecycleEvents:
        self._stream.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stream.close()

    def _on_message(self, data: bytes) -> None:
        mono, wall = time.monotonic(), time.time()
        try:
            event = json.loads(data)
            metadata = event.get("metadata") or {}
            action = str(metadata.get("action", ""))
            parts = [p for p in urlparse(str(metadata.get("source", ""))).path.split("/") if p]
        except (ValueError, AttributeError):
            return
        instance = parts[2] if len(parts) >= 3 and parts[:2] == ["1.0", "instances"] else ""
        stamp = str(event.get("timestamp", ""))
        arrival = Arrival(mono, wall, action, instance, stamp, _wall(stamp))
        with self._cond:
            self._arrivals.append(arrival)
            self._cond.notify_all()

    def _on_close(self, reason: str) -> None:
        with self._cond:
            self.closed = reason
            self._cond.notify_all()

    def mark(self) -> int:
        """A position in the arrivals; `wait` only looks at what came after it."""
        with self._cond:
            return len(self._arrivals)

    def actions(self, instance: str) -> dict[str, int]:
        """How many events of each action named this instance (what fabricd could react to)."""
        with self._cond:
            found: dict[str, int] = {}
            for arrival in self._arrivals:
                if arrival.instance == instance:
                    found[arrival.action] = found.get(arrival.action, 0) + 1
            return found

    def wait(self, actions: Collection[str], instance: str, since: int, timeout: float) -> Arrival | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrival in self._arrivals[since:]:
                    if arrival.action in actions and arrival.instance == instance:
                        return arrival
                left = deadline - time.monotonic()
                if left <= 0 or self.closed is not None:
                    return None
                self._cond.wait(left)
