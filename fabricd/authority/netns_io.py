"""Packet sockets and sysctls on one interface, in this network namespace or a named one.

The agent works in its own namespace (`netns=None`); tests name a scratch namespace, so nothing
they send ever leaves on the machine's own interfaces. A socket keeps the namespace it was created
in, so for a named one it is created in a short-lived thread that enters the namespace and then
ends: no thread of the caller ever changes namespace.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")  # an `ip netns` name: a file in /run/netns
_libc = ctypes.CDLL(None, use_errno=True)


def require_interface(interface: str) -> str:
    """Frames go only where the caller says: an empty or malformed name is refused, never defaulted."""
    if not interface or len(interface) > 15 or "/" in interface or interface in (".", ".."):
        raise ValueError(f"not an interface name: {interface!r}")
    return interface


def in_netns(netns: str | None, work: Callable[[], _T]) -> _T:
    """`work()` run in the named network namespace (in a thread of its own), or here when None."""
    if netns is None:
        return work()
    if not _NAME.fullmatch(netns):
        raise ValueError(f"not a network namespace name: {netns!r}")
    result: list[_T] = []
    failure: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            fd = os.open(f"{NETNS_DIR}/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns({netns}): {os.strerror(errno)}")
            finally:
                os.close(fd)
            result.append(work())
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)

    thread = threading.Thread(target=enter_and_work, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def packet_socket(interface: str, ethertype: int, netns: str | None = None) -> socket.socket:
    """A raw AF_PACKET socket bound to `interface`: sends whole Ethernet frames, receives `ethertype`."""
    require_interface(interface)

    def open_bound() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        try:
            sock.bind((interface, ethertype))
        except OSError:
            sock.close()
            raise
        return sock

    return in_netns(netns, open_bound)


def write_sysctl(path: str, value: str, netns: str | None = None) -> None:
    """Write one /proc/sys/net entry (`path` below /proc/sys/net) as seen from that namespace."""
    if ".." in path.split("/"):
        raise ValueError(f"not a sysctl path: {path!r}")

    def write() -> None:
        with open(f"/proc/sys/net/{path}", "w") as entry:
            entry.write(value)

    in_netns(netns, write)
