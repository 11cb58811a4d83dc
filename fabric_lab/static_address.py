"""Static addresses on the lab's busybox instances, whose image starts a DHCP client at boot.

The client's first step (deconfig) flushes the interface's global IPv4 addresses; it may run
after `lxc start` returns, so an address set right away can vanish. And when the overlay serves
DHCP, the client's lease adds an address of its own. So: stop the client first, then set the
address and check that it stays.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

InInstance = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def stop_dhcp_client(run: InInstance, timeout: float = 10) -> bool:
    """Kill the image's udhcpc once it runs; False when none appeared within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = run(["pidof", "udhcpc"]).stdout.split()
        if pids:
            run(["kill", *pids])
            return True
        time.sleep(0.2)
    return False


def set_static(run: InInstance, address: str, device: str = "eth0", attempts: int = 5) -> None:
    """`address` (with its prefix length) on `device`, checked again a moment later: a deconfig of
    the killed client that was already under way could still flush it."""
    for _ in range(attempts):
        run(["ip", "addr", "replace", address, "dev", device])
        time.sleep(0.5)
        if f"inet {address} " in run(["ip", "-4", "addr", "show", "dev", device]).stdout + " ":
            return
    raise RuntimeError(f"{address} does not stay on {device}")
