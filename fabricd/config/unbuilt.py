"""Config that validates but has no effect yet: said out loud, never silently accepted.

`fabricd check-config` prints these as warnings and the agent logs them at start and lists them
as problems in `fabricctl status`, until the feature behind each key is built.
"""

from __future__ import annotations

from fabricd.config.model import FabricConfig


def unbuilt_settings(config: FabricConfig) -> list[tuple[str, str]]:
    """(key path, why) for every setting in `config` that fabricd does not act on yet.

    None today: every section is built. The hook stays, so a key added before its feature works is
    warned about here rather than silently accepted."""
    found: list[tuple[str, str]] = []
    return found
