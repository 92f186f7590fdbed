"""``slaledger sla explain`` and ``slaledger policy holidays``: the policy's rules read
without a log (what-if and policy diff|check are ``whatif_cli``)."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime
from typing import Any

from sla import french
from sla.catalogue import UnknownName
from sla.clock import Clock, evaluate
from sla.events import CHANNELS, KINDS, EventType, new_event
from sla.explain import explanation, rule_text
from sla.policy import Policy
from sla.ticket import fold

from .cli_common import UsageError, instant
from .settings import load_policy


def add_parsers(commands: Any) -> Any:
    """``sla explain`` and ``policy holidays``; returns the ``policy`` commands (what-if adds
    its own to them)."""
    sla = commands.add_parser("sla", help="SLA rules and deadlines")
    sla_commands = sla.add_subparsers(dest="sla_command", required=True)
    explain = sla_commands.add_parser("explain", help="deadline of every SLA that applies to a request")
    explain.add_argument("--kind", required=True, choices=KINDS)
    explain.add_argument("--channel", required=True, choices=CHANNELS)
    explain.add_argument("--filed-at", required=True, type=instant, help="ISO 8601 with offset")
    explain.add_argument("--elements-complete-at", type=instant, help="go-live: all elements supplied")
    explain.add_argument("--acknowledged-at", type=instant, help="incident: when it was taken into account")
    explain.add_argument("--product", default="parapheur",
                         help="product: slug, name or alias of the policy's catalogue (some are excluded from the SLA)")
    explain.add_argument("--policy", help="policy file (TOML); the convention's policy by default")
    explain.add_argument("--json", action="store_true", help="one JSON object on stdout")
    explain.set_defaults(handler=cmd_sla_explain)

    policy = commands.add_parser("policy", help="write, compare and check policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    pin = policy_commands.add_parser(
        "holidays", help="print a version's non_working_days table (French public holidays, from the holidays "
                         "package), to paste into a new policy version")
    pin.add_argument("--from", dest="first", type=int, required=True, help="first year covered")
    pin.add_argument("--to", dest="last", type=int, required=True, help="last year covered")
    pin.add_argument("--whit-monday", choices=["holiday", "working"], default="holiday",
                     help="Whit Monday as the law lists it (holiday, default) or worked as the journée de "
                          "solidarité (working)")
    pin.set_defaults(handler=cmd_policy_holidays)
    return policy_commands


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
