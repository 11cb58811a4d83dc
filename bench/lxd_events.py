"""LXD lifecycle events as the benchmark's own listener sees them: the t0 of the event latencies.

The benchmark subscribes to h1's LXD itself (fabricd's EventStream on the node's unix socket, seen
from the machine), so t0 is the moment LXD's event reached a client, the same moment fabricd's own
websocket gets it, not when a CLI command returned.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
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
        arrival = Arrival(mono, wall, action, instance, str(event.get("timestamp", "")))
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
