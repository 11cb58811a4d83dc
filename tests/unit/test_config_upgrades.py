"""A config written for an older fabricd fails check-config with a message naming the change."""

from __future__ import annotations

import pytest

from fabricd.config import load_config_text
from fabricd.config.errors import ConfigError
from fabricd.config.upgrades import CHANGED_KEYS

OLD_SERVICES = """host: {name: h1, underlay_address: 10.99.1.11}
services:
  - name: dns
    address: 10.250.0.53
    instance: dns1
    check: {type: tcp, port: 53, interval: 1.0, rise: 2, fall: 2}
"""


def test_old_service_keys_name_what_replaced_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(OLD_SERVICES, "/etc/fabricd/fabricd.yaml")
    lines = str(caught.value).splitlines()
    address = next(line for line in lines if "services[0].address:" in line)
    assert address.startswith("/etc/fabricd/fabricd.yaml:4: ")
    assert "'address' became 'addresses'" in address and "unknown key" not in address
    instance = next(line for line in lines if "services[0].instance:" in line)
    assert "'instance' became 'backends'" in instance


def test_every_changed_key_is_refused_today() -> None:
    # A changed key that became valid again would give a wrong message: the table must shrink.
    for (path, key), _ in CHANGED_KEYS.items():
        assert path == "services[]"
        new_address = f"    {key}: x\n    addresses: [10.250.0.53]\n"
        text = OLD_SERVICES.replace("    address: 10.250.0.53\n", new_address)
        with pytest.raises(ConfigError, match=f"fabricd no longer takes '{key}'"):
            load_config_text(text, "f.yaml")
