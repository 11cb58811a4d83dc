"""Health checkers: run one service check against one backend and say what was seen.

Each check is a coroutine that never blocks the event loop: tcp, udp, dns and http(s) use asyncio
sockets; exec calls the injected LXD client function in a thread. Each is bounded by the check's
`timeout` and returns a `CheckResult` with a reason ("connected in 0.4 ms", "HTTP 503, expected
200", "no reply within 0.5 s"); nothing raises but cancellation, so one broken backend never stops
the others being checked. What to do with a result is `fabricd.services.health`'s business.

The HTTPS check does not verify the certificate: it asks whether the backend serves, not who it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from fabricd.config.model import HealthCheckConfig
from fabricd.routes.model import IPAddress
from fabricd.services import dns_wire
from fabricd.services.health import CheckResult
from fabricd.services.model import BackendId

# Runs argv inside an instance through the LXD API and returns its exit code; blocking (it is run
# in a thread), given the check's timeout to honour, and free to raise: a raise is a failed check.
ExecInInstance = Callable[[str, str, Sequence[str], float], int]  # (project, instance, argv, timeout)

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?:[ \t][^\r\n]*)?\r?\n?")
_MAX_STATUS_LINE = 4096
_USER_AGENT = "fabricd-health-check"


class CheckFailed(Exception):
    """A check that ran and saw something wrong; the message is the reason."""


@dataclass(frozen=True, slots=True)
class Checker:
    """Runs checks. `exec_in_instance` is the LXD client's exec (None: exec checks fail, saying
    so); `executor` runs it, so a command that hangs never holds a thread of the loop's default
    executor; `clock` stamps results (monotonic seconds, the health state machine's clock)."""

    exec_in_instance: ExecInInstance | None = None
    executor: Executor | None = None
    clock: Callable[[], float] = field(default=time.monotonic)

    async def check(
        self, check: HealthCheckConfig, backend: BackendId, target: IPAddress | None
    ) -> CheckResult:
        started = time.monotonic()
        try:
            reason = await asyncio.wait_for(self._run(check, backend, target), check.timeout)
            ok = True
        except TimeoutError:
            ok, reason = False, f"no answer within {check.timeout:g} s"
        except CheckFailed as exc:
            ok, reason = False, str(exc)
        except ConnectionRefusedError:
            ok, reason = False, "port unreachable" if check.type in ("udp", "dns") else "connection refused"
        except OSError as exc:
            ok, reason = False, exc.strerror or str(exc) or type(exc).__name__
        except Exception as exc:  # a check must never take the checking loop down with it
            ok, reason = False, f"check failed: {type(exc).__name__}: {exc}"
        if ok:
            reason = f"{reason} in {(time.monotonic() - started) * 1000:.1f} ms"
        return CheckResult(ok, reason, self.clock())

    def _run(self, check: HealthCheckConfig, backend: BackendId, target: IPAddress | None) -> Awaitable[str]:
        if check.type == "exec":
            return self._exec(check, backend)
        if target is None or check.port is None:
            raise CheckFailed(f"no address to run the {check.type} check against")
        if check.type == "tcp":
            return tcp_check(target, check.port)
        if check.type == "udp":
            return udp_check(target, check.port, check)
        if check.type == "dns":
            return dns_check(target, check.port, check)
        return http_check(target, check.port, check)

    async def _exec(self, check: HealthCheckConfig, backend: BackendId) -> str:
        if self.exec_in_instance is None:
            raise CheckFailed("no LXD client to run the command with")
        argv = tuple(check.command or ())
        if not argv:
            raise CheckFailed("no command to run")
        loop = asyncio.get_running_loop()
        run = self.exec_in_instance
        code = await loop.run_in_executor(
            self.executor, run, backend.project, backend.instance, argv, check.timeout
        )
        if code != 0:
            raise CheckFailed(f"{argv[0]} exited with {code}")
        return f"{argv[0]} exited with 0"


def _where(target: IPAddress, port: int) -> str:
    return f"[{target}]:{port}" if target.version == 6 else f"{target}:{port}"


async def tcp_check(target: IPAddress, port: int) -> str:
    _, writer = await asyncio.open_connection(str(target), port)
    await _close(writer)
    return f"connected to {_where(target, port)}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _Datagrams(asyncio.DatagramProtocol):
    """Datagrams from the one peer a connected UDP socket hears, and its ICMP errors, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)

    async def next(self) -> bytes:
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item


async def _exchange(
    target: IPAddress, port: int, payload: bytes, judge: Callable[[bytes], str | None]
) -> str:
    """Send one datagram and read replies until `judge` accepts one (returns the reason) or the
    caller's timeout ends it; `judge` raises CheckFailed for a reply that fails the check."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(str(target), port))
    try:
        transport.sendto(payload)
        while True:
            verdict = judge(await protocol.next())
            if verdict is not None:
                return verdict
    finally:
        transport.close()


async def udp_check(target: IPAddress, port: int, check: HealthCheckConfig) -> str:
    expect = check.expect

    def judge(reply: bytes) -> str:
        if expect is None:
            return f"{len(reply)}-byte reply"
        if expect.encode() in reply:
            return f"reply contains {expect!r}"
        raise CheckFailed(f"reply does not contain {expect!r}: {reply[:40]!r}")

    return await _exchange(target, port, (check.send or "").encode(), judge)


async def dns_check(target: IPAddress, port: int, check: HealthCheckConfig) -> str:
    name = check.query or "."
    query_id = random.getrandbits(16)
    try:
        query = dns_wire.query(query_id, name, check.query_type)
    except dns_wire.BadName as exc:
        raise CheckFailed(f"cannot ask for {name!r}: {exc}") from exc
    asked = f"{check.query_type} {name}"

    def judge(datagram: bytes) -> str | None:
        reply = dns_wire.read_reply(datagram, query_id, name, check.query_type)
        if isinstance(reply, str):
            return None  # not the answer to this query (a late one to an earlier check): wait on
        if reply.rcode_name != check.rcode:
            raise CheckFailed(f"{asked}: {reply.rcode_name}, expected {check.rcode}")
        if check.answer and reply.answers == 0:
            raise CheckFailed(f"{asked}: {reply.rcode_name} with no answer record")
        return f"{asked}: {reply.rcode_name}, {reply.answers} answer(s)"

    return await _exchange(target, port, query, judge)


def _no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def request(check: HealthCheckConfig, target: IPAddress, port: int) -> bytes:
    host = _where(target, port)
    return (
        f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {_USER_AGENT}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


def status_of(line: bytes) -> int | None:
    """The status code of an HTTP/1.x status line, or None when it is not one."""
    match = _STATUS_LINE.fullmatch(line)
    return int(match.group(1)) if match else None


async def http_check(target: IPAddress, port: int, check: HealthCheckConfig) -> str:
    tls = _no_verify() if check.type == "https" else None
    reader, writer = await asyncio.open_connection(str(target), port, ssl=tls, limit=_MAX_STATUS_LINE)
    try:
        writer.write(request(check, target, port))
        await writer.drain()
        try:
            line = await reader.readline()
        except ValueError as exc:  # asyncio's limit: a line longer than any status line
            raise CheckFailed("no HTTP status line in the reply") from exc
    finally:
        await _close(writer)
    status = status_of(line)
    if status is None:
        shown = line[:40].decode("ascii", "replace").strip() or "nothing"
        raise CheckFailed(f"no HTTP status line in the reply (got {shown!r})")
    wanted = " or ".join(map(str, check.status))
    if status not in check.status:
        raise CheckFailed(f"HTTP {status}, expected {wanted}")
    return f"HTTP {status}"
