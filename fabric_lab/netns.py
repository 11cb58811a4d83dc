"""Network namespaces, veth links and the processes inside them, through netlink (pyroute2)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns

NETNS_DIR = Path("/run/netns")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return netns_path(name).exists()


def list_with_prefix(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def create(name: str) -> None:
    netns.create(name)
    with NetNS(name) as ns:
        (lo,) = ns.link_lookup(ifname="lo")
        ns.link("set", index=lo, state="up")


def remove(name: str) -> None:
    if exists(name):
        netns.remove(name)


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int | None = None) -> None:
    """Create a veth pair with one end in each namespace; it never touches the machine's namespace."""
    with NetNS(ns_a) as ns:
        ns.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})
    for name, ifname in ((ns_a, if_a), (ns_b, if_b)):
        with NetNS(name) as ns:
            (index,) = ns.link_lookup(ifname=ifname)
            if mtu is not None:
                ns.link("set", index=index, mtu=mtu)
            ns.link("set", index=index, state="up")


def link_names(name: str | None = None) -> set[str]:
    """Interface names in a namespace, or in the machine's own namespace when name is None."""
    ctx = NetNS(name) if name is not None else IPRoute()
    with ctx as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}


def pids_in(name: str) -> list[int]:
    """Every process whose network namespace is this one (what `ip netns pids` reports)."""
    try:
        target = os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "net").st_ino == target:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def stop_pids(pids: Iterable[int], grace: float = 5.0) -> list[int]:
    """SIGTERM, wait up to grace seconds, then SIGKILL. Returns the pids that had to be killed."""
    pending = [p for p in pids if alive(p)]
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if alive(p)]
        if pending:
            time.sleep(0.05)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pending
