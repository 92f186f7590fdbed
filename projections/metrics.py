"""Prometheus metrics computed at scrape time from the SQL projection.

A scrape costs the open queue, not the history: open tickets and their running clocks are
read as they are, and what grows with history (outcome counters, events per type, dead
letters, the time-to-acknowledge histogram) from the running totals the projector keeps
in the same transactions (``projections.totals``): a fixed number of indexed queries.

Served by the projector process only (``slaledger project --metrics-port``): the values
are functions of durable rows, so a restart, a replay or a second projector cannot make a
counter jump or double; and one process serves them, so nothing is summed twice. The
worker's own ``/metrics`` carries only process-local runtime metrics.

Never a ticket id as a label; the member id only on the outcome counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from sla.display import shown_state, worst_state
from sla.policy import Policy
from sla.ticket import OPEN_STATUSES

from . import compliance, totals
from .models import ARCHIVE_HEAD, CheckpointRow, ClockRow, TicketRow
from .totals import aware

OPEN_STATES = ("running", "paused", "at_risk", "breached")
VERSION = "0.1.0"


OUTCOMES = ("met", "breached", "retracted", "excluded")
# The dead-letter reasons the worker and the projector write (streams.appender, projections.projector).
DEAD_LETTER_REASONS = ("command refused", "key mismatch", "processing error", "projection failed",
                       "unreadable command", "unreadable event")


class ProjectionCollector(Collector):
    def __init__(self, engine: Engine, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lag: Callable[[], dict[tuple[str, int], int]] | None = None, policy: Policy | None = None) -> None:
        """``policy``: the SLAs' monthly objectives (``slaledger_sla_objective_percent``)."""
        self.engine = engine
        self.now = now
        self.lag = lag
        self.objectives = compliance.objectives(policy) if policy is not None else {}

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        t, c = TicketRow.__table__, ClockRow.__table__
        with self.engine.connect() as conn:
            # IN the open statuses (not NOT IN the closed ones): the status index, not a scan
            still_open = t.c.status.in_(OPEN_STATUSES)
            open_tickets = dict(conn.execute(select(t.c.ticket_id, t.c.kind).where(still_open)).all())
            states: dict[str, list[str]] = {}
            earliest: dict[str, datetime] = {}
            open_slas: set[str] = set()
            for ticket_id, sla, status, deadline, warning_at in conn.execute(
                select(c.c.ticket_id, c.c.sla, c.c.status, c.c.deadline, c.c.warning_at)
                .join(t, t.c.ticket_id == c.c.ticket_id)
                .where(still_open, c.c.status.in_(["running", "paused", "breached"]), c.c.stopped_at.is_(None))
            ):
                if ticket_id not in open_tickets:
                    continue
                open_slas.add(sla)
                deadline, warning_at = aware(deadline), aware(warning_at)
                state = shown_state(status, deadline=deadline, warning_at=warning_at, now=now)
                if state in ("running", "at_risk") and deadline is not None and (
                        sla not in earliest or deadline < earliest[sla]):
                    earliest[sla] = deadline
                states.setdefault(ticket_id, []).append(state)
            by_kind_state: Counter[tuple[str, str]] = Counter()
            for ticket_id, kind in open_tickets.items():
                worst = worst_state(states.get(ticket_id, ()))
                if worst is not None:
                    by_kind_state[(kind, worst)] += 1
            no_eta = conn.scalar(select(func.count()).select_from(t).where(
                t.c.kind == "incident", still_open, t.c.restoration_eta.is_(None)))
            # what grows with history is read from the projector's running totals (O(series))
            kept = totals.read(conn)
            # this month's verdicts, counted as the statement and the panels count them
            this_month = compliance.month_counts(conn, *compliance.month_of(now, ZoneInfo(compliance.TIMEZONE)))
            positions = conn.execute(select(CheckpointRow.__table__)
                                     .where(CheckpointRow.__table__.c.topic != ARCHIVE_HEAD)).all()

        def of(metric: str) -> dict[tuple[str, ...], float]:
            return {tuple(totals.labels(k)): v for k, v in kept.items() if k[0] == metric}

        outcomes = {(sla, outcome, member): n for (sla, outcome, member), n in of(totals.OUTCOME).items()}
        all_members = {member for (member,) in of(totals.MEMBER)}
        slas = {sla for sla, _, _ in outcomes} | open_slas
        processed = {kind: n for (kind,), n in of(totals.EVENTS).items()}
        letters = {reason: n for (reason,), n in of(totals.DEAD_LETTERS).items()}
        last_event = kept.get(totals.key(totals.LAST_EVENT))

        gauge = GaugeMetricFamily("slaledger_open_tickets",
                                  "Open tickets by kind and worst state of their running SLA clocks",
                                  labels=["kind", "sla_state"])
        kinds = {kind for kind, _ in by_kind_state} | {"assistance", "incident", "administrative", "go_live"}
        for kind in sorted(kinds):
            for state in OPEN_STATES:
                gauge.add_metric([kind, state], by_kind_state.get((kind, state), 0))
        yield gauge
        yield GaugeMetricFamily("slaledger_incidents_without_eta",
                                "Open incidents with no probable restoration time communicated", value=no_eta or 0)
        deadline_gauge = GaugeMetricFamily("slaledger_sla_earliest_deadline_timestamp_seconds",
                                           "Earliest deadline of a running SLA clock", labels=["sla"])
        for sla, deadline in sorted(earliest.items()):
            deadline_gauge.add_metric([sla], deadline.timestamp())
        yield deadline_gauge
        counter = CounterMetricFamily("slaledger_sla_outcomes", "SLA outcomes (breaches and retractions from "
                                      "the event log, met and excluded from the judgments kept)",
                                      labels=["sla", "outcome", "member"])
        # Every (SLA, outcome, member) from 0 once the SLA and the member are known: a member's
        # first breach must count, and increase() cannot see a series appear at 1.
        for sla in sorted(slas | {sla for sla, _, _ in outcomes}):
            for member in sorted(all_members | {m for _, _, m in outcomes}):
                for outcome in OUTCOMES:
                    counter.add_metric([sla, outcome, member], outcomes.get((sla, outcome, member), 0))
        yield counter
        month = GaugeMetricFamily(compliance.MONTH_METRIC,
                                  "SLA clocks whose verdict was sealed this calendar month (Europe/Paris), by SLA, "
                                  "member and verdict (projections.compliance)", labels=["sla", "member", "verdict"])
        # every verdict of an (SLA, member) with a clock this month, 0 included: a month without
        # a breach still has a budget (an absent series would leave the rule without a value)
        for sla, member in sorted({(s, m) for s, m, _ in this_month}):
            for verdict in compliance.VERDICTS:
                month.add_metric([sla, member, verdict], this_month.get((sla, member, verdict), 0))
        yield month
        if self.objectives:
            objective = GaugeMetricFamily(compliance.OBJECTIVE_METRIC, "Monthly compliance objective of each SLA "
                                          "(percent of the judged clocks met), from the policy", labels=["sla"])
            for sla, percent in sorted(self.objectives.items()):
                objective.add_metric([sla], percent)
            yield objective
        yield _histogram(of(totals.ACK_BUCKET), kept)
        events = CounterMetricFamily("slaledger_events_processed", "Events projected, by type", labels=["type"])
        for kind, n in sorted(processed.items()):
            events.add_metric([kind], n)
        yield events
        yield GaugeMetricFamily("slaledger_last_event_timestamp_seconds", "Recording time of the last projected event",
                                value=last_event or 0)
        checkpoint = GaugeMetricFamily("slaledger_projection_checkpoint_offset", "Last projected offset",
                                       labels=["topic", "partition"])
        for row in positions:
            checkpoint.add_metric([row.topic, str(row.partition)], row.offset)
        yield checkpoint
        if self.lag is not None:
            lag = GaugeMetricFamily("slaledger_consumer_lag", "Records not yet projected",
                                    labels=["topic", "partition"])
            for (topic, partition), value in sorted(self.lag().items()):
                lag.add_metric([topic, str(partition)], value)
            yield lag
        dead = CounterMetricFamily("slaledger_dead_lettered", "Records sent to the dead-letter topic, by reason",
                                   labels=["reason"])
        # Every known reason from 0: increase() cannot see a series' first step from nothing to 1.
        for reason in sorted(set(DEAD_LETTER_REASONS) | set(letters)):
            dead.add_metric([reason], letters.get(reason, 0))
        yield dead
        yield CounterMetricFamily("slaledger_processing_errors", "Records whose processing raised an error "
                                  "(dead-lettered)", value=letters.get("processing error", 0))
        info = InfoMetricFamily("slaledger_build", "Build information")
        info.add_metric([], {"version": VERSION})
        yield info


def _histogram(buckets: dict[tuple[str, ...], float], kept: dict[totals.Key, float]) -> HistogramMetricFamily:
    rows = [(bound, buckets.get((bound,), 0)) for bound in totals.bucket_bounds()]
    count = kept.get(totals.key(totals.ACK_COUNT), 0)
    return HistogramMetricFamily("slaledger_acknowledge_duration_seconds",
                                 "Time from filing to acknowledgement (taken into account)",
                                 buckets=[*rows, ("+Inf", count)], sum_value=kept.get(totals.key(totals.ACK_SUM), 0))

