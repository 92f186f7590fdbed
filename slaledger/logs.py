"""structlog configuration: JSON lines in services, readable console in dev mode.

Every line carries what applies of ``ticket_id``, ``event_id``, ``topic``, ``partition``
and ``offset``, bound by the code that handles the record.

Faust, aiokafka and kafka-python log through the standard library: its root handler renders
their records with the same processors and renderer (structlog's ``ProcessorFormatter``), so
the JSON log stays one JSON object a line, theirs with ``logger`` naming the library.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_expected_in_one_line)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The libraries' info lines are their internals (rebalances, fetch sessions): warnings up.
    root.setLevel(max(numeric, logging.WARNING))


# Conditions a normal run meets, which the client libraries log with a traceback: a broker
# connection closed under kafka-python's feet at a stop (its transport then has no socket:
# AttributeError 'NoneType' … 'recv', or ConnectionResetError), a Kafka group coordinator
# not elected yet at start. Said in one line, they no longer read as a crash; any other
# exception keeps its traceback.
_EXPECTED_NAMES = ("GroupCoordinatorNotAvailableError", "CoordinatorNotAvailableError")


def _expected(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return True
    if isinstance(exc, AttributeError) and str(exc) == "'NoneType' object has no attribute 'recv'":
        return True
    return type(exc).__name__ in _EXPECTED_NAMES


def _expected_in_one_line(record: logging.LogRecord) -> bool:
    """A library's record of an expected condition, without its traceback (the exception's
    type and message are kept in the line)."""
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and _expected(exc):
        record.msg, record.args = f"{record.getMessage()} ({type(exc).__name__}: {exc})", None
        record.exc_info, record.exc_text = None, None
    return True
