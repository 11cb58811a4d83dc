"""A real LXD daemon inside a lab node, its state under the lab directory."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml

from fabric_lab import netns
from fabric_lab.lxd_preseed import load_preseed
from fabric_lab.node import LabError, NodeRuntime

# Inside the node /var/lib/lxd is the node's own directory; LXD_DIR keeps cache and logs there too.
LXD_DIR_IN_NODE = "/var/lib/lxd"


def lxd_dir(node: NodeRuntime) -> Path:
    return node.directory / "lxd"


def lxd_socket(node: NodeRuntime) -> Path:
    return lxd_dir(node) / "unix.socket"


def lxd_binds(node: NodeRuntime) -> list[tuple[str, str, bool]]:
    if shutil.which("lxd") is None or shutil.which("lxc") is None:
        raise LabError(f"node {node.name}: LXD is not installed (run scripts/setup.sh)")
    lxd_dir(node).mkdir(parents=True, exist_ok=True, mode=0o711)
    node.env["LXD_DIR"] = LXD_DIR_IN_NODE
    return [(str(lxd_dir(node)), LXD_DIR_IN_NODE, False)]


def start_lxd(node: NodeRuntime, preseed_text: str | None, preseed_source: str, image: Path) -> int:
    try:
        preseed = load_preseed(preseed_text, preseed_source)
    except ValueError as exc:
        raise LabError(f"node {node.name}: refusing LXD preseed:\n{exc}") from exc
    pid = node.spawn(["lxd", "--group", "root", "--logfile", str(node.log_file("lxd-daemon"))], "lxd")
    node.run(["lxd", "waitready", "--timeout=60"], timeout=70)
    node.run(["lxd", "init", "--preseed"], input_text=yaml.safe_dump(preseed), timeout=120)
    node.run(["lxc", "image", "import", str(image), "--alias", "busybox"], timeout=120)
    return pid


CGROUP_ROOT = Path("/sys/fs/cgroup")


LXC_CGROUPS = ("lxc.pivot", "lxc.payload.*", "lxc.monitor.*")


def _rmdir_tree(path: Path) -> bool:
    """rmdir a cgroup and its children, deepest first; a cgroup with processes stays (EBUSY)."""
    for child in (p for p in path.iterdir() if p.is_dir()):
        _rmdir_tree(child)
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def remove_pivot_cgroups(wait: float = 3.0) -> None:
    """liblxc leaves empty cgroups behind once a lab's LXD is gone: lxc.pivot per hierarchy, and
    (when a container died with its daemon) lxc.payload.<name> / lxc.monitor.<name>. Only empty
    ones can be removed, and the kernel frees them a moment after their last process, so retry."""
    deadline = time.monotonic() + wait
    while True:
        left = [
            path
            for pattern in LXC_CGROUPS
            for path in (*CGROUP_ROOT.glob(f"*/{pattern}"), *CGROUP_ROOT.glob(pattern))
            if path.is_dir() and not _rmdir_tree(path)
        ]
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def stop_lxd(node: NodeRuntime, pid: int | None) -> None:
    """Delete instances first so their processes end with LXD, then shut the daemon down."""
    if not lxd_socket(node).exists() or node.holder_pid is None:
        return
    listed = node.run(
        ["lxc", "list", "--all-projects", "--format", "csv", "-c", "n,e"], check=False, timeout=30
    )
    for line in listed.stdout.splitlines():
        name, _, project = line.partition(",")
        if name:
            node.run(
                ["lxc", "delete", "--force", "--project", project or "default", name], check=False, timeout=60
            )
    node.run(["lxd", "shutdown", "--timeout=30"], check=False, timeout=40)
    if pid is not None:
        deadline = time.monotonic() + 10
        while netns.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def respawn_lxd(node: NodeRuntime) -> int:
    """Start the node's LXD daemon again on its existing state (after it was killed or shut down)."""
    pid = node.spawn(["lxd", "--group", "root", "--logfile", str(node.log_file("lxd-daemon"))], "lxd")
    node.run(["lxd", "waitready", "--timeout=60"], timeout=70)
    return pid
