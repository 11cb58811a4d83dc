"""A helper that removes the floating device when fabricd dies, however it dies.

The floating device (a veth pair on the bridge, carrying the server address and MAC) would
outlive a SIGKILLed fabricd: its dnsmasq dies with it (parent-death signal), but the bridge would
keep delivering this host's clients' frames for the server to the dead device, so their renewals
and DNS queries would go unanswered after a new authority took over elsewhere. The helper holds
the read end of a pipe whose write end only fabricd holds; the kernel closes it when fabricd
exits for any reason, and the helper then deletes the port end (which deletes the pair).

Run by fabricd as `python -m fabricd.authority.deadman LINK`; it reads stdin until end of file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


class LinkDeadman:
    """Keeps one helper running for one link while the device is claimed. Blocking: use a thread."""

    def __init__(self, link: str) -> None:
        self.link = link
        self._helper: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._helper.pid if self._helper is not None and self._helper.poll() is None else None

    def arm(self) -> None:
        if self.pid is not None:
            return
        self._helper = subprocess.Popen(
            [sys.executable, "-m", "fabricd.authority.deadman", self.link],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C to fabricd must not reach it first
        )

    def disarm(self) -> None:
        """Stop the helper without it touching the link (a new claim may follow at once)."""
        helper, self._helper = self._helper, None
        if helper is None:
            return
        with contextlib.suppress(ProcessLookupError):
            helper.kill()
        helper.wait()
        if helper.stdin is not None:
            helper.stdin.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: python -m fabricd.authority.deadman LINK (reads stdin until end of file)", file=sys.stderr
        )
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # fabricd's stop releases the device itself
    while os.read(0, 4096):
        pass
    from pyroute2 import IPRoute  # only now: the helper idles as a bare interpreter
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr, contextlib.suppress(NetlinkError):
        indexes = ipr.link_lookup(ifname=argv[0])
        if indexes:
            ipr.link("del", index=indexes[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
