"""fabricctl's exit codes and views against a stand-in agent: a real unix socket answering canned
replies in the agent's wire format."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabricd.agent.health import verdict
from fabricd.cli import fabricctl
from fabricd.control_protocol import decode, encode

PY = sys.executable

PEERS_UP = [
    {"name": "r1", "address": "10.99.1.1", "asn": 65000, "state": "established", "uptime_seconds": 61,
     "prefixes_sent": 3, "flaps": 1, "last_error": None},
]  # fmt: skip
PEERS_DOWN = [{**PEERS_UP[0], "state": "idle", "uptime_seconds": None, "last_error": "hold timer expired"}]
OVERLAY = {"bridge": "fabric0", "vni": 100, "port": 4789, "state": "up", "mtu": 1450, "mtu_source": "auto",
           "known_macs": 2, "flood": [{"vtep": "10.99.2.12", "peer": "h2"}]}  # fmt: skip
OVERLAY_PEERS = [{"name": "h2", "address": "10.99.2.12", "state": "up", "flood": True, "reason": None}]


def status(
    peers: list[dict[str, Any]], problems: tuple[str, ...] = (), routes: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    return {
        "host": {"name": "h1", "underlay_address": "10.99.1.11", "version": "0.1.0", "pid": 1},
        "bgp_peers": peers,
        "routes": list(routes),
        "overlay": OVERLAY,
        "overlay_peers": OVERLAY_PEERS,
        "authority": None,
        "reconcile": {"passes": 4},
        "problems": list(problems),
    }


class FakeAgent:
    """Answers each connection from `status` the way the agent does, health included."""

    def __init__(self, path: Path, status: dict[str, Any], send_health: bool = True) -> None:
        self.path, self.status, self.send_health = path, status, send_health
        self.commands: list[str] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _result(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        s = self.status
        if command == "sections":
            return {k: s[k] for k in args["keys"] if k in s}  # as the agent: absent keys are left out
        if command == "health":
            return verdict(s).as_dict()
        if command == "routes":
            return {"routes": s["routes"]}
        if command == "events":
            return {"events": []}
        return s

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                request = decode(conn.makefile("rb").readline())
                command = str(request["command"])
                self.commands.append(command)
                reply: dict[str, Any] = {"ok": True, "result": self._result(command, request.get("args", {}))}
                if self.send_health:
                    reply["health"] = verdict(self.status).as_dict()
                conn.sendall(encode(reply))

    def close(self) -> None:
        self._listener.close()


@contextlib.contextmanager
def fake_agent(tmp_path: Path, reply: dict[str, Any], send_health: bool = True) -> Iterator[FakeAgent]:
    agent = FakeAgent(tmp_path / "fabricd.sock", reply, send_health)
    try:
        yield agent
    finally:
        agent.close()


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "fabricd.cli.fabricctl", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


VIEWS = (["status"], ["status", "--json"], ["peers"], ["peers", "--json"], ["check"], ["check", "--json"],
         ["routes"], ["routes", "--json"], ["events", "--json"])  # fmt: skip


@pytest.mark.parametrize("view", VIEWS, ids=" ".join)
def test_healthy_agent_exits_0_on_every_view(tmp_path: Path, view: list[str]) -> None:
    with fake_agent(tmp_path, status(PEERS_UP)) as agent:
        out = ctl(agent.path, *view)
    assert out.returncode == 0, out.stderr
    if "--json" in view:
        json.loads(out.stdout)


@pytest.mark.parametrize("view", VIEWS, ids=" ".join)
def test_peer_down_exits_3_on_every_view(tmp_path: Path, view: list[str]) -> None:
    with fake_agent(tmp_path, status(PEERS_DOWN)) as agent:
        out = ctl(agent.path, *view)
    assert out.returncode == 3, out.stderr


def test_problem_or_refused_route_exits_3_and_check_names_them(tmp_path: Path) -> None:
    refused = ({"prefix": "10.9.0.0/24", "state": "refused", "reason": "outside the allowed ranges"},)
    reply = status(PEERS_UP, ("second DHCP server on the overlay: 10.0.0.9",), refused)
    with fake_agent(tmp_path, reply) as agent:
        line = ctl(agent.path, "check")
        as_json = ctl(agent.path, "check", "--json")
        text = ctl(agent.path, "status")
        asked = list(agent.commands)
    assert line.returncode == 3 and line.stdout.count("\n") == 1
    assert line.stdout.startswith("FABRICD DEGRADED - 2 problem(s): second DHCP server on the overlay")
    assert "1 route(s) refused: 10.9.0.0/24: outside the allowed ranges" in line.stdout
    assert json.loads(as_json.stdout)["code"] == 3 and json.loads(as_json.stdout)["state"] == "degraded"
    assert text.returncode == 3 and "health: degraded (exit 3); problems:" in text.stdout
    assert asked[:2] == ["health", "health"]  # check asks for the verdict only, no route table


def test_check_stays_one_line_when_a_reason_has_several(tmp_path: Path) -> None:
    reply = status(PEERS_UP, ("overlay apply failed: nft: Operation not permitted\nnetlink: Error",))
    with fake_agent(tmp_path, reply) as agent:
        out = ctl(agent.path, "check")
    assert out.returncode == 3
    expected = (
        "FABRICD DEGRADED - 1 problem(s): overlay apply failed: nft: Operation not permitted netlink: Error\n"
    )
    assert out.stdout == expected


def test_check_healthy_line(tmp_path: Path) -> None:
    with fake_agent(tmp_path, status(PEERS_UP)) as agent:
        out = ctl(agent.path, "check")
    assert (out.returncode, out.stdout) == (0, "FABRICD OK - healthy\n")


def test_status_json_carries_the_verdict_and_the_agents_keys(tmp_path: Path) -> None:
    with fake_agent(tmp_path, status(PEERS_DOWN)) as agent:
        out = ctl(agent.path, "status", "--json")
    shown = json.loads(out.stdout)
    assert shown["health"] == {
        "code": 3,
        "state": "degraded",
        "reasons": ["bgp peer r1 (10.99.1.1) is idle: hold timer expired"],
    }
    assert shown["host"]["name"] == "h1" and shown["bgp_peers"] == PEERS_DOWN


def test_peers_view_lists_sessions_and_overlay(tmp_path: Path) -> None:
    with fake_agent(tmp_path, status(PEERS_UP)) as agent:
        text = ctl(agent.path, "peers")
        as_json = ctl(agent.path, "peers", "--json")
    lines = text.stdout.splitlines()
    assert lines[0].split() == [
        "BGP",
        "PEER",
        "ADDRESS",
        "ASN",
        "STATE",
        "UPTIME",
        "SENT",
        "FLAPS",
        "LAST",
        "ERROR",
    ]
    assert lines[1].split()[:7] == ["r1", "10.99.1.1", "65000", "established", "1m1s", "3", "1"]
    assert "OVERLAY PEER" in text.stdout and "10.99.2.12" in text.stdout
    shown = json.loads(as_json.stdout)
    assert shown["bgp_peers"] == PEERS_UP and shown["overlay_peers"] == OVERLAY_PEERS
    assert shown["health"]["code"] == 0


def test_an_agent_without_a_verdict_is_judged_from_its_status(tmp_path: Path) -> None:
    with fake_agent(tmp_path, status(PEERS_DOWN), send_health=False) as agent:
        assert ctl(agent.path, "status", "--json").returncode == 3
    (tmp_path / "old").mkdir()
    with fake_agent(tmp_path / "old", status(PEERS_UP), send_health=False) as agent:
        assert ctl(agent.path, "status").returncode == 0


def test_help_documents_the_exit_codes() -> None:
    out = subprocess.run([PY, "-m", "fabricd.cli.fabricctl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for needle in ("exit codes", "0  healthy", "1  unreachable", "3  degraded", "fabricctl peers"):
        assert needle in out.stdout


def _as_nobody(sock: Path, groups: tuple[int, ...] = ()) -> tuple[int, str]:
    """Run fabricctl in a child that dropped root for `nobody` (with these supplementary groups);
    returns its exit and stderr."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        sys.stderr = err = open(write_end, "w", closefd=False)  # noqa: SIM115 (flushed before _exit)
        try:
            if os.geteuid() == 0:
                os.setgroups(list(groups))
                os.setgid(65534)
                os.setuid(65534)
            code = fabricctl.main(["--socket", str(sock), "status"])
        finally:
            err.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as err:
        text = err.read()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), text


def test_permission_denied_is_one_line_naming_the_group() -> None:
    directory = Path(tempfile.mkdtemp(prefix="fabricctl-perm-"))
    try:
        directory.chmod(0o755)  # anyone may look in; only the socket's group may connect
        with fake_agent(directory, status(PEERS_UP)) as agent:
            if os.geteuid() == 0:
                os.chown(agent.path, -1, grp.getgrnam("users").gr_gid)
                agent.path.chmod(0o660)  # root drops to nobody, who is not in "users"
            else:
                agent.path.chmod(0o000)  # no write bit: even the owner may not connect
            group = grp.getgrgid(agent.path.stat().st_gid).gr_name
            code, err = _as_nobody(agent.path)
    finally:
        for item in directory.iterdir():
            item.unlink()
        directory.rmdir()
    assert code == 1
    hint = f"run as root or as a member of group {group}"
    assert err == f"fabricctl: permission denied on {agent.path}: {hint}\n"


def test_permission_denied_on_a_closed_directory_says_so() -> None:
    directory = Path(tempfile.mkdtemp(prefix="fabricctl-perm-"))
    try:
        with fake_agent(directory, status(PEERS_UP)) as agent:
            # As systemd makes /run/fabricd: root:root 0750, so nobody cannot get in. Not root:
            # a directory of our own that we cannot enter either.
            directory.chmod(0o750 if os.geteuid() == 0 else 0o000)
            code, err = _as_nobody(agent.path)
    finally:
        directory.chmod(0o700)
        for item in directory.iterdir():
            item.unlink()
        directory.rmdir()
    assert code == 1
    if os.geteuid() == 0:  # root:root, as systemd makes it: the config key that opens it is named
        hint = f"run as root ({directory} is closed to this user; control.group in fabricd.yaml opens it)"
    else:  # our own group's directory: that group is named
        group = grp.getgrgid(os.getgid()).gr_name
        hint = f"run as root or as a member of group {group} ({directory} is closed to others)"
    assert err == f"fabricctl: permission denied on {agent.path}: {hint}\n"


def test_unreachable_agent_exits_1(tmp_path: Path) -> None:
    out = ctl(tmp_path / "nothing.sock", "check")
    assert out.returncode == 1 and out.stdout == "" and "no control socket at" in out.stderr
