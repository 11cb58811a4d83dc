"""LXD preseeds for lab nodes, checked so LXD never picks an address by itself.

An `auto` or missing bridge address makes LXD probe random 10.x.y.1 addresses, which would leave the
lab; every bridge network must carry explicit addresses (or `none`).
"""

from __future__ import annotations

from typing import Any

import yaml

DEFAULT_PRESEED: dict[str, Any] = {
    "config": {"images.auto_update_interval": "0"},
    "storage_pools": [{"name": "default", "driver": "dir"}],
    "profiles": [{"name": "default", "devices": {"root": {"path": "/", "pool": "default", "type": "disk"}}}],
}

_ADDRESS_KEYS = ("ipv4.address", "ipv6.address")
_WILDCARD_LISTENERS = (":", "[::]", "0.0.0.0")  # noqa: S104 (these are what gets refused)


def check_preseed(preseed: object, source: str) -> list[str]:
    problems: list[str] = []
    if not isinstance(preseed, dict):
        return [f"{source}: expected a mapping at the top level"]
    for index, network in enumerate(preseed.get("networks") or []):
        where = f"{source}: networks[{index}]"
        if not isinstance(network, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        if network.get("type", "bridge") != "bridge":
            continue
        config = network.get("config") or {}
        for key in _ADDRESS_KEYS:
            value = str(config.get(key, "")).strip()
            if value in ("", "auto"):
                problems.append(
                    f"{where}.config.{key}: must be an explicit address or 'none', not "
                    f"{value or 'missing'} (auto addresses probe outside the lab)"
                )
    https = str((preseed.get("config") or {}).get("core.https_address", "")).strip()
    if https.startswith(_WILDCARD_LISTENERS):
        problems.append(f"{source}: config.core.https_address: give an explicit lab address, not {https}")
    return problems


def load_preseed(text: str | None, source: str) -> dict[str, Any]:
    """Parse (or default) a preseed, check it and pin image auto-update off."""
    preseed: Any = yaml.safe_load(text) if text is not None else {}
    if text is None:
        preseed = {k: v for k, v in DEFAULT_PRESEED.items()}
    problems = check_preseed(preseed, source)
    if problems:
        raise ValueError("\n".join(problems))
    config = dict(preseed.get("config") or {})
    config["images.auto_update_interval"] = "0"
    preseed["config"] = config
    return dict(preseed)
