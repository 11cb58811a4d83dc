"""A lab node's anchor process: it owns the node's mount and UTS namespaces.

`fabric-lab` starts one holder per node. The holder joins the node's network namespace, takes a
private mount namespace (slave of the machine's, so nothing it mounts leaks out) and its own
hostname, mounts the node's private /run, /etc/hosts, /etc/resolv.conf and binds, then sleeps.
Every later process of the node enters the holder's namespaces with nsenter.

Run as: python -m fabric_lab.holder SPEC.json
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from fabric_lab import syscalls


def _fresh_sysfs(scratch: Path) -> None:
    """Remount /sys so it shows this network namespace's devices, keeping the cgroup tree LXD needs."""
    scratch.mkdir(parents=True, exist_ok=True)
    syscalls.bind("/sys/fs/cgroup", str(scratch))
    syscalls.mount("sysfs", "/sys", "sysfs", 0)
    syscalls.bind(str(scratch), "/sys/fs/cgroup")
    syscalls.umount_lazy(str(scratch))


def enter_node(spec: dict[str, object]) -> None:
    syscalls.setns(str(spec["netns_path"]), syscalls.CLONE_NEWNET)
    syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
    syscalls.sethostname(str(spec["hostname"]))
    _fresh_sysfs(Path(str(spec["scratch_dir"])))
    binds = spec["binds"]
    if not isinstance(binds, list):
        raise OSError(0, "holder spec: binds must be a list")
    for source, target, read_only in binds:
        syscalls.bind(source, target, read_only=bool(read_only))


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        enter_node(spec)
    except OSError as exc:
        print(f"fabric-lab holder for {spec.get('hostname')}: {exc}", file=sys.stderr)
        return 1
    Path(str(spec["ready_file"])).write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
