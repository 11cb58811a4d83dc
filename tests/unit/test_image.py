import tarfile
from pathlib import Path

from fabric_lab.image import write_image


def test_image_is_a_unified_lxd_tarball(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake")
    out = tmp_path / "img.tar.gz"
    write_image(busybox, ["busybox", "sh", "ip", "udhcpc"], out)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"metadata.yaml", "rootfs/bin/busybox", "rootfs/sbin/init", "rootfs/etc/inittab"} <= names
        assert {"rootfs/bin/sh", "rootfs/bin/ip", "rootfs/bin/udhcpc"} <= names
        assert "rootfs/bin/busybox" in names and tar.getmember("rootfs/bin/sh").linkname == "/bin/busybox"
        assert tar.getmember("rootfs/etc/init.d/rcS").mode & 0o111
        metadata = tar.extractfile("metadata.yaml")
        assert metadata is not None and b"architecture: x86_64" in metadata.read()
        script = tar.extractfile("rootfs/etc/udhcpc.script")
        assert script is not None and b"mtu" in script.read()  # the overlay MTU reaches instances
    assert not out.with_suffix(".partial").exists()
