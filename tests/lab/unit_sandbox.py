"""fabricd started in a lab node as systemd/fabricd.service would start it, as far as a lab can:
root with only the unit's capability bounding set, and no_new_privs. (Its file system, address
family and system call limits need systemd itself; tests/unit/test_systemd_unit.py verifies them.)"""

from __future__ import annotations

import re
import time
from pathlib import Path

from fabric_lab import netns
from fabric_lab.node import AGENT_ANSWERS
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, stop_agent


def unit_capabilities() -> list[str]:
    """The capabilities systemd/fabricd.service leaves fabricd, as setpriv names them."""
    text = (REPO / "systemd" / "fabricd.service").read_text()
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", text, re.MULTILINE)
    return [cap.removeprefix("CAP_").lower() for cap in line.split()]


def restart_as_the_unit(lab: Lab, host: str, timeout: float = 30) -> int:
    """Stop the node's fabricd, start it again under the unit's limits and wait until it answers;
    returns its pid."""
    caps = ",".join(f"+{cap}" for cap in unit_capabilities())
    limits = ["setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--no-new-privs", "--"]
    config = next(n.agent_config for n in lab.topology.nodes if n.name == host)
    assert config is not None
    stop_agent(lab, host)
    state = lab.state()
    pid = lab.node(host).spawn([*limits, "fabricd", "run", "--config", str(config)], "fabricd")
    state.nodes[host].agent_pid = pid
    state.save()
    deadline = time.monotonic() + timeout
    while lab.node(host).run(["fabricctl", "check"], check=False).returncode not in AGENT_ANSWERS:
        assert netns.alive(pid), f"fabricd on {host} exited under the unit's limits"
        assert time.monotonic() < deadline, f"fabricd on {host} did not answer under the unit's limits"
        time.sleep(0.2)
    return pid


def capabilities_of(pid: int) -> dict[str, int]:
    """CapEff, CapBnd (as bit masks) and NoNewPrivs of a running process."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    return {key: int(fields[key].strip(), 16) for key in ("CapEff", "CapBnd", "NoNewPrivs")}
