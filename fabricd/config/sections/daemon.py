"""The sections about the daemon itself: `daemon`, `control`, `metrics`, `logging` and `reconcile`."""

from __future__ import annotations

from fabricd.config import converters as convert
from fabricd.config.model import (
    ControlConfig,
    DaemonConfig,
    LogFormat,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    ReconcileConfig,
)
from fabricd.config.reader import Invalid, Value

LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")


def parse_daemon(value: Value) -> DaemonConfig:
    m = value.mapping(("state_dir",))
    state_dir = m.get("state_dir", convert.absolute_path, DaemonConfig().state_dir)
    if not m.clean():
        raise Invalid
    return DaemonConfig(state_dir)


def parse_control(value: Value) -> ControlConfig:
    m = value.mapping(("socket", "mode", "group"))
    default = ControlConfig()
    socket = m.get("socket", convert.absolute_path, default.socket)
    mode = m.get("mode", convert.mode, default.mode)
    group = m.get("group", convert.group, default.group)
    if not m.clean():
        raise Invalid
    return ControlConfig(socket, mode, group)


def parse_metrics(value: Value) -> MetricsConfig:
    m = value.mapping(("listen",))
    listen = m.get("listen", convert.listen, None)
    if not m.clean():
        raise Invalid
    return MetricsConfig(listen)


def parse_logging(value: Value) -> LoggingConfig:
    m = value.mapping(("level", "format"))
    default = LoggingConfig()
    level = m.get("level", convert.choice(LEVELS), default.level)
    fmt = m.get("format", convert.choice(FORMATS), default.format)
    if not m.clean():
        raise Invalid
    return LoggingConfig(level, fmt)


def parse_reconcile(value: Value) -> ReconcileConfig:
    m = value.mapping(("interval",))
    interval = m.get("interval", convert.positive_number, ReconcileConfig().interval)
    if not m.clean():
        raise Invalid
    return ReconcileConfig(interval)
