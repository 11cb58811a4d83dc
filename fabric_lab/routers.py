"""Upstream routers inside lab nodes: FRR (watchfrr + the daemons file) and BIRD 2."""

from __future__ import annotations

import os
import pwd
import shutil
import time
from pathlib import Path

from fabric_lab.node import LabError, NodeRuntime

FRR_INIT = "/usr/lib/frr/frrinit.sh"
FRR_DEFAULT_DAEMONS = "zebra=yes\nbgpd=yes\nbfdd=yes\nstaticd=yes\nvtysh_enable=yes\n"


def _chown_frr(path: Path) -> None:
    user = pwd.getpwnam("frr")
    os.chown(path, user.pw_uid, user.pw_gid)


def frr_binds(node: NodeRuntime) -> list[tuple[str, str, bool]]:
    """A private /etc/frr per node; the topology's binds for files under it land on top."""
    if shutil.which("vtysh") is None or not Path(FRR_INIT).exists():
        raise LabError(f"node {node.name}: FRR is not installed (run scripts/setup.sh)")
    etc = node.directory / "etc-frr"
    etc.mkdir(parents=True, exist_ok=True)
    for name, default in (("daemons", FRR_DEFAULT_DAEMONS), ("frr.conf", ""), ("vtysh.conf", "")):
        target = etc / name
        if not target.exists():
            target.write_text(default)
    for path in (etc, *etc.iterdir()):
        _chown_frr(path)
    return [(str(etc), "/etc/frr", False)]


def start_frr(node: NodeRuntime) -> list[str]:
    run = node.run_dir / "frr"
    run.mkdir(parents=True, exist_ok=True)
    _chown_frr(run)
    node.run([FRR_INIT, "start"], timeout=60)
    pid_files = sorted(str(Path("/run/frr") / p.name) for p in run.glob("*.pid"))
    if not pid_files:
        raise LabError(f"node {node.name}: FRR started no daemons; check the bound daemons file")
    return [str(node.run_dir / "frr" / Path(p).name) for p in pid_files]


def wait_frr(node: NodeRuntime, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.run(["vtysh", "-c", "show version"], check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"node {node.name}: vtysh did not answer within {timeout:g}s")


def bird_binds(node: NodeRuntime) -> list[tuple[str, str, bool]]:
    if shutil.which("bird") is None:
        raise LabError(f"node {node.name}: BIRD 2 is not installed (run scripts/setup.sh)")
    etc = node.directory / "etc-bird"
    etc.mkdir(parents=True, exist_ok=True)
    conf = etc / "bird.conf"
    if not conf.exists():
        conf.write_text("protocol device {}\n")
    return [(str(etc), "/etc/bird", False)]


def start_bird(node: NodeRuntime) -> list[str]:
    (node.run_dir / "bird").mkdir(parents=True, exist_ok=True)
    node.run(["bird", "-c", "/etc/bird/bird.conf", "-s", "/run/bird/bird.ctl", "-P", "/run/bird/bird.pid"])
    return [str(node.run_dir / "bird" / "bird.pid")]


def wait_bird(node: NodeRuntime, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.run(["birdc", "-s", "/run/bird/bird.ctl", "show", "status"], check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"node {node.name}: birdc did not answer within {timeout:g}s")
