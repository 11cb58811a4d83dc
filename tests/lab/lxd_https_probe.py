"""Run inside a lab node: watch LXD over HTTPS with a client certificate until an instance runs.

argv: URL CLIENT_CERT CLIENT_KEY SERVER_CERT INSTANCE RESULT_FILE
Writes JSON {connected, saw_instance_after_connect, seconds} to RESULT_FILE.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from fabricd.config.model import LXDConfig
from fabricd.lxd.observer import LXDObserver


async def main(url: str, cert: str, key: str, server_cert: str, instance: str, result: Path) -> None:
    config = LXDConfig(
        socket=None, url=url, client_cert=Path(cert), client_key=Path(key), server_cert=Path(server_cert)
    )
    observer = LXDObserver(config, lambda: None)
    stop = asyncio.Event()
    task = asyncio.create_task(observer.run(stop))
    outcome: dict[str, object] = {"connected": False, "saw_instance_after_connect": False}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not observer.observation().connected:
        await asyncio.sleep(0.05)
    outcome["connected"] = observer.observation().connected
    outcome["error"] = observer.observation().error
    Path(f"{result}.ready").write_text("1")
    started = time.monotonic()
    while time.monotonic() < deadline + 20:
        snapshot = observer.observation().snapshot
        if snapshot and any(i.name == instance and i.running for i in snapshot.instances):
            outcome["saw_instance_after_connect"] = True
            outcome["seconds"] = round(time.monotonic() - started, 3)
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    result.write_text(json.dumps(outcome))


if __name__ == "__main__":
    url, cert, key, server_cert, instance, result = sys.argv[1:7]
    asyncio.run(main(url, cert, key, server_cert, instance, Path(result)))
