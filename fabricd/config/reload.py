"""What a config reload would change, and whether it can be applied live (pure).

`config_change(old, new)` compares two validated configs key by key. Only a short list of keys is
applied live: the static overlay peers, the BGP peers and the route policy. Any other difference
(host identity, the overlay's bridge or VNI, the control socket, the DHCP election...) needs a
restart, and the reload is refused as a whole: nothing of a refused config is applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from fabricd.bgp.exabgp_config import ExaBGPConfigError, render_config
from fabricd.config.model import BGPConfig, FabricConfig, IPAddress, PeerConfig

# Key paths (and everything under them) that a running agent applies without a restart.
LIVE_KEYS = ("bgp.peers", "overlay.peers", "routes")
# Not a setting: where the config was read from.
IGNORED_KEYS = ("source",)


@dataclass(frozen=True, slots=True)
class PeerChanges:
    """BGP peers by address: added and removed ones start or end a session; a changed one (same
    address, other settings) has its session restarted; kept ones are left alone."""

    added: tuple[PeerConfig, ...] = ()
    removed: tuple[PeerConfig, ...] = ()
    changed: tuple[PeerConfig, ...] = ()  # the new settings
    kept: tuple[PeerConfig, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def restarted(self) -> tuple[IPAddress, ...]:
        """Addresses whose sessions (re)start: added and changed peers."""
        return tuple(p.address for p in (*self.added, *self.changed))


@dataclass(frozen=True, slots=True)
class ConfigChange:
    changed: tuple[str, ...]  # key paths that differ, in config order
    refused: tuple[str, ...]  # why the new config cannot be applied live; empty: it can
    bgp_peers: PeerChanges = PeerChanges()

    @property
    def live(self) -> bool:
        return not self.refused

    def summary(self) -> str:
        if self.refused:
            return "; ".join(self.refused)
        if not self.changed:
            return "no change"
        return "changed " + ", ".join(self.changed)


def changed_keys(old: object, new: object, path: str = "") -> Iterator[str]:
    """Key paths where two config values differ, descending into sections (dataclasses) only."""
    if old == new:
        return
    same_section = dataclasses.is_dataclass(old) and type(old) is type(new)
    if not same_section:
        yield path
        return
    for f in dataclasses.fields(old):  # type: ignore[arg-type]
        key = f"{path}.{f.name}" if path else f.name
        if key in IGNORED_KEYS:
            continue
        yield from changed_keys(getattr(old, f.name), getattr(new, f.name), key)


def _live(key: str) -> bool:
    return any(key == live or key.startswith(live + ".") for live in LIVE_KEYS)


def peer_changes(old: BGPConfig | None, new: BGPConfig | None) -> PeerChanges:
    before = {p.address: p for p in old.peers} if old is not None else {}
    after = {p.address: p for p in new.peers} if new is not None else {}
    return PeerChanges(
        added=tuple(p for a, p in after.items() if a not in before),
        removed=tuple(p for a, p in before.items() if a not in after),
        changed=tuple(p for a, p in after.items() if a in before and before[a] != p),
        kept=tuple(p for a, p in after.items() if before.get(a) == p),
    )


def _runs_bfd(config: FabricConfig) -> bool:
    return config.bgp is not None and bool(config.bgp.bfd_peers)


def config_change(old: FabricConfig, new: FabricConfig) -> ConfigChange:
    """What differs between the running config and a new one, and what stands in the way of
    applying it live. The old config is never judged: it is already running."""
    changed = tuple(changed_keys(old, new))
    refused = [f"changing {key} needs a restart" for key in changed if not _live(key)]
    if "overlay.peers" in changed and (
        isinstance(old.overlay.peers, str) or isinstance(new.overlay.peers, str)
    ):
        # lxd-cluster peers come from a poller that only runs when the agent starts with it.
        refused.append("changing overlay.peers between a list and lxd-cluster needs a restart")
    if _runs_bfd(old) != _runs_bfd(new):
        # The BFD daemon is part of the agent only when it starts with a peer that uses BFD.
        refused.append("turning BFD on or off for every BGP peer needs a restart")
    peers = peer_changes(old.bgp, new.bgp)
    if new.bgp is not None and peers.any and not refused:
        try:  # a new peer the host has no source address for, say
            render_config(new.bgp, new.host, ["/check"])
        except ExaBGPConfigError as exc:
            refused.append(f"bgp.peers: {exc}")
    return ConfigChange(changed, tuple(refused), peers)
