"""`python -m fabricd.bgp.relay SOCKET`: the process ExaBGP runs, joining it to fabricd.

ExaBGP keeps announcing its routes when its helper dies, so a fabricd that crashed or hung would
leave routes pointing at this host for ever. The relay is the dead man's switch: it connects to
fabricd's unix socket, passes fabricd's lines to ExaBGP (its stdout) and ExaBGP's lines to fabricd
(its stdin), and stops ExaBGP, its parent, as soon as fabricd goes quiet: socket closed or no
`#heartbeat` line for --timeout seconds. Stopping ExaBGP closes the BGP sessions and the peers
withdraw at once. It never exits leaving its ExaBGP running.

Lines from fabricd starting with `#` are for the relay and never reach ExaBGP; the relay's first
line to fabricd is `#hello <ExaBGP pid>`, so fabricd accepts only the relay of the ExaBGP it started.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from fabricd.log import configure_logging, get_logger

HEARTBEAT = b"#heartbeat"
HELLO = "#hello"
DEFAULT_TIMEOUT = 3.0
DEFAULT_CONNECT_TIMEOUT = 5.0
KILL_GRACE = 1.0
_CHUNK = 65536


class Relay:
    """Moves bytes both ways without ever blocking, so the heartbeat deadline is always checked."""

    def __init__(
        self,
        sock: socket.socket,
        stdin_fd: int,
        stdout_fd: int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock, self.stdin_fd, self.stdout_fd = sock, stdin_fd, stdout_fd
        self.timeout, self.clock = timeout, clock
        self.last_beat = clock()
        self.to_exabgp = bytearray()
        self.to_fabricd = bytearray()
        self.partial = bytearray()  # an incomplete line from fabricd

    def run(self) -> str:
        """Relay until something ends it; returns why, for the log."""
        self.sock.setblocking(False)
        os.set_blocking(self.stdin_fd, False)
        os.set_blocking(self.stdout_fd, False)
        poller = select.poll()
        while True:
            remaining = self.last_beat + self.timeout - self.clock()
            if remaining <= 0:
                return "no heartbeat from fabricd"
            wants = {self.sock.fileno(): select.POLLIN, self.stdin_fd: select.POLLIN, self.stdout_fd: 0}
            if self.to_fabricd:
                wants[self.sock.fileno()] |= select.POLLOUT
            if self.to_exabgp:
                wants[self.stdout_fd] |= select.POLLOUT
            for fd, mask in wants.items():
                poller.register(fd, mask)
            # Only the heartbeat deadline needs a timeout: every other reason to act is an fd event.
            events = poller.poll(math.ceil(remaining * 1000))
            for fd in wants:
                poller.unregister(fd)
            for fd, event in events:
                reason = self._handle(fd, event)
                if reason is not None:
                    return reason

    def _handle(self, fd: int, event: int) -> str | None:
        try:
            if fd == self.sock.fileno():
                if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    data = self.sock.recv(_CHUNK)
                    if not data:
                        return "fabricd closed the socket"
                    self._from_fabricd(data)
                if event & select.POLLOUT and self.to_fabricd:
                    del self.to_fabricd[: self.sock.send(self.to_fabricd)]
            elif fd == self.stdin_fd:
                data = os.read(fd, _CHUNK)
                if not data:
                    return "exabgp closed the relay's stdin"
                self.to_fabricd += data
            elif fd == self.stdout_fd:
                if event & (select.POLLERR | select.POLLHUP):
                    return "exabgp closed the relay's stdout"
                if self.to_exabgp:
                    del self.to_exabgp[: os.write(fd, self.to_exabgp)]
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            return f"i/o error: {exc}"
        return None

    def _from_fabricd(self, data: bytes) -> None:
        self.partial += data
        *lines, rest = bytes(self.partial).split(b"\n")
        self.partial = bytearray(rest)
        for line in lines:
            if line.startswith(HEARTBEAT):
                self.last_beat = self.clock()
            elif not line.startswith(b"#"):
                self.to_exabgp += line + b"\n"


def _log() -> structlog.typing.FilteringBoundLogger:
    # Made on use: a logger bound at import would keep structlog's default, which prints to stdout.
    return get_logger("fabricd.bgp.relay")


def connect(path: Path, timeout: float) -> socket.socket | None:
    """fabricd listens before it starts ExaBGP; retry briefly in case it is still binding."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(str(path))
            return sock
        except OSError as exc:
            sock.close()
            if time.monotonic() >= deadline:
                _log().error("cannot reach fabricd", socket=str(path), reason=str(exc))
                return None
            time.sleep(0.1)


def _gone(pid: int, is_parent: bool) -> bool:
    if is_parent:
        return os.getppid() != pid  # reparented: the parent has exited
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def stop_target(pid: int, is_parent: bool, grace: float = KILL_GRACE) -> None:
    """SIGTERM (ExaBGP sends a Cease and closes), then SIGKILL after `grace` seconds."""
    if pid <= 1 or pid == os.getpid() or _gone(pid, is_parent):
        return  # never signal init, ourselves, or a pid that may since have been reused
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        _log().warning("stopping exabgp", pid=pid, signal=signum.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _gone(pid, is_parent):
                return
            time.sleep(0.01)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fabricd.bgp.relay", description=__doc__.splitlines()[0])
    parser.add_argument("socket", type=Path)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="heartbeat timeout (s)")
    parser.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT)
    # Tests stand a harmless process in for ExaBGP; in production the target is the parent.
    parser.add_argument("--target-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kill-grace", type=float, default=KILL_GRACE, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    # ExaBGP reads commands from our fd 1. Move that pipe to a private fd and point fd 1 at stderr,
    # so no print, log line or library write can ever reach ExaBGP as a command.
    exabgp_fd = os.dup(1)
    os.dup2(2, 1)
    configure_logging("info", "json")  # stderr: ExaBGP's stderr, fabricd's exabgp.out
    is_parent = args.target_pid is None
    target = os.getppid() if is_parent else args.target_pid
    sock = connect(args.socket, args.connect_timeout)
    reason = "cannot reach fabricd"
    if sock is not None:
        try:
            sock.sendall(f"{HELLO} {target}\n".encode())
            reason = Relay(sock, sys.stdin.fileno(), exabgp_fd, args.timeout).run()
        except Exception as exc:  # whatever went wrong, ExaBGP must not outlive the relay
            reason = f"relay failed: {exc!r}"
        finally:
            sock.close()
    _log().warning("relay stopping", reason=reason, exabgp_pid=target)
    stop_target(target, is_parent, args.kill_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
