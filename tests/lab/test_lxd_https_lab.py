"""The LXD observer over HTTPS with a trusted client certificate: REST reads and the wss event stream."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.conftest import REPO, fresh_lab

pytestmark = pytest.mark.lab


def test_observer_reads_and_follows_lxd_over_https(lab_host: None, state_root: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-sha384",
         "-nodes", "-days", "2", "-subj", "/CN=fabricd-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with fresh_lab(REPO / "labs" / "basic.clab.yml", "thttps", state_root) as lab:
        h1 = lab.node("h1")
        h1.run(["lxc", "config", "set", "core.https_address", "127.0.0.1:8443"])
        h1.run(["lxc", "config", "trust", "add", str(cert), "--name", "fabricd-test"])
        result = tmp_path / "result.json"
        probe = str(Path(__file__).with_name("lxd_https_probe.py"))
        h1.spawn(
            [sys.executable, probe, "https://127.0.0.1:8443", str(cert), str(key),
             "/var/lib/lxd/server.crt", "tls1", str(result)],
            "https-probe",
        )  # fmt: skip
        ready = Path(f"{result}.ready")
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, h1.log_file("https-probe").read_text()[-2000:]
            time.sleep(0.1)
        h1.run(["lxc", "launch", "busybox", "tls1"])  # seen through the wss event stream, not a resync
        deadline = time.monotonic() + 40
        while not result.exists():
            assert time.monotonic() < deadline, h1.log_file("https-probe").read_text()[-2000:]
            time.sleep(0.1)
        outcome = json.loads(result.read_text())
        assert outcome["connected"], outcome
        assert outcome["saw_instance_after_connect"], outcome
        assert outcome["seconds"] < 10, outcome  # far below the 300 s periodic resync
