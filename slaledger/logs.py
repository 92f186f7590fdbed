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
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The libraries' info lines are their internals (rebalances, fetch sessions): warnings up.
    root.setLevel(max(numeric, logging.WARNING))
