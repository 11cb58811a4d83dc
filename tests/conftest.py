"""Shared test plumbing: the rule for lab tests, and paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB_TOOLS = (
    "nsenter", "lxd", "lxc", "vtysh", "bird", "birdc", "dnsmasq", "apt-get", "dpkg-deb",
    "ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ovn-nbctl", "ovn-sbctl", "ovn-northd", "ovn-controller",
)  # fmt: skip


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def lab_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    missing = [tool for tool in LAB_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"lab tests need {', '.join(missing)} (run scripts/setup.sh)"
    return None


@pytest.fixture(scope="session")
def lab_host() -> None:
    """Skip a lab test outside CI when the machine cannot run it; in CI that is a failure."""
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI must run every lab test: {reason}")
    pytest.skip(reason)


@pytest.fixture
def repo() -> Path:
    return REPO
