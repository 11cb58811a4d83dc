"""`fabricd teardown`: remove what fabricd built, once the agent is stopped."""

from __future__ import annotations

import socket
import sys
from typing import Protocol

from fabricd.config import FabricConfig
from fabricd.overlay.manager import OverlayManager
from fabricd.services.host_routes import NetlinkRoutes, RouteKernel
from fabricd.services.model import HostRoute

EXIT_OK, EXIT_RUNTIME = 0, 1


def agent_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


class ServiceRoutes(RouteKernel, Protocol):
    def read(self) -> tuple[HostRoute, ...]: ...


def remove_service_routes(kernel: ServiceRoutes) -> list[str]:
    """The anycast host routes a crashed agent left (a stopped one removes its own)."""
    removed = []
    for route in kernel.read():
        kernel.remove(route.prefix)
        removed.append(f"service host route {route.prefix}")
    return removed


def teardown(config: FabricConfig) -> int:
    control = config.control.socket
    if agent_answers(str(control)):
        print(f"fabricd is running (it answers on {control}); stop it first", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        removed = OverlayManager(config, config.daemon.state_dir).teardown()
        removed += remove_service_routes(NetlinkRoutes())
    except Exception as exc:
        print(f"teardown failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to remove")
    return EXIT_OK
