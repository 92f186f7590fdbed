"""The ``slaledger`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import structlog

from sla import french
from sla.catalogue import UnknownName
from sla.clock import Clock, evaluate
from sla.events import CHANNELS, KINDS, EventDecodeError, EventType, new_event, parse_instant
from sla.explain import explanation, rule_text
from sla.policy import Policy, PolicyError
from sla.ticket import Command, fold

from .failures import CommandFailed, describe
from .logs import configure_logging
from .output import output_file
from .settings import Settings, load_policy

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from projections.audit.sources import LogRecord
    from slaledger.itop.sync import Publisher

T = TypeVar("T")
MIN_DEV_TOKEN = 16  # SLALEDGER_DEV_TOKEN: shorter is guessable


class UsageError(Exception):
    """Invalid input on the command line: reported on one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _instant(value: str) -> datetime:
    try:
        return parse_instant(value, "date")
    except EventDecodeError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("date: ")) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slaledger")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slaledger", description="Event-sourced ticketing and SLA monitor.")
    parser.add_argument("--version", action="version", version=f"slaledger {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sla = commands.add_parser("sla", help="SLA rules and deadlines")
    sla_commands = sla.add_subparsers(dest="sla_command", required=True, parser_class=_Parser)
    explain = sla_commands.add_parser("explain", help="deadline of every SLA that applies to a request")
    explain.add_argument("--kind", required=True, choices=KINDS)
    explain.add_argument("--channel", required=True, choices=CHANNELS)
    explain.add_argument("--filed-at", required=True, type=_instant, help="ISO 8601 with offset")
    explain.add_argument("--elements-complete-at", type=_instant, help="go-live: all elements supplied")
    explain.add_argument("--acknowledged-at", type=_instant, help="incident: when it was taken into account")
    explain.add_argument("--product", default="parapheur",
                         help="product: slug, name or alias of the policy's catalogue (some are excluded from the SLA)")
    explain.add_argument("--policy", help="policy file (TOML); the convention's policy by default")
    explain.add_argument("--json", action="store_true", help="one JSON object on stdout")
    explain.set_defaults(handler=cmd_sla_explain)

    policy = commands.add_parser("policy", help="write, compare and check policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    pin = policy_commands.add_parser(
        "holidays", help="print a version's non_working_days table (French public holidays, from the holidays "
                         "package), to paste into a new policy version")
    pin.add_argument("--from", dest="first", type=int, required=True, help="first year covered")
    pin.add_argument("--to", dest="last", type=int, required=True, help="last year covered")
    pin.add_argument("--whit-monday", choices=["holiday", "working"], default="holiday",
                     help="Whit Monday as the law lists it (holiday, default) or worked as the journée de "
                          "solidarité (working)")
    pin.set_defaults(handler=cmd_policy_holidays)

    topics = commands.add_parser("topics", help="Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True, parser_class=_Parser)
    create = topic_commands.add_parser("create", help="create every topic with its partitions and config")
    create.add_argument("--broker", help="kafka://host:port (env SLALEDGER_BROKER_URL)")
    create.add_argument("--partitions", type=int, help="partitions of the ticket topics (env SLALEDGER_PARTITIONS)")
    create.add_argument("--acls", action="store_true",
                        help="also make each principal's ACLs exactly those of streams/kafka_acls.py (as the "
                             "brokers' super user, on a cluster with an authorizer)")
    create.set_defaults(handler=cmd_topics_create)

    kafka = commands.add_parser("kafka", help="Apache Kafka's TLS")
    kafka_commands = kafka.add_subparsers(dest="kafka_command", required=True, parser_class=_Parser)
    certs = kafka_commands.add_parser("certs", help="write a private CA (ca.pem) and the brokers' key and "
                                                    "certificate (broker.pem) for docker-compose.yml")
    certs.add_argument("--out", type=Path, required=True, help="directory (e.g. secrets/kafka)")
    certs.add_argument("--host", action="append", dest="hosts",
                       help="a name or address the brokers answer on (repeat; default: kafka, kafka-1, kafka-2, "
                            "kafka-3, localhost)")
    certs.add_argument("--days", type=int, default=825, help="validity (default 825)")
    certs.set_defaults(handler=cmd_kafka_certs)

    worker = commands.add_parser("worker", help="run one stream worker against any Kafka")
    _worker_flags(worker)
    worker.add_argument("--broker", help="kafka://host:port (env SLALEDGER_BROKER_URL)")
    worker.set_defaults(handler=cmd_worker)

    project = commands.add_parser("project", help="project the events topic into SQL and serve /metrics")
    project.add_argument("--broker", help="kafka://host:port (env SLALEDGER_BROKER_URL)")
    project.add_argument("--database", dest="database_url", help="SQLAlchemy URL (env SLALEDGER_DATABASE_URL)")
    project.add_argument("--data-dir", help="where the default SQLite file lives")
    project.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    project.add_argument("--metrics-port", type=int, help="port of /metrics (default 9108; 0: none)")
    project.add_argument("--rebuild", action="store_true", help="replay from offset 0 into shadow tables and swap")
    project.add_argument("--once", action="store_true", help="stop at the end of the topic instead of following")
    project.set_defaults(handler=cmd_project)

    audit = commands.add_parser("audit", help="audit replay and consistency checks")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    replay = audit_commands.add_parser("replay", help="rebuild the past from the event log: the dispute file")
    replay.add_argument("--source", choices=["kafka", "archive"], default="kafka")
    replay.add_argument("--broker", help="kafka://host:port (env SLALEDGER_BROKER_URL)")
    replay.add_argument("--database", dest="database_url", help="SQLAlchemy URL of the archive")
    replay.add_argument("--data-dir", help="where the default SQLite file lives")
    replay.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    replay.add_argument("--ticket", help="one ticket")
    replay.add_argument("--member", help="one member's tickets")
    replay.add_argument("--from", dest="filed_from", type=_instant, help="filed at or after (ISO 8601)")
    replay.add_argument("--to", dest="filed_to", type=_instant, help="filed before (ISO 8601)")
    replay.add_argument("--as-of", type=_instant, help="what the system knew at that moment (ISO 8601)")
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
    verify.add_argument("--broker", help="kafka://host:port (env SLALEDGER_BROKER_URL)")
    verify.add_argument("--database", dest="database_url", help="SQLAlchemy URL")
    verify.add_argument("--data-dir", help="where the default SQLite file lives")
    verify.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    verify.add_argument("--json", action="store_true", help="one JSON document instead of text")
    verify.set_defaults(handler=cmd_audit_verify)

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    token_create = token_commands.add_parser("create", help="create a token; its secret is printed once")
    token_create.add_argument("--role", required=True, choices=["agent", "referent", "auditor", "admin", "metrics"],
                              help="metrics: reads /metrics only (Prometheus)")
    token_create.add_argument("--member", help="the member of a referent")
    token_create.add_argument("--label", help="who holds it (recorded as the actor of their events)")
    provided = token_create.add_mutually_exclusive_group()
    provided.add_argument("--secret-env", metavar="VAR",
                          help="register the secret held in environment variable VAR instead of a new one "
                               "(idempotent)")
    provided.add_argument("--secret-file", metavar="FILE",
                          help="register the secret held in FILE (a Compose secret: never in an environment; "
                               "idempotent: a deployment provisions Prometheus' token this way)")
    token_revoke = token_commands.add_parser("revoke", help="revoke a token (by id or secret)")
    token_revoke.add_argument("token")
    token_list = token_commands.add_parser("list", help="every token: id, role, member, label, created, revoked "
                                                        "(never a secret)")
    for sub in (token_create, token_list):
        sub.add_argument("--json", action="store_true", help="one JSON document instead of text")
    token_list.set_defaults(handler=cmd_token_list)
    for sub in (token_create, token_revoke, token_list):
        sub.add_argument("--database", dest="database_url", help="SQLAlchemy URL (env SLALEDGER_DATABASE_URL)")
        sub.add_argument("--data-dir", help="where the default SQLite file lives")
    token_create.set_defaults(handler=cmd_token_create)
    token_revoke.set_defaults(handler=cmd_token_revoke)

    itop = commands.add_parser("itop", help="iTop connector (members file on the iTop portal)")
    itop_commands = itop.add_subparsers(dest="itop_command", required=True, parser_class=_Parser)
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
    itop_sync.add_argument("--broker", help="kafka://host:port (env SLALEDGER_BROKER_URL)")
    itop_sync.add_argument("--database", dest="database_url", help="SQLAlchemy URL of the checkpoint")
    itop_sync.add_argument("--data-dir", help="where the default SQLite file lives")
    itop_sync.add_argument("--json", action="store_true", help="--once: what the pass did as one JSON object")
    itop_sync.add_argument("--no-writeback", action="store_true",
                           help="do not write the SLA state back to the iTop tickets' private log")
    itop_sync.add_argument("--sla-field", default=os.environ.get("SLALEDGER_ITOP_SLA_FIELD") or None, metavar="CODE",
                           help="iTop attribute set to the next contractual deadline (env SLALEDGER_ITOP_SLA_FIELD)")
    itop_sync.set_defaults(handler=cmd_itop_sync)

    dev = commands.add_parser("dev", help="embedded broker + worker + API on one port")
    _worker_flags(dev)
    dev.add_argument("--broker-port", type=int, help="port of the embedded broker (default: a free one)")
    dev.add_argument("--broker", help="use this running broker (kafka://host:port) instead of an embedded one; "
                                      "it keeps the log, so nothing is restored into it (a Tansu broker "
                                      "also needs SLALEDGER_EMBEDDED=1)")
    dev.add_argument("--kafka", action="store_true",
                     help="run a local single-node Apache Kafka (needs Java; jars fetched once by Maven) with its "
                          "data under DATA_DIR/kafka: the log survives a restart; on its first start the "
                          "archive is restored into it, as into the embedded broker")
    dev.add_argument("--demo", action="store_true", default=None, help="feed a realistic synthetic stream")
    dev.set_defaults(handler=cmd_dev)

    from .report_cli import add_parsers as add_report_parsers  # report monthly|schedule (issue #16)
    add_report_parsers(commands)
    from .evidence_cli import add_parsers as add_evidence_parsers  # keys, heads, proofs (#16)
    add_evidence_parsers(commands, audit_commands)
    from .db_cli import add_parsers as add_db_parsers  # db migrate: roles and grants (#25)
    add_db_parsers(commands)
    from .whatif_cli import add_parsers as add_whatif_parsers  # audit what-if, policy diff|check (#29)
    add_whatif_parsers(audit_commands, policy_commands)
    from .witness_cli import add_parsers as add_witness_parsers  # witness serve|vkey (#26)
    add_witness_parsers(commands)
    return parser


def _worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, dest="web_port", help="HTTP port (env SLALEDGER_WEB_PORT, default 8080)")
    parser.add_argument("--host", dest="web_host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--data-dir", help="local state directory (env SLALEDGER_DATA_DIR, default ./data)")
    parser.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    parser.add_argument("--partitions", type=int, help="partitions of the ticket topics")
    parser.add_argument("--timer-interval", type=float, help="seconds between deadline checks (default 0.5)")


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
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


def _reach_broker(settings: Settings) -> None:
    """Fail at start, within ``broker_timeout`` seconds, when the broker is not there."""
    from streams.kafka_tools import wait_for_broker

    wait_for_broker(settings.bootstrap, settings.broker_timeout)


def _progress_bar(desc: str, unit: str, total: int | None = None, *, file: TextIO | None = None,
                  disable: bool | None = None) -> Any:
    """A tqdm bar on stderr, only when stderr is a terminal: logs and pipes stay clean."""
    from tqdm import tqdm

    stream = file or sys.stderr
    return tqdm(total=total or None, desc=desc, unit=f" {unit}", file=stream, dynamic_ncols=True,
                disable=not stream.isatty() if disable is None else disable)


def cmd_topics_create(args: argparse.Namespace) -> int:
    from streams.topics import create_topics

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    _reach_broker(settings)
    created = create_topics(settings.bootstrap, settings.partitions, replication=settings.replication_factor)
    print(f"{len(created)} topic(s) created" + (f": {', '.join(created)}" if created else ""))
    if args.acls:
        from streams.kafka_acls import apply_acls

        granted, revoked = apply_acls(settings.bootstrap)
        print(f"ACLs: {granted} created, {revoked} deleted")
    return 0


def cmd_kafka_certs(args: argparse.Namespace) -> int:
    from streams.kafka_certs import write_certificates

    if args.days < 1:
        raise UsageError("--days: at least 1")
    hosts = args.hosts or ["kafka", "kafka-1", "kafka-2", "kafka-3", "localhost"]
    ca, broker = write_certificates(args.out, hosts, args.days)
    print(f"{ca} (give it to every client), {broker} (the brokers' key: keep it secret) for {', '.join(hosts)}")
    return 0


def _restart_process() -> None:
    """A worker whose table recovery stalled starts again, as a fresh process with the same
    arguments and pid (what a crash and a supervisor's restart would do, without waiting
    for either): the group, the changelog and the stores all tolerate a stop at any point."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _run_worker(settings: Settings) -> int:
    import faust

    from .bootstrap import build_worker, engine_for

    settings.policy()  # fail fast on a bad policy file
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_format, settings.log_level)
    # The token database is first used by a request and Faust retries an absent broker
    # forever: both are checked here, so that a worker that cannot work stops at start.
    if settings.database_url:
        with engine_for(settings).connect():
            pass
    _reach_broker(settings)
    structlog.get_logger("slaledger").info("worker starting", settings=settings.public())
    try:
        pipeline = build_worker(settings, on_recovery_stalled=_restart_process)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True,
                          redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from .bootstrap import serve_projector

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    if not args.rebuild:
        return serve_projector(settings, follow=not args.once)
    _reach_broker(settings)  # before the bar counts the topic
    with _progress(settings, "kafka", None, "Reconstruction") as bar:
        return serve_projector(settings, rebuild=True, progress=bar.update)


def _counted(bar: Any, records: Iterable[T]) -> Iterator[T]:
    """``records`` as they go, each one advancing ``bar``."""
    for record in records:
        yield record
        bar.update()


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
    settings = _settings(args)
    configure_logging(settings.log_format, "warning")
    if args.source == "kafka":
        _reach_broker(settings)
    engine = engine_for(settings, existing=True) if (args.source == "archive" or settings.database_url) else None
    filters = Filters(args.ticket, args.member, args.filed_from, args.filed_to, args.as_of)
    from .bootstrap import evidence_options

    try:  # the head asked for, the operator's key (HeadError: unreadable or unknown)
        evidence = evidence_options(settings, engine, args.head)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with _progress(settings, args.source, engine, "Relecture") as bar:
        records = _counted(bar, _audit_records(settings, args.source, engine, args.ticket))
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

    settings = _settings(args)
    configure_logging(settings.log_format, "warning")
    if args.source == "kafka":
        _reach_broker(settings)
    engine = engine_for(settings, existing=True)
    with _progress(settings, args.source, engine, "Vérification") as bar:
        records = _counted(bar, _audit_records(settings, args.source, engine))
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


def _progress(settings: Settings, source: str, engine: Engine | None, desc: str) -> Any:
    """A bar sized by the log (the topic's end offsets or the archive's row count), on a
    terminal only: off one, the log is not even counted."""
    if not sys.stderr.isatty():
        return _progress_bar(desc, "événements", disable=True)
    if source == "archive" and engine is not None:
        from sqlalchemy import func, select

        from projections.models import ARCHIVE

        with engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(ARCHIVE)) or 0
    else:
        from streams.kafka_tools import end_offsets_total
        from streams.topics import EVENTS

        total = end_offsets_total(settings.bootstrap, EVENTS)
    return _progress_bar(desc, "événements", total)


def cmd_token_create(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.tokens import TokenError, create_token, ensure_token

    from .bootstrap import engine_for

    engine = engine_for(_settings(args), existing=True)
    create_schema(engine)
    if args.secret_env or args.secret_file:
        where = args.secret_env or args.secret_file
        if args.secret_env:
            secret = os.environ.get(args.secret_env, "")
        else:
            secret = Path(args.secret_file).read_text(encoding="utf-8").strip()  # OSError: one line in main()
        if len(secret) < 24:
            raise UsageError(f"{where} must hold a secret of at least 24 characters")
        label = args.label or (args.secret_env or Path(args.secret_file).name)
        try:
            created = ensure_token(engine, secret, args.role, label, args.member)
        except TokenError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            print(json.dumps({"registered": created}))
        else:
            print("token registered" if created else "token already registered")
        return 0
    try:
        token_id, secret = create_token(engine, args.role, args.member, args.label)
    except TokenError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps({"token_id": token_id, "secret": secret, "role": args.role, "member": args.member}))
    else:
        print(f"token id: {token_id}\nsecret (shown once): {secret}")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.tokens import list_tokens

    from .bootstrap import engine_for

    engine = engine_for(_settings(args), existing=True)
    create_schema(engine)
    tokens = list_tokens(engine)
    if args.json:
        print(json.dumps(tokens, ensure_ascii=False, indent=2))
        return 0
    for t in tokens:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else "live"
        member = f" member={t['member']}" if t["member"] else ""
        print(f"{t['token_id']}  {t['role']:<8} {t['label']}{member}  created {t['created_at']}  {state}")
    if not tokens:
        print("no token")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.tokens import revoke_token

    from .bootstrap import engine_for

    engine = engine_for(_settings(args), existing=True)
    create_schema(engine)
    if not revoke_token(engine, args.token):
        raise UsageError("no live token with that id or secret")
    print("token revoked")
    return 0


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

    settings = _settings(args, itop_url=args.itop_url, itop_user=args.itop_user, itop_password=args.itop_password,
                         itop_token=args.itop_token, itop_timezone=args.itop_timezone)
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
    _reach_broker(settings)  # a broker down later is retried; one absent at start is a mistake
    store = itop.CheckpointStore(engine, client.endpoint)
    overlap = timedelta(seconds=args.overlap)
    # the worker refuses facts dated beyond this: the connector reports them instead of sending
    max_backdate = settings.policy().versions[-1].connector_max_backdate
    titles = {d.name: d.title for v in settings.policy().versions for d in v.slas}  # the latest title wins
    publisher: itop.KafkaPublisher | None = None
    bar = _progress_bar("iTop", "commandes")

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


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_port_free(settings.web_host, settings.web_port)
    return _run_worker(settings)


def cmd_dev(args: argparse.Namespace) -> int:
    """Embedded broker, archive restore, worker (API + /metrics) and projector in one process."""
    import dataclasses
    import threading

    from prometheus_client import REGISTRY

    from projections.migrate import create_schema
    from projections.restore import LogNotArchived, restore_into_empty_log
    from projections.tokens import TokenError, ensure_token
    from streams.embedded import EmbeddedBroker
    from streams.kafka_acls import ADMIN
    from streams.kafka_broker import BrokerError, KafkaCluster
    from streams.topics import create_topics

    from .bootstrap import engine_for, start_projector_thread

    given_token = os.environ.get("SLALEDGER_DEV_TOKEN")
    if given_token is not None and len(given_token) < MIN_DEV_TOKEN:
        raise UsageError(f"SLALEDGER_DEV_TOKEN: {len(given_token)} characters, at least {MIN_DEV_TOKEN} "
                         "(whoever guesses it acts as an agent)")
    base = _settings(args, log_format="console")
    configure_logging(base.log_format, base.log_level)
    _check_port_free(base.web_host, base.web_port)  # before anything is started or printed
    Path(base.data_dir).mkdir(parents=True, exist_ok=True)
    base.policy()  # a bad policy file stops here, before anything starts
    if args.kafka and args.broker:
        raise UsageError("--kafka and --broker are exclusive: --kafka runs its own Apache Kafka")
    engine = engine_for(base)
    create_schema(engine)  # and so does a database that refuses
    if args.broker:
        _reach_broker(base)
    # An embedded broker is empty at each start (the archive is restored into it); a broker
    # given with --broker outlives this process and keeps the log itself, and so does the
    # Apache Kafka of --kafka (its data directory is kept under DATA_DIR/kafka) once its first
    # start has received the archive.
    broker: EmbeddedBroker | KafkaCluster | None = None
    if args.kafka:
        broker = KafkaCluster(Path(base.data_dir) / "kafka", 1, port=args.broker_port)
    elif not args.broker:
        broker = EmbeddedBroker(port=args.broker_port, log_path=Path(base.data_dir) / "broker.log")
    if broker is not None:
        try:
            broker.start()
        except BrokerError as exc:
            raise UsageError(str(exc)) from None
    stop = threading.Event()
    projector: threading.Thread | None = None
    try:
        own: dict[str, object] = {"broker_url": broker.url, "embedded": broker.embedded} if broker else {}
        if isinstance(broker, KafkaCluster):  # secured like production; one process in every role: the admin
            own.update(dataclasses.asdict(broker.security(ADMIN)))
        from .evidence_cli import dev_signing_key
        from .members import EXAMPLE_FILE

        # dev names the example members directory unless told otherwise (filings are checked against it)
        settings = _settings(args, log_format="console", **own, session_timeout=4.0, heartbeat_interval=0.5,
                             rebalance_timeout=2.0, database_url=base.database, **dev_signing_key(base),
                             members_file=base.members_file or (str(EXAMPLE_FILE) if EXAMPLE_FILE.is_file() else ""))
        create_topics(settings.bootstrap, settings.partitions)
        if isinstance(broker, KafkaCluster):  # the principals' ACLs, for a worker started beside it
            from streams.kafka_acls import apply_acls

            apply_acls(settings.bootstrap)
        restored = 0
        if broker is not None:  # a log of its own: empty (restored like the embedded one) or the archive's
            try:
                restored = restore_into_empty_log(engine, settings.bootstrap)
            except LogNotArchived as exc:
                raise UsageError(f"{exc}: the data directory {base.data_dir} was used by the embedded broker "
                                 f"after this Apache Kafka; move {Path(base.data_dir) / 'kafka'} aside and "
                                 "start again: the archive is then restored into a fresh Kafka") from None
        dev_token = given_token or _dev_token(engine, Path(base.data_dir) / DEV_TOKEN_FILE)
        try:
            ensure_token(engine, dev_token, "agent", "dev")
        except TokenError as exc:
            raise UsageError(f"SLALEDGER_DEV_TOKEN: {exc}") from None
        projector = start_projector_thread(settings, engine, settings.policy(), stop, REGISTRY)
        print(f"slaledger dev: http://{settings.web_host}:{settings.web_port}/  "
              f"(web view /, API /api/tickets, metrics /metrics, broker {settings.bootstrap}, "
              f"database {settings.database}, {restored} archived events restored); Ctrl-C stops\n"
              f"agent token: {dev_token}   (curl -H 'Authorization: Bearer {dev_token}' …)", flush=True)
        return _run_worker(settings)
    finally:
        stop.set()
        if projector is not None:
            projector.join(timeout=10)
        if broker is not None:
            broker.stop()


DEV_TOKEN_FILE = "dev-token"


def _dev_token(engine: Engine, path: Path) -> str:
    """``slaledger dev``'s agent token: the one kept in the data directory (mode 0600) while it
    is live, so that a restart neither leaves another live token behind nor breaks a newcomer's
    ``TOKEN=$(cat data/dev-token)``; a new one when absent or revoked."""
    import secrets

    from projections.tokens import token_is_live

    try:  # kept only if nobody else may read it, and still a live agent token
        kept = path.read_text(encoding="utf-8").strip() if path.stat().st_mode & 0o077 == 0 else ""
    except (OSError, UnicodeDecodeError):
        kept = ""
    if kept and token_is_live(engine, kept, role="agent"):
        return kept
    secret = "slt_dev_" + secrets.token_urlsafe(16)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    return secret


def _check_port_free(host: str, port: int) -> None:
    """A port another process listens on is one line before anything starts (not a URL and a
    token printed as if started, then a traceback)."""
    import socket

    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"port {port} on {host} is taken ({exc.strerror}): another `slaledger dev` or "
                             "worker? Stop it, or choose another port with --port") from None


def explain_request(args: argparse.Namespace, policy: Policy) -> list[Clock]:
    """Build the events of a hypothetical request and evaluate its clocks."""
    filed_at: datetime = args.filed_at
    ticket_id = "explain"
    product = args.product
    if policy.products:  # judged as a filing would be: the catalogue's slug (« Local Trust MPE » is excluded)
        try:
            product = policy.products.resolve(product)
        except UnknownName as exc:
            raise UsageError(f"--product: {exc.message}") from None
    events = [
        new_event(
            EventType.TICKET_FILED,
            ticket_id,
            occurred_at=filed_at,
            recorded_at=filed_at,
            actor="cli",
            payload={"kind": args.kind, "channel": args.channel, "product": product,
                     "member": "explain", "subject": "explain"},
        )
    ]
    later = [(args.acknowledged_at, EventType.ACKNOWLEDGED, {}),
             (args.elements_complete_at, EventType.CUSTOMER_RESPONDED, {"elements_complete": True})]
    for at, event_type, payload in later:
        if at is None:
            continue
        if at < filed_at:
            raise UsageError(f"{event_type.replace('_', ' ')} time {at.isoformat()} precedes the filing")
        events.append(new_event(event_type, ticket_id, occurred_at=at, recorded_at=at, actor="cli",
                                payload=payload, event_id=uuid.uuid4()))
    now = max(e.occurred_at for e in events)
    return evaluate(fold(events), policy, now)


def cmd_policy_holidays(args: argparse.Namespace) -> int:
    """The only place the ``holidays`` package is read: its output is committed in the policy."""
    import holidays

    from sla.calendar import whit_monday

    if not 1970 <= args.first <= args.last <= 2199:
        raise UsageError("--from and --to: years between 1970 and 2199, --from first")
    days = holidays.country_holidays("FR", years=range(args.first, args.last + 1), language="fr")
    lines = [
        "[versions.non_working_days]",
        f"# French public holidays (metropolitan), generated with holidays {holidays.__version__} by",
        f"# `slaledger policy holidays --from {args.first} --to {args.last} --whit-monday {args.whit_monday}`:",
        "# pinned here, so that no library upgrade changes a verdict under this version.",
        f"years = [{args.first}, {args.last}]",
        f'whit_monday = "{args.whit_monday}"',
        "[versions.non_working_days.dates]",
    ]
    for day, name in sorted(days.items()):
        if args.whit_monday == "working" and day == whit_monday(day.year):
            continue
        lines.append(f'"{day.isoformat()}" = "{name}"')
    print("\n".join(lines))
    return 0


def cmd_sla_explain(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    version = policy.version_for(args.filed_at)
    found = explain_request(args, policy)
    targets = []
    for clock in found:
        deadline = clock.deadline.astimezone(clock.policy_version.tz).isoformat() if clock.deadline else None
        targets.append({
            "sla": clock.sla,
            "title": clock.definition.title,
            "contractual": clock.definition.contractual,
            "status": str(clock.status),
            "deadline": deadline,
            "rule": rule_text(clock.definition),
            "explanation": explanation(clock, live=False),
        })
    if args.json:
        filed_at = args.filed_at.astimezone(version.tz).isoformat()
        doc = {"filed_at": filed_at, "policy_version": version.id, "targets": targets}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(f"Politique {version.id}")
        for clock, t in zip(found, targets, strict=True):
            due = french.instant(clock.deadline, version.tz) if clock.deadline else "—"
            status = str(clock.status)
            print(f"- {french.sla_title(clock.definition.title, clock.definition.contractual)} : échéance {due} "
                  f"({french.VERDICT.get(status, status)})\n  {t['explanation']}")
    return 0


def _stdout_closed() -> bool:
    """Whether stdout's reader went away (``slaledger … --json | head -c 400``): a pipe whose
    read end is closed polls as an error. Then stdout goes to /dev/null, so that the
    interpreter's last flush at exit prints nothing either."""
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        broken = any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):  # no real stdout (a test's capture)
        return False
    if broken:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return broken


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever it fails on that the operator can fix (input, a broker or a
    database that does not answer, a path: ``slaledger.failures``) ends as one line on
    stderr and a non-zero exit code; any other exception is a bug and keeps its traceback.
    Ctrl-C is how an operator stops a long-running command: one line, exit code 130 (the
    shell's for SIGINT), no traceback."""
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)  # inside: a Ctrl-C while it imports is one line too
        return int(args.handler(args))
    except (UsageError, PolicyError) as exc:
        print(f"slaledger: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slaledger: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            return 128 + signal.SIGPIPE  # `… | head`: quiet, as a process that SIGPIPE ends
        described = describe(exc, getattr(args, "settings", None))
        if described is None:
            raise
        line, code = described
        print(f"slaledger: error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
