"""The agent skeleton and fabricctl, as real processes talking over a real unix socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabricd.cli import fabricctl
from fabricd.control_protocol import STATUS_KEYS

PY = sys.executable


def write_config(tmp_path: Path, socket_path: Path) -> Path:
    config = tmp_path / "fabricd.yaml"
    config.write_text(
        "host:\n"
        "  name: t1\n"
        "  underlay_address: 192.0.2.11\n"
        "control:\n"
        f"  socket: {socket_path}\n"
        "reconcile:\n"
        "  interval: 0.2\n"
    )
    return config


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "fabricd.cli.fabricctl", *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    sock = tmp_path / "run" / "fabricd.sock"
    config = write_config(tmp_path, sock)
    proc = subprocess.Popen(
        [PY, "-m", "fabricd.cli.agent_main", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "agent did not open its socket"
        time.sleep(0.05)
    yield proc, sock
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_status_json_has_the_documented_keys(agent: tuple[subprocess.Popen[str], Path]) -> None:
    _, sock = agent
    result = ctl("--socket", str(sock), "status", "--json")
    # Degraded (3), not healthy: this agent has no LXD to talk to, and says so.
    assert result.returncode == 3, result.stderr
    status = json.loads(result.stdout)
    assert status["health"]["code"] == 3 and status["health"]["reasons"]
    assert set(STATUS_KEYS) <= set(status)
    assert status["host"]["name"] == "t1"
    assert status["host"]["underlay_address"] == "192.0.2.11"
    assert status["bgp_peers"] == [] and status["routes"] == [] and status["overlay_peers"] == []
    assert status["authority"] is None


def test_reconcile_loop_runs_passes(agent: tuple[subprocess.Popen[str], Path]) -> None:
    _, sock = agent
    first = fabricctl.request(sock, "status", 5)["reconcile"]["passes"]
    time.sleep(0.7)
    later = fabricctl.request(sock, "status", 5)["reconcile"]["passes"]
    assert later >= first + 2  # interval 0.2 s


def test_status_text_and_socket_mode(agent: tuple[subprocess.Popen[str], Path]) -> None:
    _, sock = agent
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    result = ctl("--socket", str(sock), "status")
    assert result.returncode == 3  # no LXD here
    assert "fabricd" in result.stdout and "t1" in result.stdout and "BGP peers: none" in result.stdout
    routes = ctl("--socket", str(sock), "routes", "--json")
    assert json.loads(routes.stdout) == {"routes": []}


def test_peers_and_check_views_of_a_real_agent(agent: tuple[subprocess.Popen[str], Path]) -> None:
    _, sock = agent
    peers = ctl("--socket", str(sock), "peers", "--json")
    assert peers.returncode == 3, peers.stderr  # answered, degraded: no LXD here
    shown = json.loads(peers.stdout)
    assert set(shown) == {"bgp_peers", "bfd_sessions", "overlay", "overlay_peers", "health"}
    assert shown["bgp_peers"] == [] and shown["overlay"] is None
    check = ctl("--socket", str(sock), "check")
    assert check.returncode == 3 and check.stdout.startswith("FABRICD DEGRADED - ")
    assert "lxd unreachable" in check.stdout or "starting" in check.stdout
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX) as conn:  # bad args: an error reply, the agent goes on
        conn.connect(str(sock))
        conn.sendall(b'{"command": "sections", "args": {"keys": "bgp_peers"}}\n')
        reply = json.loads(conn.makefile("rb").readline())
    assert reply == {"ok": False, "error": "sections needs args.keys, a list of status keys"}
    assert ctl("--socket", str(sock), "check").returncode == 3


def test_fabricctl_finds_socket_through_config_and_env(
    agent: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    _, sock = agent
    assert ctl("--config", str(tmp_path / "fabricd.yaml"), "status", "--json").returncode == 3
    env = dict(os.environ, FABRICD_SOCKET=str(sock))
    out = subprocess.run(
        [PY, "-m", "fabricd.cli.fabricctl", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 3  # answered; degraded as no LXD runs here


def test_sigterm_exits_cleanly_and_removes_socket(agent: tuple[subprocess.Popen[str], Path]) -> None:
    proc, sock = agent
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not sock.exists()
    assert proc.stderr is not None
    events = [json.loads(line)["event"] for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert "fabricd started" in events and "fabricd stopped" in events


def test_second_agent_on_same_socket_refuses(
    agent: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    _, sock = agent
    second = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "run", "--config", str(tmp_path / "fabricd.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "already answering" in second.stderr
    assert ctl("--socket", str(sock), "status", "--json").returncode == 3  # the first one still answers


def test_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    import socket as socketlib

    sock = tmp_path / "run" / "fabricd.sock"
    sock.parent.mkdir()
    stale = socketlib.socket(socketlib.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: what a SIGKILLed agent leaves
    config = write_config(tmp_path, sock)
    proc = subprocess.Popen(
        [PY, "-m", "fabricd.cli.agent_main", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while ctl("--socket", str(sock), "status", "--json").returncode not in (0, 3):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        ("missing", "no control socket at"),
        ("dead", "nothing listens on"),
    ],
)
def test_fabricctl_without_agent_is_one_line_exit_1(tmp_path: Path, prepare: str, expected: str) -> None:
    sock = tmp_path / "fabricd.sock"
    if prepare == "dead":
        import socket as socketlib

        s = socketlib.socket(socketlib.AF_UNIX)
        s.bind(str(sock))
        s.close()
    result = ctl("--socket", str(sock), "status")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert "Traceback" not in result.stderr


def test_fabricctl_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("host: [\n")
    result = ctl("--config", str(bad), "status")
    assert result.returncode == 1 and "Traceback" not in result.stderr and str(bad) in result.stderr


def test_check_config_good_and_bad(tmp_path: Path) -> None:
    good = write_config(tmp_path, tmp_path / "s.sock")
    ok = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "check-config", str(good)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "host:\n  name: h1\n  underlay_address: 10.0.0.1\n"
        "bgp:\n  local_asn: 65001\n  peers:\n"
        "    - address: 10.0.0.254\n      asn: 65000\n"
        "    - address: 10.0.0.253\n      asn: sixty-five\n"
    )
    result = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{bad}:10:" in result.stderr and "bgp.peers[1].asn" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_bad_config_starts_nothing(tmp_path: Path) -> None:
    sock = tmp_path / "never.sock"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"host:\n  name: h1\ncontrol:\n  socket: {sock}\n")  # underlay_address missing
    result = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "host.underlay_address" in result.stderr or "underlay_address" in result.stderr
    assert not sock.exists()


def test_help_teaches() -> None:
    for module in ("fabricd.cli.agent_main", "fabricd.cli.fabricctl", "fabric_lab.cli"):
        out = subprocess.run([PY, "-m", module, "--help"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "examples:" in out.stdout


def test_agent_tells_systemd_it_is_ready_after_the_first_pass(tmp_path: Path) -> None:
    import socket as sockets

    notify_path = tmp_path / "notify"
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(15)
        config = write_config(tmp_path, tmp_path / "run" / "fabricd.sock")
        proc = subprocess.Popen(
            [PY, "-m", "fabricd.cli.agent_main", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
        )
        try:
            assert listener.recv(64) == b"READY=1"
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def test_check_config_no_longer_warns_about_built_settings(tmp_path: Path) -> None:
    config = tmp_path / "fabricd.yaml"
    config.write_text(
        "host: {name: h1, underlay_address: 192.0.2.11}\n"
        "services: [{name: dns, addresses: [10.250.0.53], backends: {key: true}}]\n"
        "metrics: {listen: '127.0.0.1:9464'}\n"
    )
    out = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "check-config", str(config)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr  # services are built: no warning
    assert "metrics.listen" not in out.stderr  # the endpoint is built: no warning
    plain = tmp_path / "plain.yaml"
    plain.write_text("host: {name: h1, underlay_address: 192.0.2.11}\n")
    out = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "check-config", str(plain)], capture_output=True, text=True
    )
    assert out.returncode == 0 and "warning" not in out.stderr


def test_a_metrics_address_that_cannot_be_bound_stops_the_start(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "fabricd.sock"
    config = write_config(tmp_path, sock)
    # 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails at once, and nothing is sent.
    config.write_text(config.read_text() + "metrics:\n  listen: 192.0.2.1:9464\n")
    result = subprocess.run(
        [PY, "-m", "fabricd.cli.agent_main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot open the metrics endpoint" in result.stderr and "192.0.2.1:9464" in result.stderr
    assert not sock.exists()  # the control socket it had opened is gone again
