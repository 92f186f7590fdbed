"""The SQL projector against PostgreSQL and the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, Table, create_engine, func, select, text

from projections.alerts import ticket_alerts
from projections.archive_hash import GENESIS_HASH, chain_hash
from projections.metrics import ProjectionCollector
from projections.migrate import create_schema
from projections.models import ARCHIVE, CHECKPOINTS, CLOCKS, DEAD, TICKETS
from projections.projection import Incoming, Projection
from projections.projector import apply_isolating, run_projector
from projections.rebuild import rebuild
from projections.tokens import create_token
from sla.events import Event, EventType, encode_event, new_event
from slaledger.brokers.process import free_port
from slaledger.settings import load_policy
from streams.kafka_acls import PROJECTOR
from streams.kafka_tools import producer
from streams.topics import DEAD_LETTERS, EVENTS
from tests.conftest import end_group, projected
from tests.integration.conftest import Broker, api, send_records, wait_for

pytestmark = pytest.mark.integration


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def history(n: int, start: datetime, prefix: str = "P") -> list[Event]:
    """n tickets: filed; a third acknowledged in 1 h, a third after 30 h (breached); some resolved."""
    out = []
    for i in range(n):
        tid = f"{prefix}-{i:04d}"
        t0 = start + timedelta(minutes=7 * i)

        def ev(event_type: EventType, at: datetime, tid: str = tid, **payload: object) -> Event:
            return new_event(event_type, tid, occurred_at=at, recorded_at=at, actor="test", payload=payload)

        out.append(ev(EventType.TICKET_FILED, t0, kind=["assistance", "incident"][i % 2], channel="portal",
                      member=f"m-{i % 3}", product="ent", subject="s"))
        if i % 3 == 0:
            out.append(ev(EventType.ACKNOWLEDGED, t0 + timedelta(hours=1)))
        if i % 3 == 1:
            out.append(ev(EventType.ACKNOWLEDGED, t0 + timedelta(hours=30)))
        if i % 6 == 0:
            out.append(ev(EventType.RESOLVED, t0 + timedelta(hours=2)))
    return out


def publish(broker: Broker, events: list[Event]) -> None:
    send_records(broker, EVENTS, [(event.ticket_id.encode(), encode_event(event)) for event in events])


def verify_chain(engine: Engine) -> int:
    prev = GENESIS_HASH
    with engine.connect() as conn:
        rows = conn.execute(select(ARCHIVE.c.envelope, ARCHIVE.c.prev_hash, ARCHIVE.c.hash).order_by(ARCHIVE.c.seq))
        n = 0
        for envelope, prev_hash, digest in rows:
            assert prev_hash == prev
            assert digest == chain_hash(prev, envelope.encode())
            prev, n = digest, n + 1
    return n


def snapshot(engine: Engine) -> tuple[list, list]:
    with engine.connect() as conn:
        tickets = [dict(r._mapping) for r in conn.execute(select(TICKETS).order_by(TICKETS.c.ticket_id))]
        clocks = [{k: v for k, v in r._mapping.items() if k not in ("evaluated_at", "explanation")}
                  for r in conn.execute(select(CLOCKS).order_by(CLOCKS.c.ticket_id, CLOCKS.c.sla))]
    return tickets, clocks


def test_idempotent_chained_and_rebuilt_equal(broker: Broker, database: str) -> None:
    engine = create_engine(database)
    create_schema(engine)
    policy = load_policy()
    events = history(30, datetime(2026, 3, 9, 8, 30, tzinfo=UTC))
    publish(broker, events)
    run_projector(engine, broker.bootstrap, policy, follow=False)
    assert count(engine, ARCHIVE) == len(events)
    before = snapshot(engine)
    assert len(before[0]) == 30
    # the same records again (a replay, a producer retry): nothing changes
    publish(broker, events[:20])
    run_projector(engine, broker.bootstrap, policy, follow=False)
    assert count(engine, ARCHIVE) == len(events)
    assert snapshot(engine) == before
    assert verify_chain(engine) == len(events)
    # rebuild from offset 0 into shadow tables, swapped in: equal to the live tables, and a
    # read-only role (Grafana's) keeps its access to them
    reader = f"ro_{database.rsplit('_', 1)[-1]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{reader}"'))
        conn.execute(text(f'GRANT SELECT ON tickets, sla_clocks TO "{reader}"'))
    try:
        rebuild(engine, broker.bootstrap, policy)
        with engine.connect() as conn:
            assert conn.scalar(text(f"SELECT has_table_privilege('{reader}', 'tickets', 'SELECT') "
                                    f"AND has_table_privilege('{reader}', 'sla_clocks', 'SELECT')"))
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{reader}"'))
            conn.execute(text(f'DROP ROLE "{reader}"'))
    assert snapshot(engine) == before
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(CLOCKS.c.ticket_id, CLOCKS.c.status).where(CLOCKS.c.sla == "intake")).all())
    assert statuses["P-0000"] == "met" and statuses["P-0001"] == "breached"


def test_projector_resumes_after_sigkill_and_serves_metrics(broker: Broker, database: str,
                                                           tmp_path: Path) -> None:
    engine = create_engine(database)
    events = history(120, datetime(2026, 4, 13, 7, 0, tzinfo=UTC), prefix="R")
    port = free_port()
    env = {"SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_DATABASE_URL": database,
           "SLALEDGER_METRICS_PORT": str(port), "SLALEDGER_LOG_LEVEL": "info",
           **broker.client_env(PROJECTOR)}
    import os

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "slaledger.cli", "project"], env={**os.environ, **env},
                                stdout=(tmp_path / "projector.log").open("ab"), stderr=subprocess.STDOUT)

    proc = start()
    publish(broker, events[:100])
    wait_for(lambda: _safe_count(engine) > 0, timeout=30, what="first rows")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    publish(broker, events[100:])
    proc = start()
    try:
        wait_for(lambda: _safe_count(engine) == len(events), timeout=60, what="all events projected")
        time.sleep(1)
        assert _safe_count(engine) == len(events)  # nothing twice
        assert verify_chain(engine) == count(engine, ARCHIVE)

        # as Prometheus scrapes it: with a token of the metrics role (#25); without one, 401
        assert api("GET", f"http://127.0.0.1:{port}/metrics")[0] == 401
        _, scraper = create_token(engine, "metrics", label="prometheus")

        def scrape() -> dict[str, float]:
            status, body = api("GET", f"http://127.0.0.1:{port}/metrics", token=scraper)
            assert status == 200
            out = {}
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    key = sample.name + json.dumps(sample.labels, sort_keys=True)
                    out[key] = sample.value
            return out

        def caught_up() -> dict[str, float] | None:  # the lag is measured in the background
            found = scrape()
            lags = [v for k, v in found.items() if k.startswith("slaledger_consumer_lag")]
            return found if lags and sum(lags) == 0 else None

        metrics = wait_for(caught_up, timeout=30, what="metrics with zero lag")
        with engine.connect() as conn:
            breaches = conn.scalar(select(text("count(*)")).select_from(CLOCKS).where(CLOCKS.c.status == "breached"))
            acked = conn.scalar(select(text("count(*)")).select_from(TICKETS)
                                .where(TICKETS.c.acknowledged_at.is_not(None)))
            within_4h = conn.scalar(text("select count(*) from tickets where acknowledged_at is not null "
                                         "and acknowledged_at - filed_at <= interval '4 hours'"))
        assert metrics['slaledger_acknowledge_duration_seconds_count{}'] == acked
        assert metrics['slaledger_acknowledge_duration_seconds_bucket{"le": "14400"}'] == within_4h
        assert sum(v for k, v in metrics.items() if k.startswith("slaledger_events_processed_total")) == count(
            engine, ARCHIVE)
        assert not any("ticket" in k.split("{", 1)[1] for k in metrics if "{" in k and "ticket_id" in k)
        assert breaches >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_projector_goes_on_after_its_broker_was_silent_then_restarted(broker: Broker, database: str,
                                                                      tmp_path: Path) -> None:
    """The broker silent past the client's request timeout (SIGSTOPped 50 s, as behind a cut
    link), then killed and restarted (a whole cluster's restart): the running projector
    projects what is appended after each, every event once."""
    if broker.embedded:
        pytest.skip("the embedded broker keeps nothing across a restart")
    engine = create_engine(database)
    events = history(90, datetime(2026, 5, 4, 7, 0, tzinfo=UTC), prefix="Q")
    thirds = [events[: len(events) // 3], events[len(events) // 3: 2 * len(events) // 3],
              events[2 * len(events) // 3:]]
    env = {"SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_DATABASE_URL": database,
           "SLALEDGER_METRICS_PORT": str(free_port()), "SLALEDGER_LOG_LEVEL": "info", **broker.client_env(PROJECTOR)}
    import os
    log_file = tmp_path / "projector.log"
    proc = subprocess.Popen([sys.executable, "-m", "slaledger.cli", "project"], env={**os.environ, **env},
                            stdout=log_file.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    node = broker.node(1)  # type: ignore[attr-defined]
    try:
        publish(broker, thirds[0])
        wait_for(lambda: _safe_count(engine, "Q-") == len(thirds[0]), timeout=60, what="first third projected")
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(50)
        finally:
            node.process.send_signal(signal.SIGCONT)
        publish(broker, thirds[1])
        wait_for(lambda: _safe_count(engine, "Q-") == len(thirds[0]) + len(thirds[1]), timeout=120,
                 what=f"second third projected after the silence: {log_file.read_text()[-3000:]}")
        broker.kill_node(1)  # type: ignore[attr-defined]
        broker.start_node(1)  # type: ignore[attr-defined]
        publish(broker, thirds[2])
        wait_for(lambda: _safe_count(engine, "Q-") == len(events), timeout=120,
                 what=f"last third projected after the restart: {log_file.read_text()[-3000:]}")
        assert proc.poll() is None, log_file.read_text()[-3000:]
        time.sleep(1)
        assert _safe_count(engine, "Q-") == len(events)  # nothing twice
        assert verify_chain(engine) == count(engine, ARCHIVE)
    finally:
        end_group(proc, 30)  # the projector and its reader process


def _safe_count(engine: Engine, prefix: str = "R-") -> int:
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(text("count(*)")).select_from(ARCHIVE)
                                   .where(ARCHIVE.c.ticket_id.startswith(prefix))) or 0)
    except Exception:
        return 0


def test_dead_letters_are_counted(broker: Broker, database: str) -> None:
    from projections.metrics import ProjectionCollector

    engine = create_engine(database)
    create_schema(engine)
    kafka = producer(broker.bootstrap, embedded=False)
    for reason in ["unreadable event: not valid JSON", "command refused: Le ticket X n'existe pas.",
                   "unreadable event: missing field(s): actor"]:
        body = {"reason": reason, "origin": {"topic": EVENTS, "partition": 1, "offset": 7}, "key": None,
                "value": None, "dead_lettered_at": datetime.now(UTC).isoformat()}
        kafka.send(DEAD_LETTERS, value=json.dumps(body).encode())
    kafka.flush()
    kafka.close()
    for _ in range(2):  # twice: nothing counted twice
        run_projector(engine, broker.bootstrap, load_policy(), follow=False)
    samples = {s.name + json.dumps(s.labels, sort_keys=True): s.value
               for family in ProjectionCollector(engine).collect() for s in family.samples}
    assert samples['slaledger_dead_lettered_total{"reason": "unreadable event"}'] == 2
    assert samples['slaledger_dead_lettered_total{"reason": "command refused"}'] == 1


@pytest.mark.parametrize("refused", ["a statement", "a new ticket's row (COPY), NUL",
                                     "a new ticket's row (COPY), surrogate"])
def test_a_record_the_database_refuses_is_set_aside_and_the_rest_projected(
        database: str, monkeypatch: pytest.MonkeyPatch, refused: str) -> None:
    """One event PostgreSQL cannot store (here: a value forced past its column) must not stop
    the projector at every restart: it is recorded in dead_letters, checkpointed past, and
    the events around it are projected and archived in one chain. A new ticket's row goes
    by COPY, whose refusals must be told apart from a database that is down just the same."""
    engine = create_engine(database)
    create_schema(engine)
    events = history(3, datetime(2026, 3, 2, 8, 0, tzinfo=UTC), prefix="Q")
    bad = events[1].ticket_id
    if refused == "a statement":
        original_write = Projection._write

        def write(self: Projection, conn: Any, staged: list[Any], present: Any, now: datetime) -> Any:
            if any(row["ticket_id"] == bad for row, _ in staged):
                conn.execute(text("SELECT :v"), {"v": "a\x00b"})  # PostgreSQL refuses NUL in text
            return original_write(self, conn, staged, present, now)

        monkeypatch.setattr(Projection, "_write", write)
    else:
        original_store = Projection._store
        value = "a\x00b" if refused.endswith("NUL") else "a\ud800b"

        def store(self: Projection, ticket: Any, now: datetime) -> Any:
            row, clocks = original_store(self, ticket, now)
            return ({**row, "subject": value} if ticket.ticket_id == bad else row), clocks

        monkeypatch.setattr(Projection, "_store", store)
    records = [Incoming(EVENTS, 0, offset, encode_event(e)) for offset, e in enumerate(events)]
    applied = apply_isolating(engine, Projection(load_policy()), records)
    refused = [r for r, e in zip(records, events, strict=True) if e.ticket_id == bad]
    assert applied == len(events) - len(refused)
    with engine.connect() as conn:
        letters = conn.execute(select(DEAD.c.offset, DEAD.c.reason_kind)).all()
        assert sorted(letters) == [(r.offset, "projection failed") for r in refused]
        assert conn.scalar(select(CHECKPOINTS.c.offset).where(CHECKPOINTS.c.topic == EVENTS)) == len(events) - 1
        assert {t for (t,) in conn.execute(select(TICKETS.c.ticket_id))} == {e.ticket_id for e in events} - {bad}
    assert verify_chain(engine) == len(events) - len(refused)


def test_alerts_and_the_open_queue_follow_running_clocks_only(database: str) -> None:
    """A ticket acknowledged late is breached history, not something to act on: no
    per-ticket alert, not counted as an open breach; one still unacknowledged is both."""
    filed_at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def ev(event_type: EventType, tid: str, at: datetime, **payload: object) -> Event:
        return new_event(event_type, tid, occurred_at=at, recorded_at=at, actor="test", payload=payload)

    events = [ev(EventType.TICKET_FILED, tid, filed_at, kind="assistance", channel="portal", member="m-1",
                 product="ent", subject="s") for tid in ("LATE", "WAITING")]
    events.append(ev(EventType.ACKNOWLEDGED, "LATE", filed_at + timedelta(hours=30)))
    engine = projected(database, events)
    now = filed_at + timedelta(days=3)
    alerts = ticket_alerts(engine, now, "http://x/{ticket_id}", timedelta(minutes=1), load_policy())
    assert [(a["labels"]["ticket_id"], a["labels"]["alertname"]) for a in alerts] == [("WAITING", "SLATicketBreached")]
    families = {m.name: m for m in ProjectionCollector(engine, now=lambda: now).collect()}
    gauge = {tuple(s.labels.values()): s.value for s in families["slaledger_open_tickets"].samples}
    assert gauge[("assistance", "breached")] == 1
    # Counters start at 0 for every known SLA and member (increase() misses a series born at 1).
    outcomes = {(s.labels["sla"], s.labels["outcome"], s.labels["member"]): s.value
                for s in families["slaledger_sla_outcomes"].samples}
    assert outcomes[("intake", "breached", "m-1")] == 0 and outcomes[("intake", "retracted", "m-1")] == 0
    letters = {s.labels["reason"]: s.value for s in families["slaledger_dead_lettered"].samples}
    assert letters["unreadable event"] == 0 and letters["projection failed"] == 0

    # pushed with a long life (a projector away for a while sends no false « résolu »), and
    # resolved at once when it leaves the set (WAITING acknowledged)
    import threading

    from projections.alerts import ALERT_TTL, run_alert_pusher

    posts: list[list[dict[str, Any]]] = []
    stop = threading.Event()

    def post(url: str, sent: list[dict[str, Any]]) -> None:
        posts.append(sent)
        if len(posts) == 1:
            with engine.begin() as conn:
                Projection(load_policy()).apply_batch(conn, [Incoming(EVENTS, 0, len(events),
                                                                      encode_event(ev(EventType.ACKNOWLEDGED,
                                                                                      "WAITING", now)))])
        else:
            stop.set()

    run_alert_pusher(engine, "http://am", "http://x/{ticket_id}", load_policy(), stop, interval=0.01,
                     now=lambda: now, post=post)
    (first,), (ended,) = posts
    assert first["labels"]["ticket_id"] == "WAITING"
    assert first["endsAt"] == (now + ALERT_TTL).isoformat().replace("+00:00", "Z")
    assert ended["labels"] == first["labels"] and ended["endsAt"] == now.isoformat().replace("+00:00", "Z")


def test_the_outcome_counter_never_goes_down(database: str) -> None:
    """Met on time, then moved to a product outside the convention: the intake clock is now
    excluded, but the met judgment stays counted (a counter that drops reads as a reset and
    inflates increase() over the burn-rate windows)."""
    engine = create_engine(database)
    create_schema(engine)
    filed_at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def ev(event_type: EventType, at: datetime, **payload: object) -> Event:
        return new_event(event_type, "MET", occurred_at=at, recorded_at=at, actor="test", payload=payload)

    def outcomes() -> dict[str, float]:
        family = next(m for m in ProjectionCollector(engine).collect() if m.name == "slaledger_sla_outcomes")
        return {s.labels["outcome"]: s.value for s in family.samples if s.labels["sla"] == "intake"}

    projection = Projection(load_policy())
    events = [ev(EventType.TICKET_FILED, filed_at, kind="assistance", channel="portal", member="m-1", product="ent",
                 subject="s"),
              ev(EventType.ACKNOWLEDGED, filed_at + timedelta(hours=1)),
              ev(EventType.RECLASSIFIED, filed_at + timedelta(hours=2), product="local-trust-mpe")]
    with engine.begin() as conn:
        projection.apply_batch(conn, [Incoming(EVENTS, 0, i, encode_event(e)) for i, e in enumerate(events[:2])])
    assert outcomes()["met"] == 1
    with engine.begin() as conn:
        projection.apply_batch(conn, [Incoming(EVENTS, 0, 2, encode_event(events[2]))])
    assert outcomes() == {"met": 1, "excluded": 1, "breached": 0, "retracted": 0}


def test_the_running_totals_are_the_history_recounted(database: str) -> None:
    """The metrics a scrape reads from ``metric_totals`` (added to batch by batch) are what
    the whole history says (``totals.recount``, as the migration fills them): breaches and
    retractions per member, judgments, events per type, dead letters, time to acknowledge;
    a batch delivered twice adds nothing."""
    from projections import totals
    from sla.events import sla_fact_id

    engine = create_engine(database)
    create_schema(engine)
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    events = history(24, start, prefix="T")
    for tid, at in (("T-0002", start + timedelta(days=2)), ("T-0005", start + timedelta(days=2))):
        deadline = start + timedelta(hours=4)
        payload = {"sla": "intake", "deadline": deadline, "policy_version": "convention-2026.1",
                   "explanation": "Échéance dépassée."}
        breach = new_event(EventType.SLA_BREACHED, tid, occurred_at=at, recorded_at=at, actor="slaledger/sla-clock",
                           payload=payload, event_id=sla_fact_id(EventType.SLA_BREACHED, tid, "intake", deadline,
                                                                 "convention-2026.1"))
        events.append(breach)
    events.append(new_event(EventType.SLA_BREACH_RETRACTED, "T-0005", occurred_at=start + timedelta(days=3),
                            recorded_at=start + timedelta(days=3), actor="slaledger/sla-clock",
                            payload={**payload, "breach_event_id": str(breach.event_id)}))
    records = [Incoming(EVENTS, 0, i, encode_event(e)) for i, e in enumerate(events)]
    letter = json.dumps({"reason": "unreadable event: not valid JSON", "origin": {}, "dead_lettered_at": None})
    records.append(Incoming(DEAD_LETTERS, 0, 0, letter.encode()))
    projection = Projection(load_policy())
    for start_at in range(0, len(records), 7):
        with engine.begin() as conn:
            projection.apply_batch(conn, records[start_at:start_at + 7])
    with engine.begin() as conn:  # delivered again: nothing counted twice
        projection.apply_batch(conn, records)
    with engine.connect() as conn:
        kept, recounted = totals.read(conn), totals.recount(conn)
    assert kept.keys() == recounted.keys()
    assert kept == pytest.approx(recounted)
    assert kept[totals.key(totals.OUTCOME, "intake", "retracted", "m-2")] == 1
    assert kept[totals.key(totals.DEAD_LETTERS, "unreadable event")] == 1
    assert kept[totals.key(totals.ACK_COUNT)] == 16
