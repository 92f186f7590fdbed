"""One compliance figure everywhere (issue #28): one PostgreSQL projection, filled by the
projector's own code, and one real Prometheus scraping the projector's collector over it with
the project's recording rules. The monthly statement, the Grafana SQL panels (run as Grafana
runs them) and the recording rules give the same percentage per SLA, per member and per month,
and the same error budget; the member whose budget is spent gets the alert.

The data: October and November 2026, two members, intake and the administrative week; Blois'
November intake is the issue's case (18 met, 1 breached, 1 retracted: 94.7 %, not 95 %), a
request met on Saturday 31 October but due on Monday 2 November counts in October (the month of
its verdict, not of its deadline), a breach after a pause is judged at the moved deadline."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import Engine, text

from projections import compliance, monthly
from projections.metrics import ProjectionCollector
from sla.events import Event, EventType
from sla.policy import Policy
from slaledger.brokers.process import free_port
from slaledger.settings import load_policy
from tests.conftest import at, ev, filed, projected, system_tool
from tests.e2e.test_observability import Process, grafana_sql, reachable, sql_of_panels
from tests.integration.conftest import api, database, wait_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

INFRA = Path(__file__).resolve().parents[2] / "infra"
BLOIS, LYCEE = "commune-de-blois", "lycee-descartes"
NAMES = {BLOIS: "Commune de Blois", LYCEE: "Lycée Descartes"}
MONTHS = (monthly.Month(2026, 10), monthly.Month(2026, 11))
ISSUED = at("2026-12-01T06:00:00+01:00")
NOVEMBER_WORKING_DAYS = (2, 3, 4, 5, 6, 9, 10, 12, 13, 16, 17, 18, 19, 20, 23, 24, 25, 26)  # the 11th is a holiday


def late(ticket_id: str, member: str, filed_at: str, deadline: str, acknowledged: str, **ack: Any) -> list[Event]:
    """Filed, the breach fact the timer appends once the deadline passed, then the acknowledgement."""
    return [filed(filed_at, ticket_id=ticket_id, member=member),
            ev(EventType.SLA_BREACHED, deadline, ticket_id, recorded=at(deadline) + timedelta(seconds=1),
               sla="intake", deadline=at(deadline), policy_version="convention-2026.1",
               explanation="Rien n'était enregistré à l'échéance."),
            ev(EventType.ACKNOWLEDGED, acknowledged, ticket_id, **ack)]


def log() -> list[Event]:
    events: list[Event] = []
    # Blois, intake in November: 18 met, 1 breached, 1 retracted
    for n, day in enumerate(NOVEMBER_WORKING_DAYS):
        tid = f"B-OK-{n:02d}"
        events += [filed(f"2026-11-{day:02d}T09:00:00+01:00", ticket_id=tid, member=BLOIS),
                   ev(EventType.ACKNOWLEDGED, f"2026-11-{day:02d}T10:00:00+01:00", tid)]
    events += [*late("B-LATE", BLOIS, "2026-11-27T09:00:00+01:00", "2026-11-27T13:00:00+01:00",
                     "2026-11-27T15:00:00+01:00"),
               *late("B-RETRACT", BLOIS, "2026-11-30T09:00:00+01:00", "2026-11-30T13:00:00+01:00",
                     "2026-11-30T12:00:00+01:00", recorded="2026-11-30T14:00:00+01:00")]
    # Blois, the administrative week (by e-mail: no intake clock): two met, one breached after a pause
    for tid, day in (("B-ADM-1", 2), ("B-ADM-2", 9)):
        events += [filed(f"2026-11-{day:02d}T10:00:00+01:00", ticket_id=tid, member=BLOIS, kind="administrative",
                         channel="email"),
                   ev(EventType.CUSTOMER_INFORMED, f"2026-11-{day + 3:02d}T10:00:00+01:00", tid, message="Réponse",
                      answer=True)]
    events += [filed("2026-11-09T09:00:00+01:00", ticket_id="B-ADM-LATE", member=BLOIS, kind="administrative",
                     channel="email"),
               ev(EventType.WAITING_FOR_CUSTOMER, "2026-11-10T10:00:00+01:00", "B-ADM-LATE"),
               ev(EventType.CUSTOMER_RESPONDED, "2026-11-10T16:00:00+01:00", "B-ADM-LATE", elements_complete=False),
               ev(EventType.CUSTOMER_INFORMED, "2026-11-16T16:00:00+01:00", "B-ADM-LATE", message="Réponse",
                  answer=True)]
    # Lycée, intake: three met in October, one breached on Friday 30 October (due 19:00)
    for tid, day in (("L-OK-1", 5), ("L-OK-2", 12), ("L-OK-3", 19)):
        events += [filed(f"2026-10-{day:02d}T09:00:00+02:00", ticket_id=tid, member=LYCEE),
                   ev(EventType.ACKNOWLEDGED, f"2026-10-{day:02d}T09:30:00+02:00", tid)]
    events += [*late("L-LATE", LYCEE, "2026-10-30T15:00:00+01:00", "2026-10-30T19:00:00+01:00",
                     "2026-11-02T09:00:00+01:00"),
               # filed Friday after hours, due Monday 2 November 12:00, met on Saturday 31 October
               filed("2026-10-30T17:00:00+01:00", ticket_id="L-WEEKEND", member=LYCEE),
               ev(EventType.ACKNOWLEDGED, "2026-10-31T10:00:00+01:00", "L-WEEKEND"),
               # November: one met, one breached, one outside the commitments
               filed("2026-11-03T09:00:00+01:00", ticket_id="L-OK-4", member=LYCEE),
               ev(EventType.ACKNOWLEDGED, "2026-11-03T09:30:00+01:00", "L-OK-4"),
               *late("L-LATE-2", LYCEE, "2026-11-04T09:00:00+01:00", "2026-11-04T13:00:00+01:00",
                     "2026-11-05T09:00:00+01:00"),
               filed("2026-11-12T09:00:00+01:00", ticket_id="L-MPE", member=LYCEE, product="local-trust-mpe")]
    return events


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:  # noqa: F811
    engine = projected(database, log())
    yield engine
    engine.dispose()


@pytest.fixture
def prometheus(engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real Prometheus scraping the projector's collector (``now`` set by the test) every
    second, with the compliance recording rules evaluated every second."""
    binary = system_tool("prometheus", package="prometheus")
    now = [at("2026-10-15T12:00:00+02:00")]
    registry = CollectorRegistry()
    registry.register(ProjectionCollector(engine, now=lambda: now[0], policy=load_policy()))
    metrics_port, prom_port = free_port(), free_port()
    server, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    rules = yaml.safe_load((INFRA / "prometheus" / "rules" / "compliance.rules.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "compliance.rules.yml").write_text(yaml.safe_dump(rules, allow_unicode=True))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "compliance.rules.yml")],
        "scrape_configs": [{"job_name": "slaledger-projector",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}]}))
    process = Process([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                      tmp_path / "prometheus.log")
    try:
        wait_for(lambda: process.alive() and reachable(f"http://127.0.0.1:{prom_port}/-/ready"), 30,
                 what="prometheus ready")
        yield {"url": f"http://127.0.0.1:{prom_port}", "now": now}
    finally:
        process.stop()
        server.shutdown()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    status, body = api("GET", f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10)
    assert status == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def recorded(prom: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"][label] for label in labels): float(r["value"][1]) for r in query(prom, name)}


def statements(engine: Engine, policy: Policy, month: monthly.Month) -> dict[tuple[str, str], dict[str, Any]]:
    """(sla, member) → the statement's summary line, for the clocks it counts."""
    out = {}
    for member, name in NAMES.items():
        doc = monthly.build(engine, policy, month, member=member, member_name=name, generated_at=ISSUED)
        out.update({(s["sla"], member): s for s in doc["summary"] if s["counted"]})
    return out


def panel_rows(engine: Engine, title: str) -> list[Any]:
    (sql,) = [sql for t, sql in sql_of_panels() if t == title]
    tz = load_policy().versions[-1].tz
    start, end = MONTHS[0].bounds(tz)[0], MONTHS[-1].bounds(tz)[1]
    with engine.connect() as conn:
        return list(conn.execute(text(grafana_sql(sql, start, end, list(NAMES)))))


def test_statement_panels_and_recording_rules_give_the_same_compliance(engine: Engine,
                                                                       prometheus: dict[str, Any]) -> None:
    policy = load_policy()
    tz = policy.versions[-1].tz
    objectives = compliance.objectives(policy)
    # the Grafana panels, as Grafana runs them: (month, sla, member) → counts and percentage
    by_member = {(month, *group.split(" — ")): (met, breached, retracted, excluded, rate)
                 for month, group, met, breached, retracted, excluded, rate
                 in panel_rows(engine, "Conformité par SLA et par adhérent")}
    by_sla = {(month, sla): (met, breached, None if rate is None else float(rate))
              for month, sla, met, breached, _, _, rate in panel_rows(engine, "Conformité par SLA")}
    seen = set()
    for month in MONTHS:
        lines = statements(engine, policy, month)
        # 1. the statement and the panels: the same counts and percentage per SLA and member
        for (sla, member), line in lines.items():
            met, breached, retracted, excluded, rate = by_member.pop((str(month), sla, member))
            assert (met, breached, retracted, excluded) == (line["met"], line["breached"], line["retracted"],
                                                            line["excluded"]), (month, sla, member)
            assert (None if rate is None else float(rate)) == line["rate_percent"], (month, sla, member)
        per_sla: dict[str, list[int]] = {}
        for (sla, _), line in lines.items():
            per_sla.setdefault(sla, [0, 0])
            per_sla[sla][0] += line["met"]
            per_sla[sla][1] += line["breached"]
        for sla, (met, breached) in per_sla.items():
            rate = compliance.rate(met, breached)
            assert by_sla.pop((str(month), sla)) == (
                met, breached, None if rate is None else round(100 * rate, 1)), (month, sla)

        # 2. the recording rules over the projector's gauge, this month being ``month``
        prometheus["now"][0] = month.bounds(tz)[0] + timedelta(days=14, hours=12)
        judged = {key: line for key, line in lines.items() if line["rate"] is not None}
        expected = {key: round(100 * line["rate"], 1) for key, line in judged.items()}

        def member_rates() -> dict[tuple[str, ...], float]:
            return {k: round(100 * v, 1) for k, v in recorded(prometheus["url"],
                    "slaledger:sla_compliance:month_by_member", "sla", "member").items()}

        wait_for(lambda: member_rates() == expected, 60,  # noqa: B023
                 what=f"recording rules for {month} equal to the statements ({expected})")
        sla_rates = recorded(prometheus["url"], "slaledger:sla_compliance:month", "sla")
        assert {sla: round(100 * v, 1) for (sla,), v in sla_rates.items()} == {
            sla: round(100 * compliance.rate(m, b), 1) for sla, (m, b) in per_sla.items() if m + b}  # type: ignore[operator]
        budgets = recorded(prometheus["url"], "slaledger:sla_error_budget_left:month_by_member", "sla", "member")
        assert budgets.keys() == judged.keys()
        for (sla, member), line in judged.items():
            assert budgets[(sla, member)] == pytest.approx(
                compliance.budget_left(line["met"], line["breached"], objectives[sla]), abs=1e-9)
        seen |= {(str(month), *key) for key in judged}

    assert not by_member and not by_sla  # every panel row is a statement's line
    # the issue's case: 94.7 % everywhere, the objective missed, the budget overspent
    nov = statements(engine, policy, MONTHS[1])[("intake", BLOIS)]
    assert (nov["met"], nov["breached"], nov["retracted"], nov["rate_percent"]) == (18, 1, 1, 94.7)
    assert ("2026-11", "intake", BLOIS) in seen
    # the clock met on Saturday 31 October and due on 2 November is October's
    oct_lycee = statements(engine, policy, MONTHS[0])[("intake", LYCEE)]
    assert (oct_lycee["met"], oct_lycee["breached"]) == (4, 1)

    # the member whose budget is spent gets the ticket-severity alert (pending for its `for:`),
    # without the `member` label that would also mail it to the member's referent
    def budget_alerts() -> set[tuple[str, str]]:
        status, body = api("GET", f"{prometheus['url']}/api/v1/alerts", timeout=10)
        assert status == 200
        return {(a["labels"]["sla"], a["labels"]["budget_member"]) for a in body["data"]["alerts"]
                if a["labels"]["alertname"] == "SLAMemberErrorBudgetSpent" and a["labels"]["severity"] == "ticket"}

    spent = {key for key, line in statements(engine, policy, MONTHS[1]).items()
             if line["rate"] is not None and compliance.budget_left(line["met"], line["breached"],
                                                                    objectives[key[0]]) <= 0}  # type: ignore[operator]
    assert ("intake", BLOIS) in spent and ("administrative_answer", BLOIS) in spent
    wait_for(lambda: budget_alerts() == spent, 60, what=f"budget alerts {spent}")
    fired = query(prometheus["url"], 'ALERTS{alertname="SLAMemberErrorBudgetSpent"}')
    assert fired and all("member" not in a["metric"] for a in fired)


def test_the_month_of_a_verdict_not_of_its_deadline(engine: Engine) -> None:
    """The stored ``decided_at`` is the statement's: a breach after a pause at the moved
    deadline, a met clock at its stop, an excluded one at its filing."""
    with engine.connect() as conn:
        decided = dict(conn.execute(text("SELECT ticket_id || '/' || sla, decided_at FROM sla_clocks")).all())
    assert decided["B-ADM-LATE/administrative_answer"] == at("2026-11-16T15:00:00+01:00")
    assert decided["L-WEEKEND/intake"] == at("2026-10-31T10:00:00+01:00")
    assert decided["L-MPE/intake"] == at("2026-11-12T09:00:00+01:00")
    assert decided["B-RETRACT/intake"] == at("2026-11-30T12:00:00+01:00")
    assert isinstance(decided["B-LATE/intake"], datetime)
