"""control.group under the unit: fabricd opens its own directory (systemd's /run/fabricd, 0750
root:root) to the group, so a member runs fabricctl and anyone else gets one clear line.

The real ControlServer on a real socket; fabricctl runs in a child that dropped root for nobody,
with or without the group."""

from __future__ import annotations

import asyncio
import grp
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fabricd.agent.control import ControlServer, open_directory_to_group
from fabricd.agent.health import verdict
from tests.unit.test_fabricctl_exit_codes import PEERS_UP, _as_nobody, status

HEALTHY = status(PEERS_UP)


def answer(command: str, args: dict[str, Any]) -> dict[str, Any]:
    if command == "sections":
        return {k: HEALTHY[k] for k in args["keys"] if k in HEALTHY}
    return verdict(HEALTHY).as_dict() if command == "health" else HEALTHY


@contextmanager
def agent(directory: Path, group: str | None, own: Path | None) -> Iterator[Path]:
    """A ControlServer listening in `directory` on an event loop of its own."""
    loop = asyncio.new_event_loop()
    server = ControlServer(
        directory / "fabricd.sock",
        0o660,
        group,
        answer,
        ("status", "health", "sections"),
        lambda: verdict(HEALTHY).as_dict(),
        own_directory=own,
    )
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.path
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(server.close())
        loop.close()


@pytest.fixture
def runtime_directory() -> Iterator[Path]:
    """A directory as systemd's RuntimeDirectory=fabricd with RuntimeDirectoryMode=0750 makes it."""
    directory = Path(tempfile.mkdtemp(prefix="fabricd-run-"))
    directory.chmod(0o750)
    try:
        yield directory
    finally:
        for item in directory.iterdir():
            item.unlink()
        directory.rmdir()


def test_open_directory_to_group_gives_search_only_and_keeps_others(tmp_path: Path) -> None:
    gid = os.getgid()
    for before, after in ((0o750, 0o710), (0o700, 0o710), (0o775, 0o715), (0o2751, 0o2711)):
        tmp_path.chmod(before)
        assert open_directory_to_group(tmp_path, gid) == after
        assert (tmp_path.stat().st_mode & 0o7777, tmp_path.stat().st_gid) == (after, gid)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing to nobody and another group needs root")
def test_a_member_of_control_group_uses_fabricctl_and_others_get_one_line(runtime_directory: Path) -> None:
    users = grp.getgrnam("users").gr_gid
    with agent(runtime_directory, "users", own=runtime_directory) as sock:
        assert runtime_directory.stat().st_gid == users
        assert runtime_directory.stat().st_mode & 0o777 == 0o710
        assert (sock.stat().st_gid, sock.stat().st_mode & 0o777) == (users, 0o660)
        assert _as_nobody(sock, (users,)) == (0, "")
        code, err = _as_nobody(sock)
    assert code == 1
    hint = f"run as root or as a member of group users ({runtime_directory} is closed to others)"
    assert err == f"fabricctl: permission denied on {sock}: {hint}\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing to nobody and another group needs root")
def test_a_socket_outside_the_own_directory_leaves_that_directory_alone(runtime_directory: Path) -> None:
    users = grp.getgrnam("users").gr_gid
    with agent(runtime_directory, "users", own=runtime_directory / "elsewhere") as sock:
        assert (runtime_directory.stat().st_gid, runtime_directory.stat().st_mode & 0o777) == (0, 0o750)
        assert sock.stat().st_gid == users
        code, err = _as_nobody(sock, (users,))
    assert code == 1
    hint = f"run as root ({runtime_directory} is closed to this user; control.group in fabricd.yaml opens it)"
    assert err == f"fabricctl: permission denied on {sock}: {hint}\n"
