"""The drain state on disk: what the operator drained and since when, kept across agent restarts.

One small JSON file under the state directory, `{"host": <unix time or null>, "services": {name:
unix time}}`, replaced atomically (written beside it, flushed, renamed over it), so a crash leaves
the old state or the new one, never half of either. Blocking: the feature calls it in a thread.

A file that cannot be read is an error with the file named, never an empty drain: starting up
undrained because the file was damaged would put traffic back on a host the operator took out.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fabricd.frozen import FrozenMap
from fabricd.services.model import DrainState

DRAIN_FILE = "drain.json"


class DrainFileError(Exception):
    """The drain file exists but does not hold a drain state."""


def _time(value: Any, where: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DrainFileError(f"{path}: {where}: expected a unix time (a number), got {value!r}")
    return float(value)


def parse_drain(text: str, path: Path) -> DrainState:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DrainFileError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DrainFileError(f"{path}: expected a JSON object with keys host and services")
    unknown = sorted(set(data) - {"host", "services"})
    if unknown:
        raise DrainFileError(f"{path}: unknown key {unknown[0]!r}; expected host and services")
    host = data.get("host")
    services = data.get("services")
    services = {} if services is None else services
    if not isinstance(services, dict):
        raise DrainFileError(f"{path}: services: expected an object of service name to unix time")
    return DrainState(
        None if host is None else _time(host, "host", path),
        FrozenMap({str(name): _time(at, f"services.{name}", path) for name, at in services.items()}),
    )


def render_drain(state: DrainState) -> str:
    return json.dumps({"host": state.host, "services": dict(state.services)}, sort_keys=True) + "\n"


def drained(state: DrainState, service: str | None, now: float) -> DrainState:
    """`state` with the host (service None) or one service drained; an earlier drain keeps its time."""
    if service is None:
        return DrainState(state.host if state.host is not None else now, state.services)
    if service in state.services:
        return state
    return DrainState(state.host, FrozenMap({**state.services, service: now}))


def undrained(state: DrainState, service: str | None) -> DrainState:
    """`state` with the host's drain (service None) or one service's drain removed."""
    if service is None:
        return DrainState(None, state.services)
    return DrainState(state.host, FrozenMap({k: v for k, v in state.services.items() if k != service}))


class DrainStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / DRAIN_FILE

    def load(self) -> DrainState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return DrainState()
        return parse_drain(text, self.path)

    def save(self, state: DrainState) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with open(staging, "w") as out:
            out.write(render_drain(state))
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
