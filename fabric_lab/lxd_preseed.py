"""LXD preseeds for lab nodes, checked so LXD never picks an address by itself.

An `auto` or missing bridge address makes LXD probe random 10.x.y.1 addresses, which would leave the
lab; every bridge network must carry explicit addresses (or `none`). Listen addresses
(core.https_address, cluster.https_address, a cluster section's server_address and cluster_address)
must name an address, never a wildcard; a preseed that enables clustering must give one.
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
    config = preseed.get("config") or {}
    for key in ("core.https_address", "cluster.https_address"):
        listen = str(config.get(key, "")).strip() if isinstance(config, dict) else ""
        if listen.startswith(_WILDCARD_LISTENERS):
            problems.append(f"{source}: config.{key}: give an explicit lab address, not {listen}")
    if "cluster" in preseed:
        problems += _check_cluster(preseed["cluster"], config if isinstance(config, dict) else {}, source)
    return problems


def _check_cluster(cluster: object, config: dict[str, Any], source: str) -> list[str]:
    """The cluster section of a bootstrap or join preseed."""
    if cluster is None:
        return []
    if not isinstance(cluster, dict):
        return [f"{source}: cluster: expected a mapping"]
    problems: list[str] = []
    for key in ("server_address", "cluster_address"):
        value = str(cluster.get(key) or "").strip()
        if value.startswith(_WILDCARD_LISTENERS):
            problems.append(f"{source}: cluster.{key}: give an explicit lab address, not {value}")
    enabled = cluster.get("enabled") is True or str(cluster.get("enabled")).lower() == "true"
    listen = str(config.get("core.https_address") or cluster.get("server_address") or "").strip()
    if enabled and not listen:
        problems.append(
            f"{source}: cluster.enabled needs an explicit address: set config.core.https_address "
            "(bootstrap) or cluster.server_address (join)"
        )
    entries = cluster.get("member_config") or []
    if not isinstance(entries, list):
        return [*problems, f"{source}: cluster.member_config: expected a list"]
    for index, entry in enumerate(entries):
        where = f"{source}: cluster.member_config[{index}]"
        if not isinstance(entry, dict) or not all(entry.get(k) for k in ("entity", "name", "key")):
            problems.append(f"{where}: expected a mapping with entity, name, key and value")
        elif entry["entity"] == "network" and entry["key"] in _ADDRESS_KEYS:
            value = str(entry.get("value") or "").strip()
            if value in ("", "auto"):
                problems.append(
                    f"{where}: {entry['key']} must be an explicit address or 'none', not {value or 'missing'}"
                )
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
