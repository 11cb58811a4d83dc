"""Run inside a lab node: one elector against the real LXD cluster, as the authority will run it.

argv: LXD_SOCKET MEMBER_NAME
Prints one JSON line per change of state (and at start): wall time, serving, holder, epoch,
the wall time of the last successful renewal, and the reason. SIGTERM releases the lease and exits.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from fabricd.authority.election import Elector, Memory
from fabricd.authority.lease_store import LeaseStore
from fabricd.config.model import LXDConfig
from fabricd.lxd.api import LXDApi


def main(socket: str, me: str) -> None:
    store = LeaseStore(LXDApi(LXDConfig(socket=Path(socket))))
    elector = Elector(me)
    memory = Memory()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    last: tuple[object, ...] = ()
    renewed_wall: float | None = None
    while not stopping:
        began = time.monotonic()
        read = store.read()
        memory, write = elector.step(memory, read, began)
        if write is not None:
            sent, sent_wall = time.monotonic(), time.time()
            memory = elector.written(memory, write, sent, store.write(write))
            if memory.renewed_at == sent:
                renewed_wall = sent_wall
        serving = elector.serving(memory, time.monotonic())
        state = (serving, memory.holder, memory.epoch, memory.reason.split(":")[0])
        if state != last:
            last = state
            line = {"t": time.time(), "serving": serving, "holder": memory.holder, "epoch": memory.epoch,
                    "renewed": renewed_wall, "reason": memory.reason}  # fmt: skip
            print(json.dumps(line), flush=True)
        time.sleep(max(0.0, elector.timers.renew_interval - (time.monotonic() - began)))
    release = elector.release(memory, store.read())
    released = release is not None and store.write(release)
    print(json.dumps({"t": time.time(), "serving": False, "released": released}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
