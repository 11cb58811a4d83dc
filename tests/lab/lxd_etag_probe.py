"""Run inside a lab node: conditional writes to LXD with If-Match, as the election will make them.

argv: LXD_SOCKET PATH
Prints JSON: whether a write with the current ETag applied, and what a stale ETag got.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fabricd.config.model import LXDConfig
from fabricd.lxd.api import LXDApi, LXDPreconditionFailed

KEY = "user.fabric.etag-probe"


def main(socket: str, path: str) -> None:
    api = LXDApi(LXDConfig(socket=Path(socket)))
    first = api.get_versioned(path)
    config = dict(first.metadata.get("config") or {})
    api.write("PATCH", path, {"config": config | {KEY: "first"}}, first.etag)
    outcome: dict[str, object] = {"first_etag": first.etag, "after_first": api.get(path)["config"].get(KEY)}
    try:  # the ETag read before the first write is stale now
        api.write("PATCH", path, {"config": config | {KEY: "stale"}}, first.etag)
        outcome["stale"] = "accepted"
    except LXDPreconditionFailed as exc:
        outcome["stale"] = exc.status
    second = api.get_versioned(path)
    outcome["after_stale"] = second.metadata["config"].get(KEY)
    outcome["etag_changed"] = second.etag != first.etag
    api.write(
        "PUT", path, {"config": config, "description": second.metadata.get("description", "")}, second.etag
    )
    outcome["cleaned"] = KEY not in api.get(path)["config"]
    print(json.dumps(outcome))


if __name__ == "__main__":
    main(*sys.argv[1:])
