"""structlog set-up: console output for people, JSON lines in production."""

from __future__ import annotations

import logging
import sys

import structlog

from cityops.settings import LogSettings


def configure(log: LogSettings) -> None:
    """Configure structlog and the standard library's logging once, in main()."""
    level = getattr(logging, log.level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
