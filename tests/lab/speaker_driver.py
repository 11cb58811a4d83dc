"""A stand-in for fabricd in lab tests: runs an ExaBGPSpeaker with routes from a JSON file.

    python tests/lab/speaker_driver.py CONFIG STATE_DIR ROUTES_JSON STATUS_JSON

ROUTES_JSON is polled; each change is one set_routes() with its whole content, a list of
{"prefix", "next_hop", optional "med", "local_pref", "communities", "large_communities"}.
STATUS_JSON is rewritten every 50 ms: this pid, the ExaBGP pid and starts, peers, route states.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabricd.config import load_config
from fabricd.log import configure_logging, get_logger
from fabricd.routes.model import Origin, Route, RouteAttributes

if TYPE_CHECKING:
    from fabricd.bgp.speaker import ExaBGPSpeaker


def read_routes(path: Path) -> list[Route]:
    routes = []
    for item in json.loads(path.read_text()):
        attributes = RouteAttributes(
            communities=tuple(item.get("communities", ())),
            large_communities=tuple(item.get("large_communities", ())),
            med=item.get("med"),
            local_pref=item.get("local_pref"),
        )
        origin = Origin("user-route", "default", "lab", key=item["prefix"])
        routes.append(Route(ip_network(item["prefix"]), ip_address(item["next_hop"]), origin, attributes))
    return routes


def write_status(path: Path, speaker: ExaBGPSpeaker) -> None:
    now = time.time()
    status: dict[str, Any] = {
        "pid": os.getpid(),
        "exabgp_pid": speaker.exabgp_pid,
        "starts": speaker.supervisor.starts,
        "peers": [p.as_dict(now) for p in speaker.peers()],
        "routes": {str(r.prefix): state for r, state in speaker.route_states().items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    tmp.replace(path)


async def drive(config_path: Path, state_dir: Path, routes_path: Path, status_path: Path) -> None:
    # Imported after configure_logging: fabricd's module loggers bind the config current at import.
    from fabricd.bgp.speaker import ExaBGPSpeaker

    log = get_logger("speaker-driver")
    config = load_config(config_path)
    assert config.bgp is not None
    speaker = ExaBGPSpeaker(config.bgp, config.host, state_dir)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await speaker.start()
    seen = ""
    try:
        while not stopping.is_set():
            text = routes_path.read_text() if routes_path.exists() else "[]"
            if text != seen:
                seen = text
                await speaker.set_routes(read_routes(routes_path) if routes_path.exists() else [])
                log.info("routes set", count=len(json.loads(text)))
            write_status(status_path, speaker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.05)
    finally:
        await speaker.stop()
        write_status(status_path, speaker)


def main() -> int:
    configure_logging("info", "json")
    config, state, routes, status = (Path(a) for a in sys.argv[1:5])
    asyncio.run(drive(config, state, routes, status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
