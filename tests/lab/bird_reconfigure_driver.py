"""BirdBFD's reconfiguration against a real BIRD, in a lab node: a neighbor added to the file
reaches the running BIRD with `birdc configure` (same pid, the existing session untouched), and a
file BIRD refuses leaves the running one as it was.

    python tests/lab/bird_reconfigure_driver.py STATE_DIR ROUTER_ID LOCAL LOCAL6 PEER1 PEER2

Prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from fabricd.bfd.bird import BirdBFD, BirdError
from fabricd.bfd.bird_config import render_bird_config
from fabricd.config.model import BFDConfig, BGPConfig, HostConfig, PeerConfig


def text(router_id: str, local: tuple[str, str], *peers: str) -> str:
    bgp = BGPConfig(
        65012,
        ip_address(router_id),  # type: ignore[arg-type]
        peers=tuple(PeerConfig(p, ip_address(p), 65000, bfd=BFDConfig()) for p in peers),
    )
    v4, v6 = local
    return render_bird_config(bgp, HostConfig("driver", ip_address(v4), ip_address(v6)))  # type: ignore[arg-type]


async def sessions(bird: BirdBFD, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        seen = await bird.sessions()
        if (seen.error is None and len(seen.sessions) == count) or time.monotonic() > deadline:
            return {str(s.address): {"state": s.state, "since": s.since} for s in seen.sessions} | {
                "error": seen.error
            }
        await asyncio.sleep(0.1)


async def main(
    state_dir: Path, router_id: str, local: tuple[str, str], first: str, second: str
) -> dict[str, Any]:
    bird = BirdBFD(state_dir)
    await bird.start(text(router_id, local, first))
    try:
        one = await sessions(bird, 1)
        pid = bird.pid
        await asyncio.sleep(1.0)  # so a rebuilt session would show a later state change time
        same = await bird.apply(text(router_id, local, first))
        added = await bird.apply(text(router_id, local, first, second))
        two = await sessions(bird, 2)
        refused = ""
        try:
            await bird.apply(text(router_id, local, first) + "protocol nonsense {}\n")
        except BirdError as exc:
            refused = str(exc)
        after = await sessions(bird, 2)
        return {
            "pid_before": pid,
            "pid_after": bird.pid,
            "starts": bird.child.starts,
            "configures": bird.configures,
            "unchanged_applied": same,
            "added_applied": added,
            "one": one,
            "two": two,
            "refused": refused,
            "after_refused": after,
        }
    finally:
        await bird.stop()


if __name__ == "__main__":
    state, router, local4, local6, peer1, peer2 = sys.argv[1:7]
    print(json.dumps(asyncio.run(main(Path(state), router, (local4, local6), peer1, peer2))))
