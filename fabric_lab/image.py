"""A tiny LXD image built locally from Debian's static busybox: there is no image server in a lab."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

IMAGE_NAME = "busybox.tar.gz"

INITTAB = "::sysinit:/etc/init.d/rcS\n::respawn:/bin/sleep 3600\n::shutdown:/bin/umount -a -r\n"
RCS = """#!/bin/sh
mount -t proc proc /proc 2>/dev/null
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  udhcpc -i eth0 -s /etc/udhcpc.script -b -t 10 -T 1 -O mtu -x hostname:"$(hostname)" >/tmp/udhcpc.log 2>&1
fi
exit 0
"""
# Applies the lease, including the MTU (option 26) the overlay needs; DNS stays inside the container.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" scope global; ip link set "$interface" up ;;
  bound|renew)
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    [ -n "$dns" ] && echo "nameserver ${dns%% *}" > /etc/resolv.conf ;;
esac
exit 0
"""


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def write_image(busybox: Path, applets: list[str], out: Path) -> None:
    """Write a unified LXD image tarball: metadata.yaml plus rootfs/."""
    metadata = (
        f"architecture: x86_64\ncreation_date: {int(time.time())}\n"
        'properties:\n  os: busybox\n  release: "1"\n  description: fabricd lab busybox\n'
    )
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        _add_file(tar, "metadata.yaml", metadata.encode())
        for d in (
            "rootfs",
            *(
                f"rootfs/{d}"
                for d in (
                    "bin",
                    "sbin",
                    "etc",
                    "etc/init.d",
                    "proc",
                    "sys",
                    "dev",
                    "tmp",
                    "run",
                    "root",
                    "var",
                )
            ),
        ):
            _add_dir(tar, d)
        _add_file(tar, "rootfs/bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                _add_link(tar, f"rootfs/bin/{applet}", "/bin/busybox")
        _add_link(tar, "rootfs/sbin/init", "/bin/busybox")
        _add_file(tar, "rootfs/etc/inittab", INITTAB.encode())
        _add_file(tar, "rootfs/etc/init.d/rcS", RCS.encode(), 0o755)
        _add_file(tar, "rootfs/etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
        _add_file(tar, "rootfs/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_file(tar, "rootfs/etc/group", b"root:x:0:\n")
    tmp.replace(out)


class ImageBuildError(Exception):
    pass


def download_busybox(cache_dir: Path) -> None:
    fetched = subprocess.run(
        ["apt-get", "download", "-qq", "busybox-static"], cwd=cache_dir, capture_output=True, text=True
    )
    if fetched.returncode != 0:
        raise ImageBuildError(
            f"cannot download busybox-static into {cache_dir} for the lab image "
            f"(run scripts/setup.sh): {fetched.stderr.strip()[-200:]}"
        )


def ensure_image(cache_dir: Path) -> Path:
    """Build the image once per cache directory from the busybox-static Debian package."""
    out = cache_dir / IMAGE_NAME
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        debs = sorted(cache_dir.glob("busybox-static_*.deb"))
        if not debs:
            download_busybox(cache_dir)
            debs = sorted(cache_dir.glob("busybox-static_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), work], check=True, capture_output=True)
        busybox = Path(work) / "bin" / "busybox"
        listed = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True)
        write_image(busybox, listed.stdout.split(), out)
    return out
