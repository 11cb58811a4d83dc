"""Run inside a lab node: race other members to create the same election record, round after round.

argv: LXD_SOCKET MEMBER PREFIX ROUNDS START PERIOD
Every round r starts at wall time START + r * PERIOD: the store is read (the base version), and at
the round's midpoint, the same instant on every member (one machine, one clock), a record naming
MEMBER is written on that base through `fabricd.authority.lease_store.LeaseStore`. Then the store
is read again. One JSON line per round: base, whether this write won, and who holds the record now.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fabricd.authority.election import LeaseRecord, Write
from fabricd.authority.lease_store import LeaseStore
from fabricd.config.model import LXDConfig
from fabricd.lxd.api import LXDApi


def sleep_until(wall: float) -> None:
    while (left := wall - time.time()) > 0:
        time.sleep(min(left, 0.05) if left > 0.002 else 0)


def main(socket: str, me: str, prefix: str, rounds: str, start: str, period: str) -> None:
    store = LeaseStore(LXDApi(LXDConfig(socket=Path(socket))), prefix=prefix)
    for number in range(int(rounds)):
        begin = float(start) + number * float(period)
        sleep_until(begin)
        base = store.read()
        if base.version is None or base.record is None:
            print(json.dumps({"round": number, "error": base.error}), flush=True)
            continue
        record = LeaseRecord(me, base.record.epoch + 1, base.record.ttl, base.record.seq + 1)
        sleep_until(begin + float(period) / 2)
        sent = time.time()
        won = store.write(Write(record, base.version, "take"))
        after = store.read()
        holder = after.record.holder if after.record is not None else None
        line = {"round": number, "base": base.version, "won": won, "sent": sent,
                "after": after.version, "holder": holder}  # fmt: skip
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
