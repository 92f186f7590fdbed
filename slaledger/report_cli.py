"""``slaledger report``: the members' monthly statements (issue #16).

``report monthly`` writes one statement (PDF, HTML, CSV or JSON) and with ``--send`` e-mails
its PDF to the member's referent; ``report schedule`` runs in the ``report`` Compose profile
and, on the 1st of each month from 06:00 (policy time zone), sends every member of the
directory the previous month's statement, once: what was sent is recorded in SQL
(``projections.deliveries``), so a restart sends only what is missing.

Kept apart from ``slaledger.cli`` (which registers it with ``add_parsers``). Bad input is
reported through ``parser.error`` (the CLI's one-line usage error) and SMTP failures as
``OSError``, both of which ``cli.main`` turns into ``slaledger: error: …``.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import make_msgid
from pathlib import Path
from typing import Any, NoReturn

import structlog
from sqlalchemy import Engine

from projections import monthly
from projections.deliveries import record_sent, was_sent
from projections.monthly import Month, MonthError
from sla import french
from sla.policy import Policy

from .cli_common import DATABASE_HELP, connection_options, instant
from .logs import configure_logging
from .mail import MailError, SmtpConfig, send, statement_message
from .members import EXAMPLE_FILE, Member, MembersError, load_members
from .output import output_file  # checked when parsed, before the statement is built
from .settings import Settings

log = structlog.get_logger(__name__)
FORMATS = ("pdf", "html", "csv", "json")
SEND_HOUR = 6  # local time on the 1st
IDLE_WAKE = 600.0  # seconds between two looks at the clock (and heartbeats)


def add_parsers(commands: Any) -> None:
    """Register ``report monthly`` and ``report schedule`` on the CLI's subcommands."""
    report = commands.add_parser("report", help="members' monthly statements (PDF, HTML, CSV, JSON; e-mail)")
    sub = report.add_subparsers(dest="report_command", required=True, parser_class=type(report))

    one = sub.add_parser("monthly", help="one member's statement for one month")
    one.add_argument("--member", required=True, help="member id (as in the tickets and the members file)")
    one.add_argument("--month", required=True, type=_month, help="YYYY-MM, in the policy's time zone")
    one.add_argument("--format", choices=FORMATS,
                     help="default: the --output file's extension (pdf otherwise), csv on stdout")
    one.add_argument("--output", "-o", type=output_file, help="file to write (default: stdout; required for pdf)")
    one.add_argument("--send", action="store_true", help="e-mail the PDF to the member's referent (SMTP settings "
                                                         "from SLALEDGER_SMTP_*)")
    one.set_defaults(handler=cmd_report_monthly, parser=one)

    schedule = sub.add_parser("schedule", help="send every member last month's statement on the 1st at 06:00 "
                                               "(long-running; what was sent is recorded, never sent twice)")
    schedule.add_argument("--once", action="store_true", help="one pass, then exit (1 if a sending failed)")
    schedule.add_argument("--now", type=instant, help="with --once: the pass as if run at this instant (ISO 8601)")
    schedule.add_argument("--heartbeat", help="file touched at each wake-up (a container health check reads it)")
    schedule.set_defaults(handler=cmd_report_schedule, parser=schedule)

    for parser in (one, schedule):
        parser.add_argument("--members", dest="members_file", help="members directory, TOML "
                                                                   "(env SLALEDGER_MEMBERS_FILE)")
        connection_options(parser, database=DATABASE_HELP)
        parser.add_argument("--policy", dest="policy_file", help="policy file (TOML)")


def _month(value: str) -> Month:
    try:
        return Month.parse(value)
    except MonthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fail(args: argparse.Namespace, message: str) -> NoReturn:
    """Bad input: the CLI parser's one-line usage error (exit code 2, no traceback)."""
    parser: argparse.ArgumentParser = args.parser
    parser.error(message)


def _settings(args: argparse.Namespace) -> Settings:
    flags = {n: getattr(args, n, None) for n in ("members_file", "database_url", "data_dir", "policy_file")}
    try:
        return Settings.from_env(**flags)
    except ValueError as exc:
        _fail(args, str(exc))


def _engine(settings: Settings, *, service: bool = False) -> Engine:
    """The database; a one-off ``report monthly`` refuses a dev data directory that is not
    there (run from the wrong directory), the ``report schedule`` service creates its own,
    like the other services."""
    from projections.migrate import create_schema

    from .bootstrap import engine_for

    engine = engine_for(settings, existing=not service)
    create_schema(engine)  # the sent-statements table of a database older than it
    return engine


def _directory(settings: Settings, *, mailing: bool = False) -> dict[str, Member]:
    """The members file; without one, on the data directory of ``slaledger dev`` (it holds
    ``dev-token``), the example directory names the members as dev does (« Commune de Blois »),
    but is never a list of addresses to mail; elsewhere no directory."""
    if settings.members_file:
        return load_members(settings.members_file)
    dev_data = not settings.database_url and (Path(settings.data_dir) / "dev-token").is_file()
    if not mailing and dev_data and EXAMPLE_FILE.is_file():
        return load_members(str(EXAMPLE_FILE))
    return {}


EXAMPLE_MARK = "# slaledger: example members directory"  # the first line of infra/members.example.toml


def refuse_example_directory(path: str) -> None:
    """Statements are not mailed from the example directory (Compose mounts it while
    SLALEDGER_MEMBERS_TOML is unset): its referents are somebody else's addresses."""
    try:
        first = Path(path).read_text(encoding="utf-8").partition("\n")[0]
    except OSError:
        return  # load_members says what is wrong with the file
    if first.strip() == EXAMPLE_MARK:
        raise MembersError(f"{path} is the example members directory (infra/members.example.toml): statements "
                           "would be mailed to its example addresses; point SLALEDGER_MEMBERS_TOML (compose) or "
                           "SLALEDGER_MEMBERS_FILE at your own file")


def resolve_member(settings: Settings, engine: Engine, member_id: str, *, referent: bool) -> Member:
    """The member as the directory names it; without an entry, a member some ticket names is
    still known (its statement titled by its id) unless the statement is to be e-mailed."""
    if referent and settings.members_file:
        refuse_example_directory(settings.members_file)
    directory = _directory(settings, mailing=referent)
    if member_id in directory:
        return directory[member_id]
    where = (f"not in the members file {settings.members_file}" if settings.members_file
             else "no members file (SLALEDGER_MEMBERS_FILE)")
    if referent:
        raise MembersError(f"member {member_id!r}: {where}, so no referent to send the statement to")
    if not monthly.member_known(engine, member_id):
        raise MembersError(f"unknown member {member_id!r}: {where} and no ticket names it")
    return Member(member_id, member_id, "")


def produce(engine: Engine, policy: Policy, member: Member, month: Month, now: datetime) -> dict[str, Any]:
    """The statement of ``member`` for ``month`` as the log reads at ``now``, with the signed
    tree head at the month's end and its link to the previous month's (consistency proof)."""
    tz = policy.versions[-1].tz
    _, end = month.bounds(tz)
    head = monthly.monthly_head(engine, end)
    doc = monthly.build(engine, policy, month, member=member.id, member_name=member.name, generated_at=now,
                        head=head)
    doc["previous"] = monthly.previous_link(engine, month, tz, head)
    doc["head_uncovered"] = monthly.uncovered_by_head(engine, head, end) if head else None
    return doc


def render(doc: dict[str, Any], fmt: str) -> bytes:
    if fmt == "pdf":
        return monthly.to_pdf(doc)
    if fmt == "html":
        return monthly.to_html(doc).encode()
    if fmt == "csv":
        return monthly.to_csv(doc).encode()
    return monthly.to_json(doc).encode()


def email_body(doc: dict[str, Any]) -> str:
    """The French text of the e-mail: what the PDF holds, in a few lines."""
    lines = [
        "Bonjour,",
        "",
        f"Veuillez trouver ci-joint le relevé mensuel de conformité de {doc['member']['name']} pour "
        f"{doc['month_fr']} : engagements de service de la convention (Article 4).",
        "",
    ]
    judged = [s for s in doc["summary"] if s["counted"]]
    if not judged:
        lines.append("Aucun engagement n'a été tranché ce mois-ci.")
    for s in judged:
        rate = french.percent(s["rate_percent"])
        lines.append(f"- {s['title']} : {s['met']} respecté(s), {s['breached']} manquement(s), "
                     f"{s['retracted']} manquement(s) retiré(s), {s['excluded']} hors engagement ; "
                     f"taux de respect {rate}")
    lines += ["", f"{len(doc['breaches'])} manquement(s) ce mois-ci, détaillé(s) dans le relevé avec leur "
                  "explication."]
    head = doc.get("head")
    lines.append("Tête d'arbre signée à la fin du mois : " + (
        str(head.get("root_hash") or head.get("root") or "voir le relevé") if head
        else "aucune tête signée à cette date."))
    if head and doc.get("head_uncovered"):
        lines.append(f"Attention : cette tête ne couvre pas les {doc['head_uncovered']} dernier(s) événement(s) du "
                     "mois ; la tête suivante les couvrira.")
    lines += ["", "Ce message est envoyé automatiquement par slaledger, le suivi des engagements de service du GIP."]
    return "\n".join(lines) + "\n"


def send_statement(engine: Engine, policy: Policy, smtp: SmtpConfig, member: Member, month: Month,
                   now: datetime) -> str:
    """Produce the PDF, e-mail it to the referent, record it; returns the Message-ID. Any
    failure to reach or convince the SMTP server is an OSError naming the server."""
    doc = produce(engine, policy, member, month, now)
    pdf = monthly.to_pdf(doc)
    message_id = make_msgid("releve", domain=smtp.sender.rsplit("@", 1)[1])
    message = statement_message(
        sender=smtp.sender, recipient=member.referent,
        subject=f"{monthly.TITLE} — {member.name} — {doc['month_fr']}", body=email_body(doc), pdf=pdf,
        filename=f"releve-{member.id}-{month}.pdf", message_id=message_id, date=now)
    try:
        send(smtp, message)
    except OSError as exc:
        raise OSError(f"SMTP server {smtp.host}:{smtp.port}: {exc}") from None
    record_sent(engine, member=member.id, month=str(month), recipient=member.referent, message_id=message_id,
                pdf_sha256=hashlib.sha256(pdf).hexdigest(), sent_at=now)
    log.info("monthly statement sent", member=member.id, month=str(month), recipient=member.referent,
             message_id=message_id)
    return message_id


@dataclass
class TickResult:
    month: Month
    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return ([f"{self.month} {m}: sent" for m in self.sent]
                + [f"{self.month} {m}: already sent" for m in self.already]
                + [f"{self.month} {m}: failed: {why}" for m, why in self.failed.items()])


def schedule_tick(engine: Engine, policy: Policy, smtp: SmtpConfig, members: dict[str, Member],
                  now: datetime) -> TickResult:
    """One pass: every member whose statement for the month due at ``now`` is not recorded as
    sent gets it. A member that fails (SMTP down) is retried at the next pass, the others go on."""
    month = monthly.month_due(now, policy.versions[-1].tz, SEND_HOUR)
    result = TickResult(month)
    for member in members.values():
        if was_sent(engine, member.id, str(month)):
            result.already.append(member.id)
            continue
        try:
            send_statement(engine, policy, smtp, member, month, now)
        except OSError as exc:
            log.error("monthly statement not sent; retried at the next pass", member=member.id, month=str(month),
                      error=str(exc))
            result.failed[member.id] = str(exc)
        else:
            result.sent.append(member.id)
    return result


def run_schedule(tick: Callable[[datetime], TickResult], clock: Callable[[], datetime], stop: threading.Event,
                 tz: Any, heartbeat: Path | None = None) -> None:
    """Pass, then sleep until the next 1st at 06:00 — waking at least every 10 minutes, so a
    failed sending is retried and the heartbeat stays fresh."""
    while not stop.is_set():
        now = clock()
        tick(now)
        if heartbeat is not None:
            heartbeat.touch()
        wait = (monthly.next_run(now, tz, SEND_HOUR) - now).total_seconds()
        stop.wait(max(1.0, min(wait, IDLE_WAKE)))


def _default_format(output: str | None) -> str:
    """What ``--format`` means when not given: the output file's extension when it names a
    format (``releve.csv``), a PDF in any other file, CSV on stdout (text a terminal shows)."""
    if output is None:
        return "csv"
    suffix = Path(output).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "pdf"


def cmd_report_monthly(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log_format, "warning")
    policy = settings.policy()
    fmt = args.format or _default_format(args.output)
    if fmt == "pdf" and not args.output and not args.send:
        _fail(args, "--format pdf needs --output FILE")
    engine = _engine(settings)
    now = datetime.now(UTC)
    try:
        member = resolve_member(settings, engine, args.member, referent=args.send)
        smtp = SmtpConfig.from_settings(settings) if args.send else None
        if args.output or not args.send:
            rendered = render(produce(engine, policy, member, args.month, now), fmt)
    except (MembersError, MailError, MonthError) as exc:
        _fail(args, str(exc))
    if args.output:
        Path(args.output).write_bytes(rendered)
    elif not args.send:
        sys.stdout.write(rendered.decode())
    if smtp is not None:
        message_id = send_statement(engine, policy, smtp, member, args.month, now)
        print(f"statement {args.month} of {member.id} sent to {member.referent} ({message_id})")
    return 0


def cmd_report_schedule(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    if args.now is not None and not args.once:
        _fail(args, "--now goes with --once (a long-running schedule follows the real clock)")
    policy = settings.policy()
    try:
        smtp = SmtpConfig.from_settings(settings)
        if not settings.members_file:
            raise MembersError("SLALEDGER_MEMBERS_FILE is not set: no member to send statements to")
        refuse_example_directory(settings.members_file)
        members = load_members(settings.members_file)
    except (MembersError, MailError) as exc:
        _fail(args, str(exc))
    engine = _engine(settings, service=True)
    tz = policy.versions[-1].tz

    def tick(now: datetime) -> TickResult:
        return schedule_tick(engine, policy, smtp, members, now)

    if args.once:
        result = tick(args.now or datetime.now(UTC))
        for line in result.lines():
            print(line)
        if args.heartbeat:
            Path(args.heartbeat).touch()
        return 1 if result.failed else 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("report schedule starting", members=len(members), settings=settings.public())
    run_schedule(tick, lambda: datetime.now(UTC), stop, tz, Path(args.heartbeat) if args.heartbeat else None)
    return 0
