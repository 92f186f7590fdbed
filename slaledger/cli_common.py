"""What every command family of the command line shares (``*_cli.py``, assembled by
``cli.build_parser``): the parser that turns bad input into one line, the connection
options, the settings read from them and the environment, the broker check at start and
the progress bars."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from sla.events import EventDecodeError, parse_instant

from .settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

T = TypeVar("T")
BROKER_HELP = "kafka://host:port (env SLALEDGER_BROKER_URL)"
DATABASE_HELP = "SQLAlchemy URL (env SLALEDGER_DATABASE_URL)"
DATA_DIR_HELP = "where the default SQLite file lives"


class UsageError(Exception):
    """Invalid input on the command line: reported on one line, exit code 2."""


class CliParser(argparse.ArgumentParser):
    """A parser whose usage errors are ``UsageError``s (``cli.main``: one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def connection_options(parser: argparse.ArgumentParser, *, broker: bool = False, database: str | None = None,
                       data_dir: str | None = DATA_DIR_HELP) -> None:
    """``--broker``, ``--database`` and ``--data-dir`` as every command reaching Kafka or the
    database takes them (the same names and destinations, read by ``settings``); each
    command's help says what the database or the directory is to it."""
    if broker:
        parser.add_argument("--broker", help=BROKER_HELP)
    if database is not None:
        parser.add_argument("--database", dest="database_url", help=database)
    if data_dir is not None:
        parser.add_argument("--data-dir", help=data_dir)


def instant(value: str) -> datetime:
    """An ISO 8601 instant with its offset, as an argparse type."""
    try:
        return parse_instant(value, "date")
    except EventDecodeError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("date: ")) from None


def command_settings(args: argparse.Namespace, **extra: object) -> Settings:
    """The settings of a command: its options over the environment, checked here (one line,
    not a traceback later); every kafka-python client of the process is secured by them."""
    names = ("web_port", "web_host", "data_dir", "policy_file", "partitions", "timer_interval", "demo",
             "database_url", "metrics_port")
    flags = {n: getattr(args, n, None) for n in names}
    if getattr(args, "broker", None):
        flags["broker_url"] = args.broker
    flags.update(extra)
    from streams import kafka_security

    try:
        settings = Settings.from_env(**flags)
        settings.evening_alert_time  # noqa: B018 (validated here: one line, not a traceback later)
        kafka_security.configure(settings)  # every kafka-python client of this process: TLS/SASL
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for name in ("web_port", "metrics_port"):  # metrics port 0: no metrics server
        if not 0 <= getattr(settings, name) <= 65535:
            raise UsageError(f"{name.replace('_', '-')}: {getattr(settings, name)} is not a TCP port (0–65535)")
    if settings.database_url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(settings.database).get_dialect()
        except (ArgumentError, ImportError, ValueError) as exc:
            raise UsageError(f"database URL: {exc}: check --database / SLALEDGER_DATABASE_URL") from None
    args.settings = settings  # what main() names when the command fails on its broker or database
    return settings


def reach_broker(settings: Settings) -> None:
    """Fail at start, within ``broker_timeout`` seconds, when the broker is not there."""
    from streams.kafka_tools import wait_for_broker

    wait_for_broker(settings.bootstrap, settings.broker_timeout)


def progress_bar(desc: str, unit: str, total: int | None = None, *, file: TextIO | None = None,
                 disable: bool | None = None) -> Any:
    """A tqdm bar on stderr, only when stderr is a terminal: logs and pipes stay clean."""
    from tqdm import tqdm

    stream = file or sys.stderr
    return tqdm(total=total or None, desc=desc, unit=f" {unit}", file=stream, dynamic_ncols=True,
                disable=not stream.isatty() if disable is None else disable)


def log_progress(settings: Settings, source: str, engine: Engine | None, desc: str) -> Any:
    """A bar sized by the log (the topic's end offsets or the archive's row count), on a
    terminal only: off one, the log is not even counted."""
    if not sys.stderr.isatty():
        return progress_bar(desc, "événements", disable=True)
    if source == "archive" and engine is not None:
        from sqlalchemy import func, select

        from projections.models import ARCHIVE

        with engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(ARCHIVE)) or 0
    else:
        from sla.log_names import EVENTS
        from streams.kafka_tools import end_offsets_total

        total = end_offsets_total(settings.bootstrap, EVENTS)
    return progress_bar(desc, "événements", total)


def counted(bar: Any, records: Iterable[T]) -> Iterator[T]:
    """``records`` as they go, each one advancing ``bar``."""
    for record in records:
        yield record
        bar.update()
