"""Prometheus metrics computed at scrape time from the SQL projection.

Served by the projector process only (``slaledger project --metrics-port``): the values
are functions of durable rows, so a restart, a replay or a second projector cannot make a
counter jump or double; and one process serves them, so nothing is summed twice. The
worker's own ``/metrics`` carries only process-local runtime metrics.

Never a ticket id as a label; the member id only on the outcome counter.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from sla.display import shown_state, worst_state

from .models import ARCHIVE_HEAD, ArchiveRow, CheckpointRow, ClockRow, DeadLetterRow, JudgmentRow, TicketRow

# A bucket boundary exactly at 4 h: "% acknowledged within 4 h" is one bucket over the count.
ACK_BUCKETS = (300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0)
OPEN_STATES = ("running", "paused", "at_risk", "breached")
VERSION = "0.1.0"


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored instant is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


OUTCOMES = ("met", "breached", "retracted", "excluded")
# The dead-letter reasons the worker and the projector write (streams.app, projections.projector).
DEAD_LETTER_REASONS = ("command refused", "key mismatch", "processing error", "projection failed",
                       "unreadable command", "unreadable event")


class ProjectionCollector(Collector):
    def __init__(self, engine: Engine, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lag: Callable[[], dict[tuple[str, int], int]] | None = None) -> None:
        self.engine = engine
        self.now = now
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        t, c, a = TicketRow.__table__, ClockRow.__table__, ArchiveRow.__table__
        with self.engine.connect() as conn:
            open_tickets = dict(conn.execute(select(t.c.ticket_id, t.c.kind)
                                             .where(t.c.status.not_in(["resolved", "closed"]))).all())
            states: dict[str, list[str]] = {}
            earliest: dict[str, datetime] = {}
            for ticket_id, sla, status, deadline, warning_at in conn.execute(
                select(c.c.ticket_id, c.c.sla, c.c.status, c.c.deadline, c.c.warning_at)
                .where(c.c.status.in_(["running", "paused", "breached"]), c.c.stopped_at.is_(None))
            ):
                if ticket_id not in open_tickets:
                    continue
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
                t.c.kind == "incident", t.c.status.not_in(["resolved", "closed"]), t.c.restoration_eta.is_(None)))

            outcomes: Counter[tuple[str, str, str]] = Counter()
            j = JudgmentRow.__table__
            for sla, status, member, n in conn.execute(
                select(j.c.sla, j.c.outcome, j.c.member, func.count()).group_by(j.c.sla, j.c.outcome, j.c.member)
            ):
                outcomes[(sla, status, member)] += n
            members = dict(conn.execute(select(t.c.ticket_id, t.c.member)).all())
            all_members = set(members.values())
            slas = set(conn.scalars(select(c.c.sla).distinct()))
            for ticket_id, kind, envelope in conn.execute(
                select(a.c.ticket_id, a.c.type, a.c.envelope)
                .where(a.c.type.in_(["sla_breached", "sla_breach_retracted"]))
            ):
                sla = json.loads(envelope)["payload"]["sla"]
                outcome = "breached" if kind == "sla_breached" else "retracted"
                outcomes[(sla, outcome, members.get(ticket_id, ""))] += 1

            durations = [
                ((aware(acked) or now) - (aware(filed) or now)).total_seconds()
                for filed, acked in conn.execute(select(t.c.filed_at, t.c.acknowledged_at)
                                                 .where(t.c.acknowledged_at.is_not(None)))
            ]
            processed: dict[str, int] = dict(conn.execute(select(a.c.type, func.count()).group_by(a.c.type)).all())
            last_event = aware(conn.scalar(select(func.max(a.c.recorded_at))))
            positions = conn.execute(select(CheckpointRow.__table__)
                                     .where(CheckpointRow.__table__.c.topic != ARCHIVE_HEAD)).all()
            d = DeadLetterRow.__table__
            letters: dict[str, int] = dict(
                conn.execute(select(d.c.reason_kind, func.count()).group_by(d.c.reason_kind)).all())

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
        yield _histogram(durations)
        events = CounterMetricFamily("slaledger_events_processed", "Events projected, by type", labels=["type"])
        for kind, n in sorted(processed.items()):
            events.add_metric([kind], n)
        yield events
        yield GaugeMetricFamily("slaledger_last_event_timestamp_seconds", "Recording time of the last projected event",
                                value=last_event.timestamp() if last_event else 0)
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


def _histogram(durations: list[float]) -> HistogramMetricFamily:
    counts: defaultdict[float, int] = defaultdict(int)
    for value in durations:
        for bound in ACK_BUCKETS:
            if value <= bound:
                counts[bound] += 1
    buckets = [(_fmt(b), counts[b]) for b in ACK_BUCKETS] + [("+Inf", len(durations))]
    return HistogramMetricFamily("slaledger_acknowledge_duration_seconds",
                                 "Time from filing to acknowledgement (taken into account)",
                                 buckets=buckets, sum_value=sum(durations))


def _fmt(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)
