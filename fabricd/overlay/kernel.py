"""The overlay's devices and FDB as the kernel has them, and the pure diff towards the plan.

fabricd owns:
- the bridge when it created it (its alias says so); a bridge that already existed is adopted:
  used and corrected, never deleted;
- the VXLAN device named after the bridge;
- the FDB entries on that VXLAN device that it installed (recorded in its state file). Entries it
  did not install are left alone, unless a planned MAC entry must replace one for the same MAC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabricd.config.model import IPAddress
from fabricd.overlay.model import OverlayPlan

FLOOD_MAC = "00:00:00:00:00:00"
OWNED_ALIAS = "fabricd overlay"  # IFLA_IFALIAS of devices fabricd created


def vxlan_name(bridge: str) -> str:
    """The VXLAN device's name, derived from the bridge so two overlays never share one."""
    return f"vx-{bridge}"[:15]


@dataclass(frozen=True, slots=True, order=True)
class FdbEntry:
    """One `self` entry on the VXLAN device: frames for `mac` go to `dst` (all-zeros: flood)."""

    mac: str
    dst: IPAddress = field(compare=False)
    dst_key: tuple[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dst_key", (self.dst.version, int(self.dst)))

    @property
    def flood(self) -> bool:
        return self.mac == FLOOD_MAC


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """The devices fabricd wants: a bridge with one VXLAN port, both at `mtu` and up."""

    bridge: str
    vxlan: str
    vni: int
    port: int
    local: IPAddress
    link_index: int | None  # the underlay interface VXLAN is bound to; None: routing decides
    mtu: int

    @property
    def udp_csum(self) -> bool:
        """Outer UDP checksum: zero over IPv4, as RFC 7348 asks (the inner frame carries its own
        checksums); required over IPv6 (RFC 6935 allows zero only by agreement)."""
        return self.local.version == 6


@dataclass(frozen=True, slots=True)
class LinkState:
    index: int
    kind: str
    mtu: int
    up: bool
    master: int | None
    # vxlan only
    vni: int | None = None
    port: int | None = None
    local: IPAddress | None = None
    link_index: int | None = None
    learning: bool | None = None
    udp_csum: bool | None = None


@dataclass(frozen=True, slots=True)
class KernelOverlay:
    bridge: LinkState | None
    vxlan: LinkState | None
    fdb: frozenset[FdbEntry] = frozenset()


@dataclass(frozen=True, slots=True)
class KernelChanges:
    """The smallest set of steps, applied in this order."""

    create_bridge: bool = False
    bridge_settings: bool = False  # mtu / up
    delete_vxlan: bool = False  # exists with other immutable settings (VNI, port, local, learning)
    create_vxlan: bool = False
    vxlan_settings: bool = False  # master / mtu / up
    fdb_remove: tuple[FdbEntry, ...] = ()
    fdb_add: tuple[FdbEntry, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.create_bridge
            or self.bridge_settings
            or self.delete_vxlan
            or self.create_vxlan
            or self.vxlan_settings
            or self.fdb_remove
            or self.fdb_add
        )


def desired_fdb(plan: OverlayPlan) -> frozenset[FdbEntry]:
    flood = {FdbEntry(FLOOD_MAC, f.vtep) for f in plan.flood}
    return frozenset(flood | {FdbEntry(m.mac, m.vtep) for m in plan.macs})


def diff_overlay(
    spec: DeviceSpec, desired: frozenset[FdbEntry], kernel: KernelOverlay, owned: frozenset[FdbEntry]
) -> KernelChanges:
    """What to change so the kernel matches spec and desired FDB; pure."""
    reasons: list[str] = []
    bridge = kernel.bridge
    create_bridge = bridge is None
    if bridge is not None and bridge.kind != "bridge":
        raise OverlayConflict(f"{spec.bridge} exists and is a {bridge.kind or 'plain'} device, not a bridge")
    if create_bridge:
        reasons.append(f"create bridge {spec.bridge}")
    bridge_settings = bridge is not None and (bridge.mtu != spec.mtu or not bridge.up)
    if bridge_settings and bridge is not None:
        reasons.append(f"bridge {spec.bridge}: mtu {bridge.mtu} -> {spec.mtu}, up {bridge.up} -> True")

    vxlan = kernel.vxlan
    delete_vxlan = False
    if vxlan is not None:
        wrong = _vxlan_mismatch(spec, vxlan)
        if wrong:
            delete_vxlan = True
            reasons.append(f"recreate {spec.vxlan}: {wrong}")
    create_vxlan = vxlan is None or delete_vxlan
    if vxlan is None:
        reasons.append(f"create vxlan {spec.vxlan} vni {spec.vni}")
    vxlan_settings = (
        not create_vxlan
        and vxlan is not None
        and (bridge is None or vxlan.master != bridge.index or vxlan.mtu != spec.mtu or not vxlan.up)
    )
    if vxlan_settings:
        reasons.append(f"{spec.vxlan}: enslave to {spec.bridge}, mtu {spec.mtu}, up")

    present = frozenset() if create_vxlan else kernel.fdb
    add = desired - present
    # Owned entries no longer wanted go; for a MAC entry, `replace` on add already moves it.
    replaced_macs = {e.mac for e in add if not e.flood}
    remove = {e for e in present & owned if e not in desired and (e.flood or e.mac not in replaced_macs)}
    return KernelChanges(
        create_bridge=create_bridge,
        bridge_settings=bridge_settings,
        delete_vxlan=delete_vxlan,
        create_vxlan=create_vxlan,
        vxlan_settings=vxlan_settings,
        fdb_remove=tuple(sorted(remove)),
        fdb_add=tuple(sorted(add)),
        reasons=tuple(reasons),
    )


def _vxlan_mismatch(spec: DeviceSpec, vxlan: LinkState) -> str:
    if vxlan.kind != "vxlan":
        return f"it is a {vxlan.kind or 'plain'} device"
    wrong = []
    if vxlan.vni != spec.vni:
        wrong.append(f"vni {vxlan.vni} != {spec.vni}")
    if vxlan.port != spec.port:
        wrong.append(f"port {vxlan.port} != {spec.port}")
    if vxlan.local != spec.local:
        wrong.append(f"local {vxlan.local} != {spec.local}")
    if vxlan.learning:
        wrong.append("learning is on")
    if vxlan.udp_csum is not None and vxlan.udp_csum != spec.udp_csum:
        wrong.append(f"udp checksum {'on' if vxlan.udp_csum else 'off'}")
    if spec.link_index is not None and vxlan.link_index != spec.link_index:
        wrong.append(f"underlay link {vxlan.link_index} != {spec.link_index}")
    return ", ".join(wrong)


class OverlayConflict(Exception):
    """The configured names are taken by something fabricd must not change."""
