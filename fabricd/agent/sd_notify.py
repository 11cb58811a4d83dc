"""systemd readiness (Type=notify): one datagram to $NOTIFY_SOCKET; a no-op outside systemd.

Never blocks: it is called on the event loop, and a full socket queue (a slow reader, at most ten
datagrams by default on a Unix socket) drops the message instead of stalling the agent."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send e.g. "READY=1"; False when not run by systemd or the socket is gone."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), socket.MSG_DONTWAIT, address)
    except OSError:
        return False
    return True
