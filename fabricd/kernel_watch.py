"""Whether the kernel announced a change since a read: lets an idle pass skip a netlink read that
would find what the last one found.

A non-blocking rtnetlink socket joined to some multicast groups is drained at each look. Anything
received (for neighbour messages: of the bridge family only, ARP and ND churn are not ours), a
lost notification (ENOBUFS), a socket that could not be made, or `max_age` seconds since the last
read all mean "read again". The caller drains before reading, so a change during its read shows
at the next look.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

from fabricd.log import get_logger

log = get_logger("fabricd.kernel_watch")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
AF_BRIDGE = 7
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
MAX_AGE_S = 60.0


def relevant(data: bytes) -> bool:
    """Whether a datagram of notifications holds one that matters: any but a neighbour message of
    another family than the bridge's (its FDB)."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return True  # malformed: read rather than guess
        if kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
            return True
        family_at = offset + _HEADER.size
        if family_at < len(data) and data[family_at] == AF_BRIDGE:
            return True
        offset += (length + 3) & ~3
    return False


class KernelWatch:
    def __init__(self, groups: int, max_age: float = MAX_AGE_S) -> None:
        self._groups = groups
        self._max_age = max_age
        self._sock: socket.socket | None = None
        self._read_at: float | None = None
        self._dirty = True

    def _open(self) -> bool:
        try:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_ROUTE
            )
            sock.bind((0, self._groups))
        except OSError as exc:
            log.debug("kernel change notifications unavailable", reason=str(exc))
            return False
        self._sock = sock
        return True

    def changed(self) -> bool:
        """Whether to read now: call before reading; `read()` after a read that succeeded."""
        if self._sock is None and not self._open():
            return True
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                self._dirty = True
                if exc.errno != errno.ENOBUFS:  # a lost notification: read; anything else: reopen
                    self.close()
                    return True
                continue
            if not data:
                break
            if relevant(data):
                self._dirty = True
        stale = self._read_at is None or time.monotonic() - self._read_at > self._max_age
        return self._dirty or stale

    def read(self) -> None:
        """A read that began after the last `changed()` succeeded: nothing new until notified."""
        self._dirty = False
        self._read_at = time.monotonic()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
