"""The DHCP/DNS authority under systemd/fabricd.service's capability set (labs/authority-standalone).

s1, first in the priority list, runs fabricd as the unit would (root with only the unit's
bounding set, no_new_privs). It must still start dnsmasq as nobody through setpriv (SETUID,
SETGID, SETPCAP), have it bind ports 53/67 and answer a real client's DHCP (NET_BIND_SERVICE,
NET_RAW), reload it with SIGHUP when a name is added (KILL), and report healthy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric_lab.dhcp_clients import DhcpClient
from fabric_lab.node import NodeRuntime
from fabric_lab.runner import Lab
from tests.lab.conftest import REPO, fresh_lab
from tests.lab.unit_sandbox import capabilities_of, restart_as_the_unit, unit_capabilities

pytestmark = pytest.mark.lab

LAB = "tcaps"
FIRST, SECOND = f"{LAB}-c1", f"{LAB}-c2"  # LXD instance names are machine-wide


@pytest.fixture(scope="module")
def lab(lab_host: None, state_root: Path) -> Iterator[Lab]:
    with fresh_lab(REPO / "labs" / "authority-standalone.clab.yml", LAB, state_root) as lab:
        yield lab


def authority(node: NodeRuntime) -> dict[str, Any]:
    """The status's authority section; empty while a fabricd just started has published none yet."""
    return dict(json.loads(node.fabricctl("status", "--json").stdout).get("authority") or {})


def dnsmasq_pid_if_authority(section: dict[str, Any]) -> int | None:
    serving = section.get("role") == "authority" and section["dnsmasq"]["pid"]
    return int(section["dnsmasq"]["pid"]) if serving else None


def reloaded(section: dict[str, Any]) -> dict[str, Any] | None:
    return section if section.get("dnsmasq", {}).get("reloads", 0) >= 1 else None


def wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return value


def test_authority_serves_dhcp_with_only_the_units_capabilities(lab: Lab) -> None:
    s1 = lab.node("s1")
    pid = restart_as_the_unit(lab, "s1")
    found = capabilities_of(pid)
    assert found["CapEff"] == found["CapBnd"] and bin(found["CapBnd"]).count("1") == len(unit_capabilities())
    assert found["NoNewPrivs"] == 1
    # s1 ranks first: it takes the authority back and starts dnsmasq through setpriv.
    serving = wait("s1 serving", lambda: dnsmasq_pid_if_authority(authority(s1)))
    dnsmasq = int(serving)
    status = Path(f"/proc/{dnsmasq}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid == "65534"  # nobody
    created: list[str] = []
    try:
        for name in (FIRST, SECOND):
            created.append(name)
            s1.run(["lxc", "init", "busybox", name, "-p", "default", "-p", "overlay"])
            s1.run(["lxc", "start", name])
            client = DhcpClient(s1, name)
            client.start()
            lease = client.wait_bound(30)
            assert lease.ip.startswith("192.168.101."), lease
        after = wait("a reload", lambda: reloaded(authority(s1)), timeout=30)
        assert after["dnsmasq"]["pid"] == dnsmasq  # new names were a SIGHUP, not a restart
        assert after["dnsmasq"]["restarts"] == 0
        check = s1.run(["fabricctl", "check"], check=False)
        deadline = time.monotonic() + 30
        while check.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            check = s1.run(["fabricctl", "check"], check=False)
        assert (check.returncode, check.stdout) == (0, "FABRICD OK - healthy\n"), check.stdout
    finally:
        for name in created:
            s1.run(["lxc", "delete", "--force", name], check=False, timeout=60)
