"""fabric-lab's commands that need no root: checking topology files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def fabric_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric_lab.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_check_passes_the_shipped_labs() -> None:
    labs = sorted(str(p) for p in (REPO / "labs").glob("*.clab.yml"))
    assert labs, "the project ships at least one lab"
    result = fabric_lab("check", *labs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(labs)


def test_check_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.clab.yml"
    bad.write_text(
        "name: bad\n"
        "topology:\n"
        "  nodes:\n"
        "    r1: {kind: frr}\n"
        "    h1: {kind: linux, image: alpine}\n"
        "  links:\n"
        "    - endpoints: ['r1:eth0', 'h1:eth1']\n"
    )
    result = fabric_lab("check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4: topology.nodes.r1.kind" in result.stderr and "not a containerlab kind" in result.stderr
    assert f"{bad}:7:" in result.stderr and "eth0" in result.stderr


def test_exec_without_a_command_or_lab_is_a_clear_error(tmp_path: Path) -> None:
    result = fabric_lab("--state-dir", str(tmp_path), "exec", "r1", "--", "true")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.startswith("fabric-lab:")
