"""The floating device's deadman: when the process holding it dies by SIGKILL, the device goes.

A stand-in for fabricd runs in a namespace of its own (`fl-tdm-h`), creates a veth pair like the
floating device, arms the deadman, and is killed. The namespace is removed by name at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fabric_lab import netns

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_host")]

NS = "fl-tdm-h"
HOLDER = """
import sys, time
from pyroute2 import IPRoute
from fabricd.authority.deadman import LinkDeadman
with IPRoute() as ipr:
    ipr.link("add", ifname="fd-t", kind="veth", peer={"ifname": "fdp-t"})
deadman = LinkDeadman("fdp-t")
deadman.arm()
if sys.argv[1] == "disarm":
    deadman.disarm()
print(deadman.pid if deadman.pid is not None else 0, flush=True)
time.sleep(60)
"""


@pytest.fixture()
def namespace() -> Iterator[str]:
    netns.remove(NS)
    netns.create(NS)
    try:
        yield NS
    finally:
        netns.stop_pids(netns.pids_in(NS), grace=1.0)
        netns.remove(NS)


def holder(mode: str) -> tuple[subprocess.Popen[str], int]:
    argv = ["ip", "netns", "exec", NS, sys.executable, "-c", HOLDER, mode]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def links() -> set[str]:
    return netns.link_names(NS)


def test_the_device_goes_when_its_holder_is_killed(namespace: str) -> None:
    proc, helper = holder("arm")
    assert {"fd-t", "fdp-t"} <= links() and netns.alive(helper)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    while {"fd-t", "fdp-t"} & links():
        assert time.monotonic() - killed < 5.0, "the deadman did not remove the device"
        time.sleep(0.01)
    print(f"\nholder SIGKILLed -> floating device gone in {time.monotonic() - killed:.3f}s")
    deadline = time.monotonic() + 5.0
    while netns.alive(helper):
        assert time.monotonic() < deadline, "the deadman did not exit"
        time.sleep(0.01)


def test_a_disarmed_deadman_leaves_the_device_alone(namespace: str) -> None:
    proc, helper = holder("disarm")
    assert helper == 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert {"fd-t", "fdp-t"} <= links()
