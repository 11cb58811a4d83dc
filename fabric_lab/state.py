"""What a running lab made, written as it is made, so `down` can undo a half-finished `up`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class NodeState:
    name: str
    netns: str
    holder_pid: int | None = None
    pids: list[int] = field(default_factory=list)  # long-running processes started in the node
    pid_files: list[str] = field(default_factory=list)  # daemons that fork report their pid here
    lxd_socket: str | None = None
    lxd_pid: int | None = None
    agent_pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class LabState:
    name: str
    topology: str
    state_dir: str
    nodes: dict[str, NodeState] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return state_file(Path(self.state_dir))

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, state_dir: Path) -> LabState:
        raw = json.loads(state_file(state_dir).read_text())
        nodes = {name: NodeState(**node) for name, node in raw.pop("nodes", {}).items()}
        return cls(nodes=nodes, **raw)


def state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"
