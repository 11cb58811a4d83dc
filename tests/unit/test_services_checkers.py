"""Health checkers against servers this test starts on 127.0.0.1 (the test process's own loopback).

The DNS server answers with scapy, an implementation independent of the checker's own wire code.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.config.model import HealthCheckConfig
from fabricd.services.checkers import Checker, request, status_of
from fabricd.services.health import CheckResult
from fabricd.services.model import BackendId

LOOPBACK = IPv4Address("127.0.0.1")
BACKEND = BackendId("web", "default", "web-1")
_T = TypeVar("_T")


def run(coro: Awaitable[_T]) -> _T:
    async def main() -> _T:
        return await coro

    return asyncio.run(main())


def check_once(check: HealthCheckConfig, checker: Checker | None = None) -> CheckResult:
    return run((checker or Checker()).check(check, BACKEND, LOOPBACK))


def tcp(port: int, timeout: float = 1.0) -> HealthCheckConfig:
    return HealthCheckConfig("tcp", port, interval=timeout, timeout=timeout)


# -- servers ---------------------------------------------------------------------------------------


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def bound_not_listening() -> Iterator[int]:
    """A TCP port nobody listens on, held so nothing else takes it: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


class UDPServer:
    """Answers each datagram with `answer(data)` (None: stays silent), in a thread."""

    def __init__(self, answer: Callable[[bytes], Sequence[bytes] | None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.answer = answer
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            for reply in self.answer(data) or ():
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def udp_server() -> Iterator[Callable[[Callable[[bytes], Sequence[bytes] | None]], UDPServer]]:
    servers: list[UDPServer] = []

    def start(answer: Callable[[bytes], Sequence[bytes] | None]) -> UDPServer:
        servers.append(UDPServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class StatusHandler(BaseHTTPRequestHandler):
    """`GET /status/NNN` answers NNN; anything else 404."""

    def do_GET(self) -> None:
        parts = self.path.split("/")
        code = int(parts[2]) if len(parts) == 3 and parts[1] == "status" and parts[2].isdigit() else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_http(tls: ssl.SSLContext | None = None) -> tuple[ThreadingHTTPServer, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def http_port() -> Iterator[int]:
    server, port = serve_http()
    yield port
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.fixture
def raw_tcp_server() -> Iterator[Callable[[bytes | None], int]]:
    """Accepts connections and sends fixed bytes (None: says nothing, keeps the connection open)."""
    sockets: list[socket.socket] = []
    stopping = threading.Event()

    def start(reply: bytes | None) -> int:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.1)
        sockets.append(server)

        def serve() -> None:
            while not stopping.is_set():
                try:
                    conn, _ = server.accept()
                except (TimeoutError, OSError):
                    continue
                sockets.append(conn)
                if reply is not None:
                    conn.sendall(reply)
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return int(server.getsockname()[1])

    yield start
    stopping.set()
    time.sleep(0.15)
    for sock in sockets:
        sock.close()


# -- tcp -------------------------------------------------------------------------------------------


def test_tcp_passes_when_the_port_accepts(tcp_listener: int) -> None:
    result = check_once(tcp(tcp_listener))
    assert result.ok
    assert result.reason.startswith(f"connected to 127.0.0.1:{tcp_listener} in ")


def test_tcp_fails_when_the_port_refuses(bound_not_listening: int) -> None:
    result = check_once(tcp(bound_not_listening))
    assert (result.ok, result.reason) == (False, "connection refused")


def test_result_is_stamped_with_the_checkers_clock(tcp_listener: int) -> None:
    result = check_once(tcp(tcp_listener), Checker(clock=lambda: 1234.5))
    assert result.at == 1234.5


def test_no_target_address_fails_with_the_reason() -> None:
    result = run(Checker().check(tcp(80), BACKEND, None))
    assert (result.ok, result.reason) == (False, "no address to run the tcp check against")


# -- udp -------------------------------------------------------------------------------------------


def udp(port: int, send: str = "ping", expect: str | None = None, timeout: float = 0.5) -> HealthCheckConfig:
    return HealthCheckConfig("udp", port, interval=timeout, timeout=timeout, send=send, expect=expect)


def test_udp_passes_on_a_reply_with_the_expected_text(udp_server: Any) -> None:
    server = udp_server(lambda data: [b"pong:" + data])
    result = check_once(udp(server.port, expect="pong:ping"))
    assert result.ok, result.reason
    assert result.reason.startswith("reply contains 'pong:ping' in ")


def test_udp_without_expect_passes_on_any_reply(udp_server: Any) -> None:
    server = udp_server(lambda data: [b"x"])
    result = check_once(udp(server.port))
    assert result.ok and result.reason.startswith("1-byte reply")


def test_udp_fails_on_a_reply_without_the_expected_text(udp_server: Any) -> None:
    server = udp_server(lambda data: [b"error"])
    result = check_once(udp(server.port, expect="pong"))
    assert (result.ok, result.reason) == (False, "reply does not contain 'pong': b'error'")


def test_udp_silence_is_a_timeout(udp_server: Any) -> None:
    server = udp_server(lambda data: None)
    started = time.monotonic()
    result = check_once(udp(server.port, timeout=0.3))
    assert (result.ok, result.reason) == (False, "no answer within 0.3 s")
    assert 0.25 <= time.monotonic() - started < 3.0


def test_udp_to_a_closed_port_is_unreachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = check_once(udp(port, timeout=2.0))
    assert (result.ok, result.reason) == (False, "port unreachable")


# -- dns -------------------------------------------------------------------------------------------


def dns(port: int, **fields: Any) -> HealthCheckConfig:
    return HealthCheckConfig("dns", port, interval=1.0, timeout=1.0, query="svc.fabric.test", **fields)


def scapy_answer(rcode: int = 0, answers: int = 1, id_offset: int = 0) -> Callable[[bytes], list[bytes]]:
    from scapy.layers.dns import DNS, DNSRR

    def answer(data: bytes) -> list[bytes]:
        query = DNS(data)
        records = [DNSRR(rrname=query.qd[0].qname, type="A", ttl=60, rdata=f"10.0.0.{n + 1}")
                   for n in range(answers)]  # fmt: skip
        reply = DNS(id=(query.id + id_offset) % 65536, qr=1, rd=query.rd, ra=1, rcode=rcode, qd=query.qd,
                    an=records)  # fmt: skip
        return [bytes(reply)]

    return answer


def test_dns_passes_on_noerror_with_an_answer(udp_server: Any) -> None:
    server = udp_server(scapy_answer())
    result = check_once(dns(server.port))
    assert result.ok, result.reason
    assert result.reason.startswith("A svc.fabric.test: NOERROR, 1 answer(s) in ")


def test_dns_fails_on_another_rcode(udp_server: Any) -> None:
    server = udp_server(scapy_answer(rcode=2, answers=0))
    result = check_once(dns(server.port))
    assert (result.ok, result.reason) == (False, "A svc.fabric.test: SERVFAIL, expected NOERROR")


def test_dns_expected_nxdomain_passes(udp_server: Any) -> None:
    server = udp_server(scapy_answer(rcode=3, answers=0))
    result = check_once(dns(server.port, rcode="NXDOMAIN", answer=False))
    assert result.ok, result.reason


def test_dns_noerror_without_answer_fails_only_when_an_answer_is_required(udp_server: Any) -> None:
    server = udp_server(scapy_answer(answers=0))
    result = check_once(dns(server.port))
    assert (result.ok, result.reason) == (False, "A svc.fabric.test: NOERROR with no answer record")
    assert check_once(dns(server.port, answer=False)).ok


def test_dns_ignores_a_reply_to_another_query(udp_server: Any) -> None:
    stale, right = scapy_answer(id_offset=1), scapy_answer(answers=2)
    server = udp_server(lambda data: [*stale(data), *right(data)])
    result = check_once(dns(server.port, query_type="A"))
    assert result.ok, result.reason
    assert "2 answer(s)" in result.reason


def test_dns_with_only_wrong_replies_times_out(udp_server: Any) -> None:
    server = udp_server(scapy_answer(id_offset=7))
    result = check_once(HealthCheckConfig("dns", server.port, interval=0.3, timeout=0.3, query="a.test"))
    assert (result.ok, result.reason) == (False, "no answer within 0.3 s")


# -- http(s) ---------------------------------------------------------------------------------------


def http(port: int, path: str = "/status/200", status: tuple[int, ...] = (200,), kind: str = "http",
         timeout: float = 2.0) -> HealthCheckConfig:  # fmt: skip
    return HealthCheckConfig(kind, port, interval=timeout, timeout=timeout, path=path, status=status)


def test_http_passes_on_an_expected_status(http_port: int) -> None:
    result = check_once(http(http_port))
    assert result.ok and result.reason.startswith("HTTP 200 in ")
    assert check_once(http(http_port, "/status/204", status=(200, 204))).ok


def test_http_fails_on_another_status(http_port: int) -> None:
    result = check_once(http(http_port, "/status/503"))
    assert (result.ok, result.reason) == (False, "HTTP 503, expected 200")
    result = check_once(http(http_port, "/missing", status=(200, 204)))
    assert (result.ok, result.reason) == (False, "HTTP 404, expected 200 or 204")


def test_https_passes_without_verifying_the_certificate(tls_context: ssl.SSLContext) -> None:
    server, port = serve_http(tls_context)
    try:
        assert check_once(http(port, kind="https")).ok
        result = check_once(http(port, "/status/500", kind="https"))
        assert (result.ok, result.reason) == (False, "HTTP 500, expected 200")
        plain = check_once(http(port, kind="http", timeout=1.0))  # plain HTTP to a TLS port: no status
        assert not plain.ok
    finally:
        server.shutdown()
        server.server_close()


def test_http_to_a_server_that_is_not_http_fails(raw_tcp_server: Any) -> None:
    port = raw_tcp_server(b"SSH-2.0-OpenSSH_9.6\r\n")
    result = check_once(http(port))
    assert (result.ok, result.reason) == (
        False,
        "no HTTP status line in the reply (got 'SSH-2.0-OpenSSH_9.6')",
    )


def test_http_to_a_silent_server_times_out(raw_tcp_server: Any) -> None:
    port = raw_tcp_server(None)
    result = check_once(http(port, timeout=0.3))
    assert (result.ok, result.reason) == (False, "no answer within 0.3 s")


def test_http_refused(bound_not_listening: int) -> None:
    result = check_once(http(bound_not_listening))
    assert (result.ok, result.reason) == (False, "connection refused")


def test_the_request_names_the_host_as_http_wants_it() -> None:
    check = http(8080, "/healthz")
    assert request(check, IPv6Address("fd00::11"), 8080) == (
        b"GET /healthz HTTP/1.1\r\nHost: [fd00::11]:8080\r\nUser-Agent: fabricd-health-check\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n"
    )
    assert b"Host: 127.0.0.1:8080\r\n" in request(check, LOOPBACK, 8080)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_status_of_reads_only_status_lines(line: bytes) -> None:
    status = status_of(line)
    if status is not None:
        assert line.startswith((b"HTTP/1.0 ", b"HTTP/1.1 ")) and 100 <= status <= 599
        assert line[9:12] == str(status).encode()


@given(
    st.integers(100, 599),
    st.sampled_from([b"HTTP/1.0", b"HTTP/1.1"]),
    st.sampled_from([b"", b" OK", b" x y"]),
)
def test_status_of_finds_every_status(status: int, version: bytes, text: bytes) -> None:
    assert status_of(version + b" " + str(status).encode() + text + b"\r\n") == status


# -- exec ------------------------------------------------------------------------------------------


EXEC = HealthCheckConfig("exec", None, interval=0.5, timeout=0.2, command=("/usr/bin/check", "--quick"))


def test_exec_passes_on_exit_zero_and_gets_the_instance_and_argv() -> None:
    calls: list[tuple[str, str, tuple[str, ...], float]] = []

    def exec_in_instance(project: str, instance: str, argv: Sequence[str], timeout: float) -> int:
        calls.append((project, instance, tuple(argv), timeout))
        return 0

    result = check_once(EXEC, Checker(exec_in_instance))
    assert result.ok and result.reason.startswith("/usr/bin/check exited with 0")
    assert calls == [("default", "web-1", ("/usr/bin/check", "--quick"), 0.2)]


def test_exec_fails_on_another_exit_code() -> None:
    result = check_once(EXEC, Checker(lambda *_: 3))
    assert (result.ok, result.reason) == (False, "/usr/bin/check exited with 3")


def test_exec_without_an_lxd_client_fails_with_the_reason() -> None:
    result = check_once(EXEC)
    assert (result.ok, result.reason) == (False, "no LXD client to run the command with")


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from([RuntimeError, ValueError, KeyError, OSError, ConnectionError, ZeroDivisionError]),
    st.text(max_size=20),
)
def test_exec_never_raises_whatever_the_client_raises(error: type[Exception], message: str) -> None:
    def exec_in_instance(*_: Any) -> int:
        raise error(message)

    result = check_once(EXEC, Checker(exec_in_instance))
    assert not result.ok and result.reason


def test_a_hanging_exec_times_out_without_blocking_the_event_loop() -> None:
    release = threading.Event()

    def exec_in_instance(*_: Any) -> int:
        release.wait(5)  # blocks its thread, as pylxd's exec does
        return 0

    async def main() -> tuple[CheckResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await Checker(exec_in_instance, executor=executor).check(EXEC, BACKEND, None)
        task.cancel()
        return result, ticks

    # Its own executor: asyncio.run waits for the default executor's threads, a hung one included.
    executor = ThreadPoolExecutor(1)
    started = time.monotonic()
    try:
        result, ticks = asyncio.run(main())
        elapsed = time.monotonic() - started
    finally:
        release.set()
        executor.shutdown()
    assert elapsed < 2.0, elapsed
    assert (result.ok, result.reason) == (False, "no answer within 0.2 s")
    assert ticks >= 5  # the loop ran on while the command hung (about 20 ticks on an idle machine)


def test_many_checks_run_concurrently(http_port: int, udp_server: Any) -> None:
    """Ten backends whose checks each wait out a 0.5 s timeout take about 0.5 s together, not 5 s."""
    silent = udp_server(lambda data: None)

    async def main() -> list[CheckResult]:
        checker = Checker()
        slow = udp(silent.port, timeout=0.5)
        return list(await asyncio.gather(*(checker.check(slow, BACKEND, LOOPBACK) for _ in range(10)),
                                         checker.check(http(http_port), BACKEND, LOOPBACK)))  # fmt: skip

    started = time.monotonic()
    results = asyncio.run(main())
    elapsed = time.monotonic() - started
    assert [r.ok for r in results] == [False] * 10 + [True]
    assert 0.45 < elapsed < 2.5, elapsed


# -- hostile replies -------------------------------------------------------------------------------


class Replies:
    """What the module's servers answer with; set per example."""

    tcp: bytes = b""
    udp: bytes = b""


@pytest.fixture(scope="module")
def hostile_servers() -> Iterator[tuple[int, int]]:
    """A TCP server that sends `Replies.tcp` and closes, and a UDP server that answers
    `Replies.udp` with the query's ID in front (so the DNS check reads past its header check)."""
    stopping = threading.Event()
    tcp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_sock.bind(("127.0.0.1", 0))
    tcp_sock.listen(16)
    tcp_sock.settimeout(0.1)
    udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_sock.bind(("127.0.0.1", 0))
    udp_sock.settimeout(0.1)

    def serve_tcp() -> None:
        while not stopping.is_set():
            try:
                conn, _ = tcp_sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(Replies.tcp)

    def serve_udp() -> None:
        while not stopping.is_set():
            try:
                data, peer = udp_sock.recvfrom(4096)
            except OSError:
                continue
            udp_sock.sendto(data[:2] + Replies.udp, peer)

    threads = [
        threading.Thread(target=serve_tcp, daemon=True),
        threading.Thread(target=serve_udp, daemon=True),
    ]
    for thread in threads:
        thread.start()
    yield tcp_sock.getsockname()[1], udp_sock.getsockname()[1]
    stopping.set()
    for thread in threads:
        thread.join(timeout=2)
    tcp_sock.close()
    udp_sock.close()


status_lines = st.builds(
    lambda n, rest: b"HTTP/1.1 %d" % n + rest, st.integers(0, 999), st.binary(max_size=40)
)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=300), status_lines))
def test_any_http_reply_gives_a_result_that_matches_its_status_line(
    hostile_servers: tuple[int, int], reply: bytes
) -> None:
    Replies.tcp = reply
    result = check_once(http(hostile_servers[0], status=(200,)))
    line = reply.split(b"\n", 1)[0] + (b"\n" if b"\n" in reply else b"")
    assert result.ok == (status_of(line) == 200), (reply, result)
    assert result.reason


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=60))
def test_any_dns_reply_gives_a_result(hostile_servers: tuple[int, int], rest: bytes) -> None:
    Replies.udp = rest
    check = HealthCheckConfig(
        "dns", hostile_servers[1], interval=0.2, timeout=0.2, query="a.test", answer=False
    )
    result = check_once(check)
    assert result.reason
    assert not result.ok or result.reason.startswith("A a.test: NOERROR")
