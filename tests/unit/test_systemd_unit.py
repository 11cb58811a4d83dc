"""systemd/fabricd.service as systemd reads it: `systemd-analyze verify` and `security`.

The unit names /usr/local/bin/fabricd, which a development machine need not have, and verify
refuses a unit whose command does not exist; so a copy whose commands name this checkout's
fabricd is verified, every other line as shipped. systemd-analyze comes with the `systemd`
package (scripts/setup.sh installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, in_ci

UNIT = REPO / "systemd" / "fabricd.service"
INSTALLED = "/usr/local/bin/fabricd"
# systemd-analyze security's exposure, 0.0 (locked down) .. 10.0; README records the number.
EXPOSURE_AT_MOST = 3.5

ANALYZE = shutil.which("systemd-analyze")
if ANALYZE is None and not in_ci():
    pytest.skip("systemd-analyze is missing (scripts/setup.sh installs systemd)", allow_module_level=True)


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    fabricd = Path(sys.executable).with_name("fabricd")
    assert fabricd.is_file(), f"{fabricd} missing: run scripts/setup.sh"
    text = UNIT.read_text() if text is None else text
    assert INSTALLED in text
    copy = tmp_path / "fabricd.service"
    copy.write_text(text.replace(INSTALLED, str(fabricd)))
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None, "systemd-analyze is missing: run scripts/setup.sh"
    return subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    out = verify(local_copy(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "" and out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("ProtectSystem=strict", "ProtectSystm=strict"), "Unknown key"),
        (("SystemCallFilter=@system-service", "SystemCallFilter=@no-such-set"), "Unknown system call group"),
    ],
)
def test_verify_catches_a_broken_line(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    text = UNIT.read_text()
    assert change[0] in text
    out = verify(local_copy(tmp_path, text.replace(change[0], change[1], 1)))
    assert complaint in out.stderr, out.stderr


def test_unit_keeps_only_the_capabilities_it_names() -> None:
    text = UNIT.read_text()
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", text, re.MULTILINE)
    caps = set(line.split())
    assert caps == {
        "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID",
        "CAP_SETPCAP", "CAP_KILL", "CAP_CHOWN",
    }  # fmt: skip
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "SystemCallFilter=@system-service",
    ):
        assert re.search(rf"^{re.escape(setting)}$", text, re.MULTILINE), setting


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    copy = local_copy(tmp_path)
    out = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for fabricd\.service: (\d+\.\d)", out.stdout)
    assert found is not None, out.stdout[-500:] + out.stderr
    exposure = float(found[1])
    print(f"\nsystemd-analyze security: exposure {exposure}")
    assert exposure <= EXPOSURE_AT_MOST
    readme = (REPO / "README.md").read_text()
    assert f"exposure {exposure}" in readme, "README records a different systemd-analyze security score"
