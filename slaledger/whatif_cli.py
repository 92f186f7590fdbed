"""``slaledger audit what-if``, ``policy diff`` and ``policy check`` (#29): a draft policy tried
on the log before the convention is renegotiated. Registered by ``cli.build_parser``
(``add_parsers``).

``audit what-if`` reads the archive (in ticket order) or the events topic and judges every
ticket of the period by the current policy and by the draft (``projections.whatif``); it
writes nothing — no topic, no table, no file but ``-o``. Bad input (an unreadable or invalid
draft, an unknown version, a SQLite file that does not exist) is one line
``slaledger: error: …`` with exit code 2, through ``cli.main``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sla.policy import Policy, PolicyError, coverage_errors, parse_policy
from sla.readings import changes

from .cli_common import connection_options, instant
from .logs import configure_logging
from .output import output_file
from .settings import Settings, load_policy

FORMATS = ("table", "csv", "json", "html", "pdf")


def add_parsers(audit_commands: Any, policy_commands: Any) -> None:
    what_if = audit_commands.add_parser(
        "what-if", help="judge a period by the current policy and by a draft: the verdicts and deadlines that change")
    what_if.add_argument("--policy", dest="draft", required=True, help="the draft policy file (TOML)")
    what_if.add_argument("--version", dest="draft_version", help="judge every ticket by this version of the draft "
                                                                 "(default: the draft's version in force at filing)")
    what_if.add_argument("--current", dest="policy_file", help="the policy in force (default: SLALEDGER_POLICY_FILE, "
                                                               "or the convention's policy)")
    what_if.add_argument("--member", help="one member's tickets")
    what_if.add_argument("--by-member", action="store_true", help="counts per SLA and per member")
    what_if.add_argument("--from", dest="filed_from", type=instant, required=True, help="filed at or after (ISO 8601)")
    what_if.add_argument("--to", dest="filed_to", type=instant, required=True, help="filed before (ISO 8601)")
    what_if.add_argument("--source", choices=["archive", "topic"], default="archive")
    connection_options(what_if, broker=True, database="SQLAlchemy URL of the archive")
    what_if.add_argument("--format", choices=FORMATS, default="table")
    what_if.add_argument("--output", "-o", type=output_file, help="file to write (default: stdout; required for pdf)")
    what_if.set_defaults(handler=cmd_what_if)

    diff = policy_commands.add_parser("diff", help="what a draft policy changes, in French")
    diff.add_argument("current", help="the policy in force (TOML)")
    diff.add_argument("draft", help="the draft (TOML)")
    diff.set_defaults(handler=cmd_policy_diff)
    check = policy_commands.add_parser("check", help="validate a policy file: keys, versions, covered years")
    check.add_argument("file", help="the policy file (TOML)")
    check.set_defaults(handler=cmd_policy_check)


def read_policy(path: str) -> Policy:
    """A policy file, its errors prefixed with its name (one line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot be read ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    try:
        return parse_policy(text)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def cmd_policy_check(args: argparse.Namespace) -> int:
    policy = read_policy(args.file)
    problems = coverage_errors(policy)
    for line in problems:
        print(f"slaledger: error: {args.file}: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"{args.file}: {len(policy.versions)} version(s) — "
          + ", ".join(f"{v.id} from {v.effective_from.isoformat()}" for v in policy.versions))
    return 0


def cmd_policy_diff(args: argparse.Namespace) -> int:
    lines = changes(read_policy(args.current), read_policy(args.draft))
    print("\n".join(lines) if lines else "Le projet ne change aucune règle.")
    return 0


def cmd_what_if(args: argparse.Namespace) -> int:
    from projections.audit.kafka_source import kafka_records
    from projections.audit.replay import Filters
    from projections.audit.sources import archive_records
    from projections.whatif import compare, judging, ticket_histories, to_csv, to_html, to_json, to_pdf, to_table

    if args.format == "pdf" and not args.output:
        raise PolicyError("--format pdf needs --output FILE")
    if args.filed_from >= args.filed_to:
        raise PolicyError("--from must precede --to")
    draft = judging(read_policy(args.draft), args.draft_version)
    try:
        settings = Settings.from_env(**{k: getattr(args, k) for k in ("policy_file", "database_url", "data_dir")},
                                     **({"broker_url": args.broker} if args.broker else {}))
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    args.settings = settings  # what cli.main names when the broker or the database fails
    configure_logging(settings.log_format, "warning")  # on stderr: stdout holds the document
    current = read_policy(settings.policy_file) if settings.policy_file else load_policy()
    filters = Filters(member=args.member, filed_from=args.filed_from, filed_to=args.filed_to)
    if args.source == "archive":
        records = archive_records(_read_only_engine(settings), by_ticket=True)
    else:
        from streams import kafka_security
        from streams.kafka_tools import wait_for_broker

        kafka_security.configure(settings)
        wait_for_broker(settings.bootstrap, settings.broker_timeout)
        records = kafka_records(settings.bootstrap)
    now = datetime.now(UTC)
    comparison = compare(ticket_histories(records, filters), current, draft, now, by_member=args.by_member)
    doc = comparison.document(source=args.source, filters=filters, draft_name=Path(args.draft).name,
                              draft_version=args.draft_version, generated_at=now)
    renderers: dict[str, Callable[[dict[str, Any]], str | bytes]] = {
        "table": to_table, "csv": to_csv, "json": to_json, "html": to_html, "pdf": to_pdf}
    rendered = renderers[args.format](doc)
    data = rendered if isinstance(rendered, bytes) else rendered.encode()
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _read_only_engine(settings: Settings) -> Any:
    """The archive's engine, creating nothing: a SQLite file that does not exist is an error,
    not a new empty database (``bootstrap.engine_for`` would make its directory)."""
    from sqlalchemy import create_engine

    url = settings.database
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise PolicyError(f"{url}: no such SQLite file (check --database / --data-dir)")
    connect_args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
    return create_engine(url, connect_args=connect_args)
