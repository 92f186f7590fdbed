"""``slaledger itop sync``: the iTop connector, publishing the changes of the members'
iTop tickets as ticket commands and writing the SLA state back to them."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

import structlog

from .cli_common import UsageError, command_settings, connection_options, progress_bar, reach_broker
from .failures import CommandFailed
from .logs import configure_logging

if TYPE_CHECKING:
    from sla.ticket import Command
    from slaledger.itop.sync import Publisher


def add_parsers(commands: Any) -> None:
    itop = commands.add_parser("itop", help="iTop connector (members file on the iTop portal)")
    itop_commands = itop.add_subparsers(dest="itop_command", required=True)
    itop_sync = itop_commands.add_parser("sync", help="publish iTop UserRequest/Incident changes as ticket commands")
    itop_sync.add_argument("--url", dest="itop_url", help="iTop base URL or …/webservices/rest.php "
                                                          "(env SLALEDGER_ITOP_URL)")
    itop_sync.add_argument("--user", dest="itop_user", help="REST account (env SLALEDGER_ITOP_USER)")
    itop_sync.add_argument("--password", dest="itop_password", help="prefer env SLALEDGER_ITOP_PASSWORD")
    itop_sync.add_argument("--token", dest="itop_token", help="application token instead of user/password; "
                                                              "prefer env SLALEDGER_ITOP_TOKEN")
    itop_mode = itop_sync.add_mutually_exclusive_group(required=True)
    itop_mode.add_argument("--once", action="store_true", help="one pass; exit 1 if it fails")
    itop_mode.add_argument("--every", type=_duration, metavar="DURATION", help="poll forever, e.g. 60s")
    itop_sync.add_argument("--page-size", type=_page_size, default=100, help="objects per core/get page (1–1000)")
    itop_sync.add_argument("--org-map", help="TOML: [organisations] and [services] names → member and product ids")
    itop_sync.add_argument("--since", help="first run only: changes since this iTop local time (default: all)")
    itop_sync.add_argument("--overlap", type=_duration, default=3900.0, help="window re-read each pass (65m)")
    itop_sync.add_argument("--retries", type=int, default=3, help="--once: attempts on transient failures")
    itop_sync.add_argument("--timezone", dest="itop_timezone", help="iTop server time zone (default Europe/Paris)")
    connection_options(itop_sync, broker=True, database="SQLAlchemy URL of the checkpoint")
    itop_sync.add_argument("--json", action="store_true", help="--once: what the pass did as one JSON object")
    itop_sync.add_argument("--no-writeback", action="store_true",
                           help="do not write the SLA state back to the iTop tickets' private log")
    itop_sync.add_argument("--sla-field", default=os.environ.get("SLALEDGER_ITOP_SLA_FIELD") or None, metavar="CODE",
                           help="iTop attribute set to the next contractual deadline (env SLALEDGER_ITOP_SLA_FIELD)")
    itop_sync.set_defaults(handler=cmd_itop_sync)


def _duration(value: str) -> float:
    from slaledger.itop import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _page_size(value: str) -> int:
    from slaledger.itop import MAX_PAGE_SIZE

    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{value!r}: an integer from 1 to {MAX_PAGE_SIZE}")
    return int(value)


def cmd_itop_sync(args: argparse.Namespace) -> int:
    """Poll iTop and publish its changes as commands; ``--once`` prints what it did (French,
    or one JSON object with ``--json``)."""
    import dataclasses
    import signal
    import threading
    from datetime import timedelta
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from projections.migrate import create_schema
    from slaledger import itop

    from .bootstrap import engine_for
    from .members import directory, load_members

    settings = command_settings(args, itop_url=args.itop_url, itop_user=args.itop_user,
                                itop_password=args.itop_password, itop_token=args.itop_token,
                                itop_timezone=args.itop_timezone)
    configure_logging(settings.log_format, settings.log_level)
    try:
        tz = ZoneInfo(settings.itop_timezone)
        client = itop.ItopClient(settings.itop_url, user=settings.itop_user, password=settings.itop_password,
                                 token=settings.itop_token)
        reference = itop.Reference.from_file(args.org_map) if args.org_map else itop.Reference()
        # names checked against the members directory (when one is set) and the policy's products
        reference = dataclasses.replace(reference, products=settings.policy().products, members=(
            directory(load_members(settings.members_file)) if settings.members_file else None))
        since = itop.parse_since(args.since)
        itop.check_field_code(args.sla_field)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    if args.json and not args.once:
        raise UsageError("--json goes with --once")
    engine = engine_for(settings)
    create_schema(engine)
    reach_broker(settings)  # a broker down later is retried; one absent at start is a mistake
    store = itop.CheckpointStore(engine, client.endpoint)
    overlap = timedelta(seconds=args.overlap)
    # the worker refuses facts dated beyond this: the connector reports them instead of sending
    max_backdate = settings.policy().versions[-1].connector_max_backdate
    titles = {d.name: d.title for v in settings.policy().versions for d in v.slas}  # the latest title wins
    publisher: itop.KafkaPublisher | None = None
    bar = progress_bar("iTop", "commandes")

    def sync() -> itop.SyncResult:
        nonlocal publisher
        if publisher is None:  # created on first use, once the broker answered
            publisher = itop.KafkaPublisher(settings.bootstrap, embedded=settings.embedded)
        result = itop.sync_once(client, _CountingPublisher(publisher, bar), store, reference, tz=tz,
                                page_size=args.page_size, overlap=overlap, since=since, max_backdate=max_backdate)
        if not args.no_writeback:  # after the commands are published: its failures never hold them back
            itop.writeback_into(result, client, engine, tz=tz, sla_field=args.sla_field, titles=titles)
        return result

    structlog.get_logger("slaledger").info("itop sync starting", settings=settings.public(), endpoint=client.endpoint,
                                           every=args.every, page_size=args.page_size)
    try:
        if args.once:
            try:
                result = itop.run_once(sync, attempts=args.retries)
            except itop.ItopError as exc:  # a broker or database failure is described by main()
                raise CommandFailed(f"itop sync failed: {exc.message}") from None
            print(json.dumps(result.as_dict(), ensure_ascii=False) if args.json else result.summary())
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        itop.run_forever(sync, every=args.every, stop=stop)
        return 0
    finally:
        bar.close()
        if publisher is not None:
            publisher.close()


class _CountingPublisher:
    """A publisher whose every command advances the progress bar."""

    def __init__(self, publisher: Publisher, bar: Any) -> None:
        self.publisher, self.bar = publisher, bar

    def send(self, command: Command) -> None:
        self.publisher.send(command)
        self.bar.update()

    def dead_letter(self, command: Command, reason: str, ref: str) -> None:
        self.publisher.dead_letter(command, reason, ref)

    def flush(self) -> None:
        self.publisher.flush()
