"""Settings the agent accepts but does not act on yet: a warning at start and a standing problem."""

from __future__ import annotations

from fabricd.agent.feature import Feature, FeatureStatus
from fabricd.config.model import FabricConfig
from fabricd.config.unbuilt import unbuilt_settings
from fabricd.log import get_logger

log = get_logger("fabricd.config")


class UnbuiltSettings(Feature):
    name = "config"

    def __init__(self, config: FabricConfig) -> None:
        self._source = str(config.source)
        self._found = unbuilt_settings(config)

    async def start(self) -> None:
        for key, why in self._found:
            log.warning("setting has no effect yet", file=self._source, key=key, reason=why)

    async def status(self) -> FeatureStatus:
        return FeatureStatus(problems=tuple(f"config {key}: {why}" for key, why in self._found))
