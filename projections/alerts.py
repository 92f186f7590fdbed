"""Per-ticket alerts pushed to Alertmanager: one alert per open ticket whose SLA clock is at
risk or breached, with the ticket id, the member, the deadline, the French explanation and a
link to the ticket's page.

Prometheus alerts are aggregates (never a ticket id as a label); the support team also wants
"which ticket?", so the projector — the one process that owns the read model — pushes these
straight to Alertmanager's API. Alerts carry an ``endsAt`` a few intervals ahead and are
re-sent every interval: a clock that stops (the ticket acknowledged, even late; resolved;
closed) simply stops being sent and its alert resolves by itself, and a restart loses nothing (the state is in SQL).
Alertmanager's inhibition mutes a ticket's at-risk alert once its breach fires
(``equal: [ticket_id, sla]``).

Before the team leaves (``due_before_opening``): ticket e-mails are held outside support
hours, so a clock that comes due in the evening would be known the next morning, breached.
From a set time before the support closing (17:30 by default) on working days, one alert
lists every open clock due before the next opening; it ends at the closing, unmailed
(Alertmanager sends it to a receiver without « résolu »).

Each alert names its runbook section by its anchor (annotation ``runbook``); the e-mails
prefix the runbook's address, a deployment setting of Alertmanager's configuration.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, select

from sla import french
from sla.display import shown_state
from sla.policy import Policy, PolicyVersion

from .metrics import aware
from .models import ClockRow, TicketRow

log = structlog.get_logger(__name__)

ALERT_NAMES = {"at_risk": "SLATicketAtRisk", "breached": "SLATicketBreached"}
DUE_BEFORE_OPENING = "SLADueBeforeNextOpening"


def _version(policy: Policy, version_id: str) -> PolicyVersion:
    """The policy version that judged a clock (its time zone and warning ratio); the latest
    when this process does not know it."""
    try:
        return policy.version(version_id)
    except Exception:
        return policy.versions[-1]


def ticket_alerts(engine: Engine, now: datetime, ticket_url: str, ttl: timedelta,
                  policy: Policy) -> list[dict[str, Any]]:
    """The alerts to send now, in Alertmanager's v2 API shape; times in the time zone of the
    policy version that judged each clock, the warning threshold as it sets it."""
    t, c = TicketRow.__table__, ClockRow.__table__
    query = (select(c.c.ticket_id, c.c.sla, c.c.status, c.c.deadline, c.c.warning_at, c.c.explanation,
                    c.c.contractual, c.c.policy_version, t.c.member, t.c.kind, t.c.subject)
             .join(t, t.c.ticket_id == c.c.ticket_id)
             .where(t.c.status.not_in(["resolved", "closed"]), c.c.status.in_(["running", "breached"]),
                    c.c.stopped_at.is_(None)))  # a late acknowledgement leaves nothing to act on
    alerts = []
    with engine.connect() as conn:
        for row in conn.execute(query):
            deadline, warning_at = aware(row.deadline), aware(row.warning_at)
            state = shown_state(row.status, deadline=deadline, warning_at=warning_at, now=now)
            if state not in ALERT_NAMES:
                continue
            version = _version(policy, row.policy_version)
            link = ticket_url.format(ticket_id=row.ticket_id)
            verb = "dépassé" if state == "breached" else f"à {version.warning_ratio * 100:g} % du délai"
            when = french.instant(deadline, version.tz) if deadline else "sans échéance"
            alerts.append({
                "labels": {
                    "alertname": ALERT_NAMES[state], "severity": "ticket", "ticket_id": row.ticket_id,
                    "sla": row.sla, "member": row.member, "kind": row.kind,
                    "contractual": "true" if row.contractual else "false",
                },
                "annotations": {
                    "summary": f"{row.ticket_id} ({row.member}) : {row.sla} {verb}, échéance {when}",
                    "description": row.explanation,
                    "subject": row.subject,
                    "link": link,
                    "runbook": ALERT_NAMES[state].lower(),
                },
                "startsAt": _iso((deadline if state == "breached" else warning_at) or now),
                "endsAt": _iso(now + ttl),
                "generatorURL": link,
            })
    return alerts


def due_before_opening(engine: Engine, now: datetime, ticket_url: str, ttl: timedelta, policy: Policy,
                       alert_at: time) -> list[dict[str, Any]]:
    """The evening alert, when ``now`` is between ``alert_at`` and the closing of a working
    day of the support calendar (the latest policy version's, as Alertmanager's support
    hours) and some open clock comes due before the next opening; else nothing (and nothing
    under a policy without a ``support`` calendar)."""
    support = policy.versions[-1].calendars.get("support")
    if support is None:
        return []
    local = support.local(now)
    if not (support.is_working_day(local.date()) and alert_at <= local.time().replace(tzinfo=None) < support.close_at):
        return []
    closing = support.at(local.date(), support.close_at)
    opening = support.at(support.next_working_day(local.date()), support.open_at)
    t, c = TicketRow.__table__, ClockRow.__table__
    query = (select(c.c.ticket_id, c.c.sla, c.c.deadline, t.c.member)
             .join(t, t.c.ticket_id == c.c.ticket_id)
             .where(t.c.status.not_in(["resolved", "closed"]), c.c.status == "running", c.c.stopped_at.is_(None),
                    c.c.deadline > now, c.c.deadline < opening)
             .order_by(c.c.deadline, c.c.ticket_id, c.c.sla))
    with engine.connect() as conn:
        rows = [(row.ticket_id, row.sla, aware(row.deadline), row.member) for row in conn.execute(query)]
    if not rows:
        return []
    lines = [f"- {ticket} ({member}) : {sla}, échéance {french.instant(deadline, support.tz)} — "
             f"{ticket_url.format(ticket_id=ticket)}" for ticket, sla, deadline, member in rows if deadline]
    return [{
        "labels": {"alertname": DUE_BEFORE_OPENING, "severity": "ticket"},
        "annotations": {
            "summary": f"{len(rows)} échéance(s) avant la prochaine ouverture "
                       f"({french.instant(opening, support.tz)})",
            "description": "À traiter avant de partir :\n" + "\n".join(lines),
            "runbook": DUE_BEFORE_OPENING.lower(),
        },
        "startsAt": _iso(support.at(local.date(), alert_at)),
        "endsAt": _iso(min(now + ttl, closing)),
    }]


ALERT_TTL = timedelta(minutes=30)


def post_alerts(alertmanager_url: str, alerts: list[dict[str, Any]], timeout: float = 5.0) -> None:
    request = urllib.request.Request(
        alertmanager_url.rstrip("/") + "/api/v2/alerts", data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def run_alert_pusher(engine: Engine, alertmanager_url: str, ticket_url: str, policy: Policy, stop: threading.Event,
                     *, interval: float = 15.0, alert_at: time = time(17, 30),
                     now: Callable[[], datetime] = lambda: datetime.now(UTC),
                     post: Callable[[str, list[dict[str, Any]]], None] = post_alerts) -> None:
    """Push every ``interval`` seconds until ``stop`` is set; an unreachable Alertmanager is
    logged and retried at the next interval (alerts are state, re-sent in full each time).

    An alert lives ``ALERT_TTL`` past each push, so a projector that stops or rebuilds for a
    while does not send « résolu » mails for tickets still breached; one that leaves the pushed
    set (acknowledged, met) is resolved at once, by sending it again ended now."""
    ttl = max(timedelta(seconds=4 * interval), ALERT_TTL)
    failing = False
    pushed: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    while not stop.is_set():
        try:
            at = now()
            alerts = (ticket_alerts(engine, at, ticket_url, ttl, policy)
                      + due_before_opening(engine, at, ticket_url, ttl, policy, alert_at))
            current = {_key(a): a for a in alerts}
            ended = [{**a, "endsAt": _iso(at)} for k, a in pushed.items() if k not in current]
            if alerts or ended:
                post(alertmanager_url, alerts + ended)
            pushed = current
            if failing:
                log.info("alertmanager reachable again", url=alertmanager_url)
            failing = False
            log.debug("ticket alerts pushed", count=len(alerts), resolved=len(ended))
        except Exception as exc:  # a broken push must never stop the projector
            if not failing:
                log.warning("ticket alerts not pushed", url=alertmanager_url, error=str(exc))
            failing = True
        stop.wait(interval)


def _key(alert: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(alert["labels"].items()))


def start_alert_pusher(engine: Engine, alertmanager_url: str, ticket_url: str, policy: Policy, interval: float,
                       stop: threading.Event, alert_at: time) -> threading.Thread:
    thread = threading.Thread(target=run_alert_pusher, name="alert-pusher", daemon=True,
                              args=(engine, alertmanager_url, ticket_url, policy, stop),
                              kwargs={"interval": interval, "alert_at": alert_at})
    thread.start()
    log.info("ticket alerts pushed to alertmanager", url=alertmanager_url, interval=interval)
    return thread


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
