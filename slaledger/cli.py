"""The ``slaledger`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime

from sla.clock import Clock, evaluate
from sla.events import CHANNELS, KINDS, EventDecodeError, EventType, new_event, parse_instant
from sla.policy import Policy, PolicyError
from sla.ticket import fold

from .settings import load_policy


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slaledger", description="Event-sourced ticketing and SLA monitor.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sla = commands.add_parser("sla", help="SLA rules and deadlines")
    sla_commands = sla.add_subparsers(dest="sla_command", required=True, parser_class=_Parser)
    explain = sla_commands.add_parser("explain", help="deadline of every SLA that applies to a request")
    explain.add_argument("--kind", required=True, choices=KINDS)
    explain.add_argument("--channel", required=True, choices=CHANNELS)
    explain.add_argument("--filed-at", required=True, type=_instant, help="ISO 8601 with offset")
    explain.add_argument("--elements-complete-at", type=_instant, help="go-live: all elements supplied")
    explain.add_argument("--acknowledged-at", type=_instant, help="incident: when it was taken into account")
    explain.add_argument("--product", default="solaere", help="product (some are excluded from the SLA)")
    explain.add_argument("--policy", help="policy file (TOML); the convention's policy by default")
    explain.add_argument("--json", action="store_true", help="one JSON object on stdout")
    explain.set_defaults(handler=cmd_sla_explain)
    return parser


def explain_request(args: argparse.Namespace, policy: Policy) -> list[Clock]:
    """Build the events of a hypothetical request and evaluate its clocks."""
    filed_at: datetime = args.filed_at
    ticket_id = "explain"
    events = [
        new_event(
            EventType.TICKET_FILED,
            ticket_id,
            occurred_at=filed_at,
            recorded_at=filed_at,
            actor="cli",
            payload={"kind": args.kind, "channel": args.channel, "product": args.product,
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
            "rule": clock.to_dict()["rule"],
            "explanation": clock.explanation(live=False),
        })
    if args.json:
        filed_at = args.filed_at.astimezone(version.tz).isoformat()
        doc = {"filed_at": filed_at, "policy_version": version.id, "targets": targets}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(f"Politique {version.id}")
        for t in targets:
            print(f"- {t['sla']}: {t['deadline'] or '—'} [{t['status']}]\n  {t['explanation']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except (UsageError, PolicyError, OSError) as exc:
        print(f"slaledger: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
