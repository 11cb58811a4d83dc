"""`fabricd teardown`: remove what fabricd built, once the agent is stopped."""

from __future__ import annotations

import socket
import sys

from fabricd.config import FabricConfig
from fabricd.overlay.manager import OverlayManager

EXIT_OK, EXIT_RUNTIME = 0, 1


def agent_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def teardown(config: FabricConfig) -> int:
    control = config.control.socket
    if agent_answers(str(control)):
        print(f"fabricd is running (it answers on {control}); stop it first", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        removed = OverlayManager(config, config.daemon.state_dir).teardown()
    except Exception as exc:
        print(f"teardown failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to remove")
    return EXIT_OK
