"""``slaledger audit replay`` (the dispute file) and ``slaledger audit verify`` (the SQL
projection against a fresh replay). The other ``audit`` commands: the keys, heads and
proofs are ``evidence_cli``, ``what-if`` is ``whatif_cli``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .cli_common import (
    UsageError,
    command_settings,
    connection_options,
    counted,
    instant,
    log_progress,
    reach_broker,
)
from .logs import configure_logging
from .output import output_file
from .settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from projections.audit.sources import LogRecord


def add_parsers(commands: Any) -> Any:
    """``audit replay`` and ``audit verify``; returns the ``audit`` commands (the evidence and
    what-if commands add theirs)."""
    audit = commands.add_parser("audit", help="audit replay and consistency checks")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    replay = audit_commands.add_parser("replay", help="rebuild the past from the event log: the dispute file")
    replay.add_argument("--source", choices=["kafka", "archive"], default="kafka")
    connection_options(replay, broker=True, database="SQLAlchemy URL of the archive")
    replay.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    replay.add_argument("--ticket", help="one ticket")
    replay.add_argument("--member", help="one member's tickets")
    replay.add_argument("--from", dest="filed_from", type=instant, help="filed at or after (ISO 8601)")
    replay.add_argument("--to", dest="filed_to", type=instant, help="filed before (ISO 8601)")
    replay.add_argument("--as-of", type=instant, help="what the system knew at that moment (ISO 8601)")
    replay.add_argument("--format", choices=["json", "md", "html", "pdf"], default="json")
    replay.add_argument("--output", "-o", type=output_file, help="file to write (default: stdout; required for pdf)")
    replay.add_argument("--head", type=int, help="--ticket: prove the events against this signed head (default: "
                                                 "the latest; signed now with the operator's key if it lacks some)")
    replay.add_argument("--resend-window", type=_resend_window, default=None, metavar="RECORDS",
                        help="--source kafka without --database: how many records of a partition back a later "
                             "copy of an event is recognised as a re-send (default 20000)")
    replay.set_defaults(handler=cmd_audit_replay)
    verify = audit_commands.add_parser("verify", help="compare the SQL projection with a fresh replay")
    verify.add_argument("--source", choices=["kafka", "archive"], default="archive")
    connection_options(verify, broker=True, database="SQLAlchemy URL")
    verify.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    verify.add_argument("--json", action="store_true", help="one JSON document instead of text")
    verify.set_defaults(handler=cmd_audit_verify)
    return audit_commands


def _audit_records(settings: Settings, source: str, engine: Engine | None,
                   ticket: str | None = None) -> Iterator[LogRecord]:
    from projections.audit.kafka_source import kafka_records
    from projections.audit.sources import archive_records

    if source == "archive":  # one ticket: only its rows, checked against the Merkle tree
        assert engine is not None
        return archive_records(engine, ticket=ticket)
    return kafka_records(settings.bootstrap)


def _resend_window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of records (1 or more)")
    return value


def cmd_audit_replay(args: argparse.Namespace) -> int:
    from projections.audit.dispute_file import dispute_file, stable_json
    from projections.audit.replay import Filters, replay
    from projections.report import to_html, to_markdown, to_pdf

    from .bootstrap import engine_for

    if args.format == "pdf" and not args.output:
        raise UsageError("--format pdf needs --output FILE")
    settings = command_settings(args)
    configure_logging(settings.log_format, "warning")
    if args.source == "kafka":
        reach_broker(settings)
    engine = engine_for(settings, existing=True) if (args.source == "archive" or settings.database_url) else None
    filters = Filters(args.ticket, args.member, args.filed_from, args.filed_to, args.as_of)
    from .bootstrap import evidence_options

    try:  # the head asked for, the operator's key (HeadError: unreadable or unknown)
        evidence = evidence_options(settings, engine, args.head)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with log_progress(settings, args.source, engine, "Relecture") as bar:
        records = counted(bar, _audit_records(settings, args.source, engine, args.ticket))
        window = {"resend_window": args.resend_window} if args.resend_window else {}
        result = replay(records, settings.policy(), filters, source=args.source, engine=engine,
                        timelines=bool(args.ticket or args.member), summarize_closed=True, **evidence, **window)
    doc = dispute_file(result)
    renderers: dict[str, Callable[[dict[str, Any]], str | bytes]] = {
        "json": stable_json, "md": to_markdown, "html": to_html, "pdf": to_pdf}
    rendered = renderers[args.format](doc)
    if args.output:
        with open(args.output, "wb") as out:
            out.write(rendered if isinstance(rendered, bytes) else rendered.encode())
    else:
        sys.stdout.write(rendered if isinstance(rendered, str) else rendered.decode())
    if not result.ok:
        print(f"slaledger: integrity check failed: {len(result.findings)} finding(s)", file=sys.stderr)
        return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from projections.audit.replay import verify_projection

    from .bootstrap import engine_for

    settings = command_settings(args)
    configure_logging(settings.log_format, "warning")
    if args.source == "kafka":
        reach_broker(settings)
    engine = engine_for(settings, existing=True)
    with log_progress(settings, args.source, engine, "Vérification") as bar:
        records = counted(bar, _audit_records(settings, args.source, engine))
        differences = verify_projection(engine, records, settings.policy(), source=args.source)
    if args.json:
        print(json.dumps({"source": args.source, "agree": not differences, "differences": differences},
                         ensure_ascii=False, indent=2))
        return 1 if differences else 0
    for line in differences:
        print(line)
    print(f"{len(differences)} différence(s) entre la projection et le journal" if differences
          else "la projection et la relecture du journal concordent")
    return 1 if differences else 0
