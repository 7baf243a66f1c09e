"""structlog set-up, done once: JSON lines for the journal, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Send structured events to stderr; JSON unless stderr is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    # The console renderer formats exceptions itself; JSON needs them as text.
    tail = ([structlog.processors.format_exc_info, structlog.processors.JSONRenderer()] if json
            else [structlog.dev.ConsoleRenderer(colors=True)])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
