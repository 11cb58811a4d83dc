"""Which features this host runs, from its config: the one place that names them.

The agent, the benchmarks and the tests all build their stacks here, so there is one composition.
Order matters: shared views first (their observers run first in a pass), then features in the
order their appliers should run (routes first, as the route applier is the one that keeps the BGP
session fed; BFD for those sessions next; the overlay before the DHCP/DNS authority, whose server
sits on the bridge), and the anycast services last.
"""

from __future__ import annotations

from collections.abc import Callable

from fabricd.agent.decisions import DecisionLog
from fabricd.agent.feature import Feature
from fabricd.agent.notices import UnbuiltSettings
from fabricd.authority.feature import AuthorityFeature
from fabricd.bfd.feature import BFDFeature
from fabricd.config.model import FabricConfig
from fabricd.lxd.members import MemberObserver
from fabricd.lxd.view import LXDView
from fabricd.overlay.feature import OverlayFeature
from fabricd.routes.feature import RouteFeature
from fabricd.services.feature import ServicesFeature


def route_feature(
    config: FabricConfig, decisions: DecisionLog, on_change: Callable[[], None]
) -> RouteFeature:
    return RouteFeature(config, config.daemon.state_dir, decisions, on_change)


def build_features(
    config: FabricConfig,
    decisions: DecisionLog,
    on_change: Callable[[], None],
    *,
    lxd: Feature | None = None,
) -> list[Feature]:
    """`on_change` asks the loop for a pass; `lxd` replaces the LXD view (benchmarks feed a
    synthetic one)."""
    features: list[Feature] = [
        UnbuiltSettings(config),
        lxd if lxd is not None else LXDView(config.lxd, on_change),
    ]
    overlay_members = config.overlay.enabled and config.overlay.peers_from_lxd_cluster
    authority = config.dhcp.enabled
    if overlay_members or (authority and config.dhcp.election == "lxd-cluster"):
        features.append(MemberObserver(config.lxd, on_change))
    routes = route_feature(config, decisions, on_change)
    features.append(routes)
    if config.bgp is not None and config.bgp.bfd_peers:
        state_dir = config.daemon.state_dir / "bfd"
        features.append(BFDFeature(config.bgp, config.host, state_dir, decisions, on_change))
    if config.overlay.enabled:
        features.append(OverlayFeature(config, config.daemon.state_dir))
    if authority:  # after the overlay: it plans the MTU, and the bridge must exist first
        features.append(AuthorityFeature(config, on_change))
    # Anycast services last: their host-route applier runs after the route applier in each pass
    # (a withdraw is out before the route it protects goes), and after the bridges exist.
    # Always composed: instances may define services, and a previous run's host routes go.
    features.append(ServicesFeature(config, decisions, on_change, routes))
    return features
