"""The one definition of compliance (issue #28), used by the monthly statement, the Grafana
panels and the Prometheus recording rules alike.

**Compliance** of an SLA (for a member, or for all) over a calendar month = clocks met /
(clocks met + clocks breached). Retracted breaches (declared, then disproved by the log) and
clocks outside the commitments (excluded) are counted apart and do not enter the rate.

**Which month** a clock counts in: the calendar month, in the policy's time zone
(``TIMEZONE``), in which its verdict was sealed (``decided_at``): met and retracted when the
clock stopped, breached when its first missed deadline passed (whatever was done
afterwards), excluded at the filing.

**Error budget left** = 1 − breached / ((1 − objective) × judged), with the SLA's monthly
objective from the policy (``SlaDefinition.objective_percent``): 1 when nothing breached, 0
when the month's breaches reach what the objective allows (compliance = objective), negative
beyond. Computed in percent points, so that integer counts give exact figures (95 % of 20
clocks allows exactly one breach: the budget left is 0, not 1e-16).

Where each figure comes from:
- the statement (``projections.monthly``) folds the member's tickets and applies
  ``decided_at`` and ``rate`` below;
- the projector stores each clock's ``decided_at`` in ``sla_clocks`` (same function), and the
  dashboards' SQL (``sql_by_month``) counts those rows;
- the projector's collector exposes the current month's counts from that same SQL
  (``slaledger_sla_month_clocks{sla,member,verdict}``, ``month_counts``) with the objective
  (``slaledger_sla_objective_percent{sla}``), and the recording rules in
  ``infra/prometheus/rules/compliance.rules.yml`` compute ``RECORDING_RULES`` from them (a
  test holds the file to this module). A test computes all three on one database and one
  Prometheus (tests/e2e/test_compliance.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from sla.clock import Clock, ClockStatus

from .models import CLOCKS

if TYPE_CHECKING:
    from sla.policy import Policy

VERDICTS = ("met", "breached", "retracted", "excluded")
TIMEZONE = "Europe/Paris"  # the policy's (checked by a test): Grafana's SQL cannot read the policy
MONTH_METRIC = "slaledger_sla_month_clocks"
OBJECTIVE_METRIC = "slaledger_sla_objective_percent"


def decided_at(clock: Clock, filed_at: datetime | None) -> datetime | None:
    """The instant a clock's verdict was sealed (the month rule above); None while undecided."""
    if clock.status is ClockStatus.EXCLUDED:
        return filed_at
    if clock.status is ClockStatus.BREACHED:
        return min(c.deadline for c in clock.cycles if c.overdue)
    if clock.status in (ClockStatus.MET, ClockStatus.RETRACTED):
        return clock.stopped_at
    return None


def rate(met: int, breached: int) -> float | None:
    """Compliance: met / (met + breached); None when nothing was judged."""
    judged = met + breached
    return met / judged if judged else None


def budget_left(met: int, breached: int, objective_percent: float) -> float | None:
    """Error budget left (see the module docstring); None when nothing was judged."""
    judged = met + breached
    if not judged:
        return None
    return 1 - breached * 100 / ((100 - objective_percent) * judged)


def objectives(policy: Policy) -> dict[str, float]:
    """Each SLA's monthly objective (percent), from the latest version that defines it."""
    return {s.name: s.objective_percent for v in policy.versions for s in v.slas}


def month_of(instant: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of the local calendar month holding
    ``instant``: local midnights, never skipped nor repeated in Europe/Paris."""
    local = instant.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return (datetime(local.year, local.month, 1, tzinfo=tz).astimezone(UTC),
            datetime(year, month, 1, tzinfo=tz).astimezone(UTC))


# --- SQL (Grafana's panels, and the collector's gauge) -------------------------------------

_MONTH = f"to_char(date_trunc('month', c.decided_at AT TIME ZONE '{TIMEZONE}'), 'YYYY-MM')"
_MET = "count(*) FILTER (WHERE c.status = 'met')"
_BREACHED = "count(*) FILTER (WHERE c.status = 'breached')"


def sql_by_month(group: str, label: str, *, extra_where: str = "") -> str:
    """Per calendar month and ``group`` (a SQL expression shown as ``label``): the verdicts
    and the compliance, clocks counted in the month their verdict was sealed. Uses Grafana's
    ``$__timeFrom()``/``$__timeTo()`` and ``$member``."""
    where = f" AND {extra_where}" if extra_where else ""
    return f"""
        SELECT {_MONTH} AS "Mois", {group} AS "{label}",
               {_MET} AS "Respectés", {_BREACHED} AS "Manquements",
               count(*) FILTER (WHERE c.status = 'retracted') AS "Manquements retirés",
               count(*) FILTER (WHERE c.status = 'excluded') AS "Hors engagement",
               round(100.0 * {_MET} / NULLIF({_MET} + {_BREACHED}, 0), 1) AS "Conformité (%)"
        FROM sla_clocks c
        WHERE c.decided_at IS NOT NULL AND c.member IN ($member){where}
          AND c.decided_at >= $__timeFrom() AND c.decided_at < $__timeTo()
        GROUP BY 1, 2 ORDER BY 1 DESC, 2"""


def month_counts(conn: Connection, start: datetime, end: datetime) -> dict[tuple[str, str, str], int]:
    """(sla, member, verdict) → clocks whose verdict was sealed in [start, end): the rows the
    panels count (``sql_by_month``), for the collector's gauge."""
    c = CLOCKS
    query = (select(c.c.sla, c.c.member, c.c.status, func.count())
             .where(c.c.decided_at >= start, c.c.decided_at < end, c.c.status.in_(VERDICTS))
             .group_by(c.c.sla, c.c.member, c.c.status))
    return {(sla, member, status): int(n) for sla, member, status, n in conn.execute(query)}


# --- PromQL (the recording rules of infra/prometheus/rules/compliance.rules.yml) -------------

def _sum(by: str, verdicts: str) -> str:
    return f'sum by ({by}) ({MONTH_METRIC}{{verdict=~"{verdicts}"}})'


def _rules(by: str, suffix: str) -> dict[str, str]:
    met, breached, judged = _sum(by, "met"), _sum(by, "breached"), _sum(by, "met|breached")
    objective = f"max by (sla) ({OBJECTIVE_METRIC})"
    return {
        f"slaledger:sla_compliance:{suffix}": f"{met} / ({judged} > 0)",
        f"slaledger:sla_error_budget_left:{suffix}":
            f"1 - {breached} * 100 / (({judged} > 0) * on (sla) group_left () (100 - {objective}))",
    }


# record name → expression: per SLA and member, and per SLA (every member), this month.
RECORDING_RULES: dict[str, str] = {**_rules("sla, member", "month_by_member"), **_rules("sla", "month")}


def promql_ratio(selector: str, window: str | None = None) -> str:
    """The same compliance from the outcome counter ``slaledger_sla_outcomes_total`` (``selector``
    is its label matchers, e.g. ``sla="intake"``), over its whole life or a window: a breach
    retracted since is counted by the counter both as breached and as retracted, hence
    met / (met + breached − retracted)."""
    def count(outcome: str) -> str:
        series = f'slaledger_sla_outcomes_total{{{selector},outcome="{outcome}"}}'
        return f"sum(increase({series}[{window}]))" if window else f"sum({series})"

    return f"{count('met')} / ({count('met')} + {count('breached')} - {count('retracted')})"
