"""The README documents every config key: each key the loader accepts appears there by its full path."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import pytest

from fabricd.config import load_config
from fabricd.config.reader import CheckedMapping, Value

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "fabricd.yaml"


def accepted_keys(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every key path the loader allows, found by loading the example, which uses every section."""
    found: set[str] = set()
    original = Value.mapping

    def recording(self: Value, keys: Collection[str]) -> CheckedMapping:
        base = re.sub(r"\[\d+\]", "[]", self.path)
        found.update(f"{base}.{k}" if base else k for k in keys)
        return original(self, keys)

    monkeypatch.setattr(Value, "mapping", recording)
    load_config(EXAMPLE)
    return {k for k in found if "." in k}  # the sections themselves are headings


def test_every_key_is_in_the_readme(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = accepted_keys(monkeypatch)
    assert {"host.name", "bgp.peers[].asn", "dhcp.priority", "routes.ovn_uplinks[].mode"} <= keys
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`([a-z_0-9]+(?:\[\])?(?:\.[a-z_0-9]+(?:\[\])?)+)`", readme))
    # A mapping or list of mappings is documented by its keys' rows.
    containers = {k for k in keys if any(o.startswith((f"{k}.", f"{k}[].")) for o in keys)}
    missing = sorted(k for k in keys - containers if k not in documented)
    assert missing == [], f"README.md does not document: {missing}"
