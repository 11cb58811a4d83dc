"""The anycast lab's query client and echo responder, on 127.0.0.1 (no lab needed), and the
windows the lab tests and bench read from the client's lines."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_lab.anycast_client import parse_answer
from fabric_lab.anycast_echo import answer
from fabric_lab.anycast_lab import summed

HOST_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(HOST_NAMES, st.integers(min_value=0, max_value=10**9))
def test_an_echoed_query_names_its_host_and_number(host: str, query: int) -> None:
    assert parse_answer(answer(host, f"q {query}".encode())) == (host, query)


@pytest.mark.parametrize("payload", [b"", b"h1", b"h1 q", b"h1 q x", b"h1 x 3", b"h1 q 3 extra", b"h1 q -3"])
def test_anything_else_is_no_answer(payload: bytes) -> None:
    assert parse_answer(payload) is None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def echo() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_udp_port()
    argv = [sys.executable, "-m", "fabric_lab.anycast_echo", "hx", str(port), "127.0.0.1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    assert b"answering on port" in proc.stdout.readline()
    try:
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def run_client(port: int, out: Path, seconds: float, rate: int = 200) -> list[dict[str, object]]:
    argv = [sys.executable, "-m", "fabric_lab.anycast_client", "--target", "127.0.0.1", "--port", str(port)]
    argv += ["--rate", str(rate), "--seconds", str(seconds), "--timeout", "0.3", "--out", str(out)]
    subprocess.run(argv, check=True, timeout=seconds + 10)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_every_query_is_answered_and_counted_by_host(
    echo: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    _, port = echo
    lines = run_client(port, tmp_path / "c.jsonl", 2)
    seconds, done = lines[:-1], lines[-1]
    assert [s["second"] for s in seconds] == [0, 1]
    assert all(s["sent"] == 200 and s["answered"] == {"hx": 200} and s["lost"] == 0 for s in seconds), seconds
    assert done == {"done": True, "sent": 400, "answered": {"hx": 400}, "lost": 0, "late": 0}


def test_unanswered_queries_are_lost_with_their_send_times(
    echo: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    proc, port = echo
    proc.kill()
    proc.wait()
    before = time.monotonic()
    lines = run_client(port, tmp_path / "c.jsonl", 1, rate=100)
    after = time.monotonic()
    seconds, done = lines[:-1], lines[-1]
    assert done["sent"] == done["lost"] == 100 and done["answered"] == {}, done
    lost_at = [t for s in seconds for t in s["lost_at"]]  # type: ignore[attr-defined]
    assert len(lost_at) == 100 and all(before <= t <= after for t in lost_at)
    assert lost_at == sorted(lost_at)


def line(index: int, start: float, answered: dict[str, int], lost_at: list[float]) -> dict[str, object]:
    sent = sum(answered.values()) + len(lost_at)
    return {
        "second": index,
        "start": start,
        "sent": sent,
        "answered": answered,
        "lost_at": lost_at,
        "late": 0,
    }


def test_a_window_sums_its_seconds_and_finds_losses_and_silences() -> None:
    lines = [
        line(0, 10.0, {"h1": 5, "h2": 5}, []),
        line(1, 11.0, {"h2": 5}, [11.2, 11.9]),
        line(2, 12.0, {}, [12.5]),
    ]
    window = summed(lines)
    assert (window.sent, window.lost, window.answered) == (18, 3, {"h1": 5, "h2": 10})
    assert window.lost_between(11.5, 12.5) == 1 and window.lost_between(11.0, 13.0) == 3
    assert window.silent_seconds() == [2]
