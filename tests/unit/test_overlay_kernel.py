"""The pure diff between the planned overlay and the kernel's devices and FDB."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabricd.overlay.kernel import (
    FLOOD_MAC,
    DeviceSpec,
    FdbEntry,
    KernelChanges,
    KernelOverlay,
    LinkState,
    OverlayConflict,
    desired_fdb,
    diff_overlay,
    vxlan_name,
)
from fabricd.overlay.model import FloodEntry, MacEntry, OverlayPlan

LOCAL = IPv4Address("10.99.1.11")
SPEC = DeviceSpec("fabric0", "vx-fabric0", 100, 4789, LOCAL, None, 1450)
BRIDGE = LinkState(index=5, kind="bridge", mtu=1450, up=True, master=None)
VXLAN = LinkState(
    index=6, kind="vxlan", mtu=1450, up=True, master=5, vni=100, port=4789, local=LOCAL,
    learning=False, udp_csum=False,
)  # fmt: skip


def flood(dst: str) -> FdbEntry:
    return FdbEntry(FLOOD_MAC, ip_address(dst))


def mac(m: str, dst: str) -> FdbEntry:
    return FdbEntry(m, ip_address(dst))


def test_vxlan_name_fits_an_interface_name() -> None:
    assert vxlan_name("fabric0") == "vx-fabric0"
    assert len(vxlan_name("a-very-long-br0")) == 15


def test_nothing_exists_creates_everything() -> None:
    desired = frozenset({flood("10.99.2.12"), mac("0a:00:00:00:00:01", "10.99.2.12")})
    changes = diff_overlay(SPEC, desired, KernelOverlay(None, None), frozenset())
    assert changes.create_bridge and changes.create_vxlan and not changes.delete_vxlan
    assert set(changes.fdb_add) == desired and changes.fdb_remove == ()


def test_matching_kernel_is_no_change() -> None:
    desired = frozenset({flood("10.99.2.12")})
    changes = diff_overlay(SPEC, desired, KernelOverlay(BRIDGE, VXLAN, desired), desired)
    assert changes.empty and changes == KernelChanges()


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("vni", 200, "vni 200 != 100"),
        ("port", 8472, "port 8472 != 4789"),
        ("local", IPv4Address("10.0.0.9"), "local 10.0.0.9 != 10.99.1.11"),
        ("learning", True, "learning is on"),
        ("udp_csum", True, "udp checksum on"),
        ("kind", "veth", "it is a veth device"),
    ],
)
def test_wrong_immutable_vxlan_settings_recreate_it(field: str, value: object, why: str) -> None:
    from dataclasses import replace

    stale = frozenset({flood("10.99.2.12")})
    changes = diff_overlay(SPEC, stale, KernelOverlay(BRIDGE, replace(VXLAN, **{field: value}), stale), stale)
    assert changes.delete_vxlan and changes.create_vxlan
    assert any(why in r for r in changes.reasons)
    # A new device has an empty FDB: every entry is added again, none removed.
    assert changes.fdb_add == tuple(stale) and changes.fdb_remove == ()


def test_mtu_and_master_are_corrected_in_place() -> None:
    from dataclasses import replace

    kernel = KernelOverlay(replace(BRIDGE, mtu=1500), replace(VXLAN, master=None, up=False))
    changes = diff_overlay(SPEC, frozenset(), kernel, frozenset())
    assert changes.bridge_settings and changes.vxlan_settings
    assert not (changes.create_bridge or changes.create_vxlan or changes.delete_vxlan)


def test_an_existing_non_bridge_under_the_name_is_a_conflict() -> None:
    with pytest.raises(OverlayConflict, match="not a bridge"):
        diff_overlay(
            SPEC, frozenset(), KernelOverlay(LinkState(3, "veth", 1500, True, None), None), frozenset()
        )


def test_stale_owned_entries_go_and_foreign_ones_stay() -> None:
    ours_stale = flood("10.99.3.13")
    foreign = flood("192.0.2.1")
    wanted = flood("10.99.2.12")
    kernel = KernelOverlay(BRIDGE, VXLAN, frozenset({ours_stale, foreign, wanted}))
    changes = diff_overlay(SPEC, frozenset({wanted}), kernel, frozenset({ours_stale, wanted}))
    assert changes.fdb_remove == (ours_stale,)
    assert changes.fdb_add == ()


def test_a_moved_mac_is_replaced_not_removed() -> None:
    before = mac("0a:00:00:00:00:01", "10.99.1.11")
    after = mac("0a:00:00:00:00:01", "10.99.3.13")
    kernel = KernelOverlay(BRIDGE, VXLAN, frozenset({before}))
    changes = diff_overlay(SPEC, frozenset({after}), kernel, frozenset({before}))
    assert changes.fdb_add == (after,)
    assert changes.fdb_remove == ()  # `replace` moves it: no window where the MAC is flooded


def test_desired_fdb_from_a_plan() -> None:
    plan = OverlayPlan(
        mtu=1450,
        flood=(FloodEntry("h2", IPv4Address("10.99.2.12")),),
        macs=(MacEntry("0a:00:00:00:00:01", IPv4Address("10.99.2.12"), "default/c1/eth0"),),
    )
    assert desired_fdb(plan) == {flood("10.99.2.12"), mac("0a:00:00:00:00:01", "10.99.2.12")}


# --- property: applying the diff to a model kernel gives the plan and spares foreign entries ----

_addresses = st.sampled_from(["10.99.1.11", "10.99.2.12", "10.99.3.13", "10.99.4.14", "192.0.2.7"])
_macs = st.sampled_from([FLOOD_MAC, "0a:00:00:00:00:01", "0a:00:00:00:00:02", "0a:00:00:00:00:03"])
_entries = st.frozensets(st.builds(lambda m, a: mac(m, a), _macs, _addresses), max_size=8)


def _model_apply(kernel: frozenset[FdbEntry], changes: KernelChanges) -> frozenset[FdbEntry]:
    """What the kernel does with the steps: del, then append (flood) or replace (MAC)."""
    result = set(kernel) - set(changes.fdb_remove)
    for entry in changes.fdb_add:
        if not entry.flood:
            result = {e for e in result if e.mac != entry.mac}
        result.add(entry)
    return frozenset(result)


def _unique_macs(entries: frozenset[FdbEntry]) -> frozenset[FdbEntry]:
    """A MAC entry has one VTEP, as the planner guarantees; flood entries may be many."""
    seen: dict[str, FdbEntry] = {}
    for e in sorted(entries):
        if e.flood or e.mac not in seen:
            seen[e.mac if not e.flood else f"{e.mac}{e.dst}"] = e
    return frozenset(seen.values())


@given(_entries, _entries, _entries)
def test_diff_converges_and_spares_what_is_not_ours(
    desired_raw: frozenset[FdbEntry], kernel_raw: frozenset[FdbEntry], owned_raw: frozenset[FdbEntry]
) -> None:
    desired = _unique_macs(desired_raw)
    kernel = _unique_macs(kernel_raw)
    owned = owned_raw & kernel
    changes = diff_overlay(SPEC, desired, KernelOverlay(BRIDGE, VXLAN, kernel), owned)
    result = _model_apply(kernel, changes)
    assert desired <= result
    # Nothing of ours that is unwanted survives.
    assert not ((owned - desired) & result)
    # A foreign entry is kept unless a planned MAC entry had to take its MAC.
    taken = {e.mac for e in desired if not e.flood}
    for entry in kernel - owned:
        if entry.flood or entry.mac not in taken:
            assert entry in result
    # Applying again changes nothing.
    again = diff_overlay(SPEC, desired, KernelOverlay(BRIDGE, VXLAN, result), (owned | desired) & result)
    assert again.empty
