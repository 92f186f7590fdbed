"""What a command's failure on its environment looks like to the operator: one line.

``slaledger.cli.main`` hands every exception a handler lets out to ``describe``; an
unreachable broker, a database that refuses or has no tables, a bad database URL or an
unusable path become ``slaledger: error: <what failed>: <what to check>``, never a
traceback. Commands do not catch these themselves, so a command added later gets the same
lines for free. Anything not recognised here is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Protocol

from streams.kafka_tools import TopicMissing
from streams.topics import TopicLayoutError

from .settings import mask_url

# Exit codes: 2 for input the operator can fix on the command line (usage, files named),
# 1 for an environment that did not answer (broker, database) or an operation that failed.
USAGE, FAILED = 2, 1


class CommandFailed(Exception):
    """An operation failed and its message already says so for the operator: exit code 1."""


class _Where(Protocol):
    """What the line names: the settings the command ran with (``slaledger.settings.Settings``)."""

    @property
    def bootstrap(self) -> str: ...
    @property
    def database(self) -> str: ...


def _first_line(text: object) -> str:
    return (str(text).strip().splitlines() or [""])[0].strip()


def describe(exc: BaseException, where: _Where | None) -> tuple[str, int] | None:
    """The line (without the ``slaledger: error:`` prefix) and exit code for ``exc``, or None
    when it is not an environment failure."""
    from kafka.errors import KafkaError
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from projections.migrate import SchemaBehind

    broker = f" at {where.bootstrap}" if where else ""
    database = mask_url(where.database) if where else "the database"
    if isinstance(exc, CommandFailed | SchemaBehind):
        return str(exc), FAILED
    if isinstance(exc, TopicMissing):
        return (f"{exc}{broker}: create the topics with `slaledger topics create` "
                "(or check --broker / SLALEDGER_BROKER_URL)"), FAILED
    if isinstance(exc, TopicLayoutError):
        return (f"topics{broker} do not have the expected partitions ({exc}): run with the partition count they "
                "were created with (--partitions / SLALEDGER_PARTITIONS)"), FAILED
    if isinstance(exc, KafkaError):
        name, detail = type(exc).__name__, _first_line(exc)
        detail = detail if detail.startswith(name) else f"{name}: {detail}"
        if "AuthorizationFailed" in name:
            return (f"Kafka broker{broker} refused this principal ({detail}): check SLALEDGER_KAFKA_SASL_USERNAME "
                    "and its ACLs (`slaledger topics create --acls`)"), FAILED
        return (f"Kafka broker{broker} unreachable or failing ({detail}): "
                "check --broker / SLALEDGER_BROKER_URL, that the broker is running and, on a secured cluster, "
                "the SLALEDGER_KAFKA_* credentials (a refused login looks like no answer)"), FAILED
    if isinstance(exc, ArgumentError):
        return (f"database URL {database}: {_first_line(exc)}: check --database / SLALEDGER_DATABASE_URL "
                "(e.g. postgresql+psycopg://user@host:5432/name)"), USAGE
    if isinstance(exc, DBAPIError):
        detail = _first_line(exc.orig if exc.orig is not None else exc)
        if "no such table" in detail or ("relation" in detail and "does not exist" in detail):
            return (f"{database} has no slaledger tables ({detail}): a fresh data directory or database? "
                    "Point --database / --data-dir at the projector's database"), FAILED
        if getattr(exc.orig, "sqlstate", None) == "42501":  # insufficient_privilege
            return (f"database {database} refused this command's role ({detail}): each process has its own "
                    "role and grants (projections/roles.py, applied by `slaledger db migrate`); check "
                    "SLALEDGER_DATABASE_URL's user"), FAILED
        return (f"database {database} refused or unreachable ({detail}): check --database / "
                "SLALEDGER_DATABASE_URL (or --data-dir) and that the server is running"), FAILED
    if isinstance(exc, OSError):
        if exc.filename is not None:
            return (f"{exc.filename}: {exc.strerror or _first_line(exc)}: check the paths given (--data-dir, "
                    "--policy, --output…) and their permissions"), USAGE
        # an OSError raised with a sentence (no errno) already names what failed
        what = _first_line(exc) if exc.errno is None else f"{type(exc).__name__}: {_first_line(exc)}"
        return f"{what}: check the addresses configured and the network", FAILED
    return None
