"""The README's first command: `scripts/demo.sh` (what `make demo` runs after setup) brings up the
basic lab, and r1 learns each host's instance routes with that host as next hop."""

from __future__ import annotations

import re
import subprocess

import pytest

from fabric_lab import netns
from tests.conftest import REPO, in_ci

pytestmark = pytest.mark.lab

LAB = "labs/basic.clab.yml"
FABRIC_LAB = str(REPO / ".venv" / "bin" / "fabric-lab")


def test_the_demo_ends_with_routes_at_the_router_and_in_status(lab_host: None) -> None:
    # The demo uses the lab's own name (it is what the README runs), so it would replace a
    # developer's running demo: outside CI, leave one alone.
    if not in_ci() and netns.list_with_prefix("fl-basic-"):
        pytest.skip("a demo lab is running on this machine; the test would replace it")
    try:
        run = subprocess.run(
            ["bash", "scripts/demo.sh", LAB], cwd=REPO, capture_output=True, text=True, timeout=900
        )
        out = run.stdout
        assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
        # r1's kernel: each prefix via the host whose instance asked for it.
        assert re.search(r"^10\.201\.1\.0/24 .*via 10\.99\.1\.11 ", out, re.M), out
        assert re.search(r"^10\.201\.2\.0/24 .*via 10\.99\.2\.12 ", out, re.M), out
        assert re.search(r"^fd00:201:1::/64 .*via fd00:99:1::11 ", out, re.M), out
        # fabricctl status on each host says the same, per peer, and shows the refusal with its reason.
        assert re.search(r"^10\.201\.1\.0/24\s+10\.99\.1\.11\s+\S+\s+announced\s+r1\s", out, re.M), out
        assert re.search(r"^fd00:201:1::/64\s+fd00:99:1::11\s+\S+\s+announced\s+r1-v6\s", out, re.M), out
        assert re.search(r"^10\.201\.2\.0/24\s+10\.99\.2\.12\s+\S+\s+announced\s+r1\s", out, re.M), out
        refused = r"^0\.0\.0\.0/0\s+-\s+\S+\s+refused\s.*default route is never announced"
        assert re.search(refused, out, re.M), out
        assert "fabricctl exit 3: degraded" in out  # h2, because of that refusal
    finally:
        subprocess.run([FABRIC_LAB, "down", LAB], cwd=REPO, capture_output=True, timeout=300, check=False)
