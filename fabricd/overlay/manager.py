"""Applies an overlay plan to the kernel: devices, FDB, and the record of what fabricd owns.

The record (`overlay.json` in the state directory) lists the FDB entries fabricd installed, so a
restart removes its own stale entries and leaves everyone else's alone. It lives under /run: after
a reboot the VXLAN device and its FDB are gone as well.

With `overlay.ipsec.enabled`, ESP transport SAs and policies to every up peer come first. If they
cannot be installed (no key, or a kernel without ESP), the overlay fails closed: the devices exist
but the FDB is empty, so nothing leaves the host in clear text.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal

from pyroute2 import IPRoute, NetNS

from fabricd.config.model import FabricConfig
from fabricd.kernel_watch import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    KernelWatch,
)
from fabricd.log import get_logger
from fabricd.overlay.firewall import FirewallError, OverlayFirewall
from fabricd.overlay.ipsec import IPsecKeyError, IPsecPlan, plan_ipsec, read_key
from fabricd.overlay.ipsec_apply import IPsecError, apply_ipsec, remove_ipsec
from fabricd.overlay.kernel import (
    OWNED_ALIAS,
    DeviceSpec,
    FdbEntry,
    KernelChanges,
    desired_fdb,
    diff_overlay,
    vxlan_name,
)
from fabricd.overlay.model import OverlayPlan
from fabricd.overlay.netlink import apply_changes, delete_link, read_overlay, underlay_link

log = get_logger("fabricd.overlay")
STATE_FILE = "overlay.json"
Keep = Literal["nothing", "macs", "all"]
# The firewall's packet counters in the status are at most this old: a pass reads the table only
# when the ruleset changed, and running nft for the counters alone after every pass would cost an
# idle agent more than the rest of its pass.
COUNTERS_MAX_AGE = 30.0
IPSEC_PEERS_FILE = "overlay-ipsec-peers.json"  # for teardown, which has no LXD to ask for peers


@dataclass(frozen=True, slots=True)
class Underlay:
    index: int | None
    name: str | None
    mtu: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AppliedOverlay:
    """What the last pass did, for status."""

    plan: OverlayPlan | None = None
    changes: KernelChanges = field(default_factory=KernelChanges)
    owned: int = 0
    applied_at: float | None = None
    error: str | None = None


class OverlayManager:
    def __init__(self, config: FabricConfig, state_dir: Path, netns: str | None = None) -> None:
        """`netns`: work in that named network namespace instead of our own (tests)."""
        self.config = config
        self.bridge = config.overlay.bridge
        self.vxlan = vxlan_name(config.overlay.bridge)
        self._state_file = state_dir / STATE_FILE
        self._netns = netns
        self._ipr_factory: Callable[[], IPRoute | NetNS] = (
            IPRoute if netns is None else (lambda: NetNS(netns))
        )
        self.firewall = OverlayFirewall(config.overlay.port, netns=netns)
        self._ipsec: IPsecPlan | None = None
        self._firewall_peers: tuple[str, ...] = ()
        self._firewall_error: str | None = None
        # In our own namespace, reads are skipped while the kernel announced no change since the
        # last one that found everything as wanted (tests in another namespace always read).
        own = netns is None
        self._underlay_watch = (
            KernelWatch(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) if own else None
        )
        self._overlay_watch = KernelWatch(RTMGRP_LINK | RTMGRP_NEIGH) if own else None
        self._underlay_read: Underlay | None = None
        # (spec, desired FDB, our recorded entries) the kernel was last found to match, its FDB then.
        self._clean: tuple[DeviceSpec, frozenset[FdbEntry], frozenset[FdbEntry]] | None = None
        self._clean_fdb: frozenset[FdbEntry] = frozenset()

    def read_underlay(self) -> Underlay:
        watch = self._underlay_watch
        if watch is not None and not watch.changed() and self._underlay_read is not None:
            return self._underlay_read
        host = self.config.host
        try:
            with self._ipr_factory() as ipr:
                index, name, mtu = underlay_link(ipr, host.underlay_address, host.underlay_interface)
        except Exception as exc:  # the underlay missing is a status problem, never a crash
            self._underlay_read = None
            return Underlay(None, None, None, str(exc))
        self._underlay_read = Underlay(index, name, mtu)
        if watch is not None:
            watch.read()
        return self._underlay_read

    def spec(self, plan: OverlayPlan, underlay: Underlay) -> DeviceSpec:
        overlay = self.config.overlay
        bound = underlay.index if self.config.host.underlay_interface is not None else None
        return DeviceSpec(
            bridge=self.bridge,
            vxlan=self.vxlan,
            vni=overlay.vni,
            port=overlay.port,
            local=self.config.host.underlay_address,
            link_index=bound,
            mtu=plan.mtu,
        )

    def apply(self, plan: OverlayPlan, underlay: Underlay, keep: Keep = "nothing") -> AppliedOverlay:
        """Read the kernel, diff, change the smallest thing; never raises (status shows errors).

        keep: our entries the plan cannot know yet (LXD not read): "macs", or "all" with peers
        from the cluster, when the VXLAN filter is left as it is too.
        """
        spec = self.spec(plan, underlay)
        desired = desired_fdb(plan)
        owned = self._load_owned()
        if keep != "nothing":
            desired |= {e for e in owned if keep == "all" or not e.flood}
        changes = KernelChanges()
        error = self._ensure_ipsec(plan)
        if error is not None:
            desired = frozenset()  # fail closed: no VTEP gets a frame in clear text
        watch = self._overlay_watch
        notified = watch is None or watch.changed()  # drained before any read: later changes show
        if not notified and error is None and self._clean == (spec, desired, owned):
            after = self._clean_fdb  # no link or FDB change announced since it matched
        else:
            after, changes, error = self._read_and_apply(spec, desired, owned, error, watch)
        # Ours: what we owned or just added, and is still there.
        now_owned = (owned | frozenset(changes.fdb_add)) & after
        if now_owned != owned:
            self._save_owned(now_owned)
        if keep != "all":
            self._apply_firewall(plan)
        if error is None and self._firewall_error is not None:
            error = self._firewall_error
        return AppliedOverlay(plan, changes, len(now_owned), time.time(), error)

    def _read_and_apply(
        self,
        spec: DeviceSpec,
        desired: frozenset[FdbEntry],
        owned: frozenset[FdbEntry],
        error: str | None,
        watch: KernelWatch | None,
    ) -> tuple[frozenset[FdbEntry], KernelChanges, str | None]:
        """Read the kernel, change the smallest thing; the FDB after, the changes, any error."""
        changes = KernelChanges()
        unchanged: frozenset[FdbEntry] | None = None
        self._clean = None
        with self._ipr_factory() as ipr:
            try:
                kernel = read_overlay(ipr, self.bridge, self.vxlan)
                changes = diff_overlay(spec, desired, kernel, owned)
                if changes.empty:
                    unchanged = kernel.fdb
                else:
                    apply_changes(ipr, spec, changes)
                    log.info(
                        "overlay changed",
                        steps=list(changes.reasons),
                        fdb_added=len(changes.fdb_add),
                        fdb_removed=len(changes.fdb_remove),
                    )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("overlay apply failed", reason=error)
            # Read again only after a change (or a failure): an unchanged kernel was just read.
            if unchanged is not None:
                after = unchanged
            else:
                try:
                    after = read_overlay(ipr, self.bridge, self.vxlan).fdb
                except Exception:
                    after = frozenset()
        if unchanged is not None and error is None:
            self._clean, self._clean_fdb = (spec, desired, owned), unchanged
            if watch is not None:
                watch.read()
        return after, changes, error

    def _ensure_ipsec(self, plan: OverlayPlan) -> str | None:
        """Install SAs and policies for the up peers; an error text when the overlay must stay closed."""
        ipsec = self.config.overlay.ipsec
        if not ipsec.enabled or ipsec.key_file is None:
            return None
        overlay = self.config.overlay
        try:
            key = read_key(ipsec.key_file)
            wanted = plan_ipsec(
                self.config.host.underlay_address,
                [f.vtep for f in plan.flood],
                key,
                overlay.port,
                overlay.vni,
            )
        except (IPsecKeyError, ValueError) as exc:
            return f"ipsec: {exc}"
        if wanted == self._ipsec:
            return None
        try:
            # The old plan goes first (SAs are added, not replaced); at start, any leftovers of ours.
            remove_ipsec(self._ipsec or wanted, netns=self._netns)
            self._ipsec = None
            apply_ipsec(wanted, netns=self._netns)
        except IPsecError as exc:
            log.error("ipsec not applied; overlay closed", reason=str(exc))
            return f"ipsec: {exc}"
        self._ipsec = wanted
        self._write_json(self._state_file.parent / IPSEC_PEERS_FILE, [str(f.vtep) for f in plan.flood])
        return None

    def _apply_firewall(self, plan: OverlayPlan) -> None:
        # Every known peer may send VXLAN, offline ones too: "offline" is LXD's view, not theirs.
        peers = sorted(
            {p.address for p in plan.peers if p.address is not None and p.state != "self"},
            key=lambda a: (a.version, int(a)),
        )
        try:
            self.firewall.apply(peers)
            self._firewall_peers = tuple(str(a) for a in peers)
            self._firewall_error = None
        except FirewallError as exc:
            self._firewall_error = f"firewall: {exc}"
            log.error("overlay firewall apply failed", reason=str(exc))

    def firewall_status(self) -> dict[str, Any]:
        error = self._firewall_error
        try:
            counters = self.firewall.counters(max_age=COUNTERS_MAX_AGE)
        except FirewallError as exc:
            counters, error = {}, error or str(exc)
        return {"peers": list(self._firewall_peers), "counters": counters, "error": error}

    def stop(self) -> None:
        """Agent stop: the overlay stays up; the VXLAN filter is removed with the agent."""
        try:
            self.firewall.remove()
        except FirewallError as exc:
            log.error("overlay firewall removal failed", reason=str(exc))

    def teardown(self) -> list[str]:
        """Remove the VXLAN device (its FDB goes with it), the bridge if fabricd created it, and the
        ownership record. Returns what was removed."""
        removed = []
        with self._ipr_factory() as ipr:
            if delete_link(ipr, self.vxlan):
                removed.append(f"vxlan {self.vxlan}")
            found = ipr.link_lookup(ifname=self.bridge)
            if found:
                (link,) = ipr.get_links(found[0])
                if link.get_attr("IFLA_IFALIAS") == OWNED_ALIAS:
                    delete_link(ipr, self.bridge)
                    removed.append(f"bridge {self.bridge}")
                else:
                    log.info("bridge left in place: fabricd did not create it", bridge=self.bridge)
        if self.firewall.exists():
            self.firewall.remove()
            removed.append("nftables table inet fabricd_overlay")
        removed += self._teardown_ipsec()
        if self._state_file.exists():
            self._state_file.unlink()
            removed.append(f"state {self._state_file}")
        return removed

    def _teardown_ipsec(self) -> list[str]:
        peers_file = self._state_file.parent / IPSEC_PEERS_FILE
        ipsec, overlay = self.config.overlay.ipsec, self.config.overlay
        if not peers_file.exists() or ipsec.key_file is None:
            return []
        peers = [ip_address(a) for a in json.loads(peers_file.read_text())]
        key = read_key(ipsec.key_file)
        remove_ipsec(
            plan_ipsec(self.config.host.underlay_address, peers, key, overlay.port, overlay.vni),
            netns=self._netns,
        )
        peers_file.unlink()
        return [f"ipsec SAs and policies for {len(peers)} peers"]

    def _load_owned(self) -> frozenset[FdbEntry]:
        try:
            data = json.loads(self._state_file.read_text())
            if data.get("vxlan") != self.vxlan:
                return frozenset()
            return frozenset(FdbEntry(str(mac), ip_address(dst)) for mac, dst in data.get("fdb", []))
        except FileNotFoundError:
            return frozenset()
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("overlay state file unreadable; treating no entry as ours", reason=str(exc))
            return frozenset()

    def _save_owned(self, owned: frozenset[FdbEntry]) -> None:
        entries = [[e.mac, str(e.dst)] for e in sorted(owned)]
        self._write_json(self._state_file, {"vxlan": self.vxlan, "fdb": entries})

    @staticmethod
    def _write_json(path: Path, data: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
