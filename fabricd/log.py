"""Structured logging: JSON lines under systemd or a pipe, readable colours on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def wants_json(fmt: LogFormat, stream_is_tty: bool, under_journal: bool) -> bool:
    """JSON unless a person is watching a terminal; systemd's journal always gets JSON."""
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    return under_journal or not stream_is_tty


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    stream = sys.stderr
    as_json = wants_json(fmt, stream.isatty(), "JOURNAL_STREAM" in os.environ)
    renderer: structlog.typing.Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A lazy logger: modules create theirs at import, before configure_logging has run."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
