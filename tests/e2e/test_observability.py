"""The monitoring chain with the real tools: the dev stack on PostgreSQL, a real Prometheus
scraping it with the project's rules, a real Alertmanager with the project's configuration.
A ticket under a 2-second SLA breaches; the alerts reach Alertmanager; every PromQL
expression of the rules and dashboards runs on that Prometheus, and every SQL panel query
runs on the projection as Grafana's read-only role."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from projections.roles import PASSWORD_FILES, role_names
from slaledger.brokers.process import free_port
from tests.conftest import end_group, system_tool
from tests.integration.conftest import api, database, tiny_policy, wait_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
RULES = sorted((INFRA / "prometheus" / "rules").glob("*.rules.yml"))
TOKEN = "slt_obs_" + "y" * 24


class Process:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def alive(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            end_group(self.proc, 20)


def get(url: str) -> Any:
    status, body = api("GET", url, timeout=10)
    assert status == 200, (url, status, body)
    return body


def reachable(url: str) -> bool:
    try:
        return api("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


@pytest.fixture
def stack(tmp_path: Path, database: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    prometheus_bin = system_tool("prometheus", package="prometheus")
    alertmanager_bin = system_tool("prometheus-alertmanager", package="prometheus-alertmanager")
    am_port, prom_port, dev_port = free_port(), free_port(), free_port()
    started: list[Process] = []
    try:
        from tests.infra.test_alertmanager import generate

        alertmanager = Process([alertmanager_bin, f"--config.file={generate(tmp_path / 'am-config')}",
                                f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                "--cluster.listen-address="], tmp_path / "alertmanager.log")
        started.append(alertmanager)
        dev = Process([sys.executable, "-m", "slaledger.cli", "dev", "--port", str(dev_port),
                       "--data-dir", str(tmp_path / "data"), "--policy", str(tiny_policy(tmp_path, 2))],
                      tmp_path / "dev.log",
                      env={**os.environ, "SLALEDGER_DEV_TOKEN": TOKEN, "SLALEDGER_DATABASE_URL": database,
                           "SLALEDGER_ALERTMANAGER_URL": f"http://127.0.0.1:{am_port}",
                           "SLALEDGER_ALERT_INTERVAL": "1"})
        started.append(dev)
        # The production configuration, pointed at this machine: same jobs, same rules.
        config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(f) for f in RULES]
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{am_port}"]}]
        (tmp_path / "token").write_text(TOKEN)
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        worker = jobs["slaledger-worker"]
        worker["authorization"]["credentials_file"] = str(tmp_path / "token")
        del worker["dns_sd_configs"]
        worker["static_configs"] = [{"targets": [f"127.0.0.1:{dev_port}"]}]
        del jobs["slaledger-projector"]  # dev mode serves the projection's metrics on the worker's port
        jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
        jobs["alertmanager"]["static_configs"] = [{"targets": [f"127.0.0.1:{am_port}"]}]
        config["scrape_configs"] = list(jobs.values())
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = Process([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                              f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                              f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prometheus.log")
        started.append(prometheus)
        wait_for(lambda: alertmanager.alive() and reachable(f"http://127.0.0.1:{am_port}/-/ready"), 30,
                 what="alertmanager ready")
        wait_for(lambda: prometheus.alive() and reachable(f"http://127.0.0.1:{prom_port}/-/ready"), 30,
                 what="prometheus ready")
        wait_for(lambda: dev.alive() and reachable(f"http://127.0.0.1:{dev_port}/readyz"), 90, what="dev ready")
        yield {"am": f"http://127.0.0.1:{am_port}", "prom": f"http://127.0.0.1:{prom_port}",
               "dev": f"http://127.0.0.1:{dev_port}", "database": database, "tmp": tmp_path}
    finally:
        for process in reversed(started):
            process.stop()


def alerts(am: str, name: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"filter": f'alertname="{name}"'})
    return list(get(f"{am}/api/v2/alerts?{query}"))


def prom_query(prom: str, expr: str) -> dict[str, Any]:
    status, body = api("GET", f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10)
    assert status == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def promql_of_rules_and_panels() -> list[str]:
    exprs = [rule["expr"] for f in RULES for group in yaml.safe_load(f.read_text())["groups"]
             for rule in group["rules"]]
    for board in sorted((INFRA / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            exprs += [t["expr"] for t in panel["targets"] if t["datasource"]["type"] == "prometheus"]
    return exprs


def sql_of_panels() -> list[tuple[str, str]]:
    queries = []
    for board in sorted((INFRA / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            queries += [(panel["title"], t["rawSql"]) for t in panel["targets"] if "rawSql" in t]
    return queries


def grafana_sql(sql: str, start: datetime, end: datetime, members: list[str]) -> str:
    """Expand the macros and ``$member`` (every member: "All") as Grafana's PostgreSQL datasource does."""
    return (sql.replace("$__timeFrom()", f"'{start.isoformat()}'")
               .replace("$__timeTo()", f"'{end.isoformat()}'")
               .replace("$member", ", ".join(f"'{m}'" for m in members)))


def member_variable_query() -> str:
    queries = {v["query"] for board in sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
               for v in json.loads(board.read_text()).get("templating", {}).get("list", []) if v["name"] == "member"}
    assert len(queries) == 1, queries
    return queries.pop()


def test_a_breach_reaches_alertmanager_and_every_query_runs(stack: dict[str, Any]) -> None:
    am, prom, dev = stack["am"], stack["prom"], stack["dev"]
    status, body = api("POST", f"{dev}/api/tickets", {
        "kind": "incident", "channel": "portal", "member": "commune-de-blois", "product": "parapheur",
        "subject": "Parapheur inaccessible"}, token=TOKEN)
    assert status == 201, body
    ticket_id = body["ticket"]["id"]

    # The per-ticket alert, pushed by the projector, names the ticket and links to its page.
    pushed = wait_for(lambda: [a for a in alerts(am, "SLATicketBreached")
                               if a["labels"].get("ticket_id") == ticket_id], 60, what="per-ticket breach alert")
    labels, annotations = pushed[0]["labels"], pushed[0]["annotations"]
    assert labels["sla"] == "intake" and labels["member"] == "commune-de-blois" and labels["severity"] == "ticket"
    assert annotations["link"].endswith(f"/tickets/{ticket_id}")
    assert "dépassé" in annotations["summary"]
    assert [r["name"] for r in pushed[0]["receivers"]] == ["support-team"]

    assert annotations["runbook"] == "slaticketbreached"

    # The aggregate alert, evaluated by Prometheus from the scraped gauges (after its `for: 1m`),
    # reaches Alertmanager, muted by the per-ticket alert of its kind: nobody gets it twice.
    fired = wait_for(lambda: alerts(am, "SLABreachedTicketsOpen"), 120, what="Prometheus alert in Alertmanager")
    assert fired[0]["labels"]["kind"] == "incident"
    assert fired[0]["labels"]["severity"] == "ticket"
    assert fired[0]["annotations"]["runbook"] == "slabreachedticketsopen"
    assert fired[0]["status"]["state"] == "suppressed" and fired[0]["status"]["inhibitedBy"]

    # Inhibition: the same ticket's at-risk alert is muted by its breach; another ticket's is not.
    now = datetime.now(UTC)
    at_risk = [{"labels": {"alertname": "SLATicketAtRisk", "severity": "ticket", "ticket_id": tid, "sla": "intake",
                           "member": "commune-de-blois", "kind": "incident"},
                "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}
               for tid in (ticket_id, "SL-ZZZZZZZZZZ")]
    status, _ = api("POST", f"{am}/api/v2/alerts", at_risk)
    assert status == 200

    def states() -> dict[str, str]:
        return {a["labels"]["ticket_id"]: a["status"]["state"] for a in alerts(am, "SLATicketAtRisk")}

    wait_for(lambda: states() == {ticket_id: "suppressed", "SL-ZZZZZZZZZZ": "active"}, 30, what="inhibition")

    # Every PromQL expression of the rules and the dashboards runs on the real Prometheus.
    exprs = promql_of_rules_and_panels()
    assert len(exprs) > 40
    for expr in exprs:
        prom_query(prom, expr.replace("$__rate_interval", "1m").replace("$member", "commune-de-blois"))
    breached = prom_query(prom, 'sum(slaledger_open_tickets{sla_state="breached"})')
    assert breached["result"] and float(breached["result"][0]["value"][1]) >= 1

    # Every SQL panel query runs on the projection, as Grafana's read-only role.
    # (the roles and grants of the migration job, under names of this test's own: roles are
    # the server's, shared with the other tests' databases)
    url = stack["database"]
    passwords = stack["tmp"] / "db-passwords"
    passwords.mkdir()
    for secret in PASSWORD_FILES.values():
        (passwords / secret).write_text("a-test-password-of-this-role")
    prefix = f"o{os.getpid()}_"
    grants = subprocess.run([sys.executable, "-m", "slaledger.cli", "db", "migrate", "--database", url,
                             "--passwords", str(passwords), "--role-prefix", prefix],
                            capture_output=True, text=True, timeout=120, check=False)
    assert grants.returncode == 0, grants.stderr
    readonly = create_engine(re.sub(r"://postgres@", f"://{role_names(prefix)['grafana']}@", url))
    start, end = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC) + timedelta(days=1)
    rows: dict[str, list[Any]] = {}
    try:
        with readonly.connect() as conn:
            members = [m for (m,) in conn.execute(text(member_variable_query()))]
            assert members == ["commune-de-blois"]
            for title, sql in sql_of_panels():
                rows[title] = list(conn.execute(text(grafana_sql(sql, start, end, members))))
                none = conn.execute(text(grafana_sql(sql, start, end, ["commune-de-tours"]))).all()
                assert "member IN" not in sql or not none, title  # the variable filters
            with pytest.raises(Exception, match="permission denied"):
                conn.execute(text("SELECT * FROM api_tokens"))
    finally:
        readonly.dispose()
        superuser = create_engine(url)
        with superuser.begin() as conn:
            names = ", ".join(f'"{n}"' for n in role_names(prefix).values())
            # the running stack keeps its tables: back to the superuser, the grants dropped
            conn.execute(text(f'REASSIGN OWNED BY "{role_names(prefix)["owner"]}" TO postgres'))
            conn.execute(text(f"DROP OWNED BY {names}"))
            conn.execute(text(f"DROP ROLE {names}"))
        superuser.dispose()
    assert len(rows) >= 7
    assert [r[1] for r in rows["Dépassées et toujours ouvertes"]] == [ticket_id]
    assert [r[1] for r in rows["Incidents ouverts (sans heure de rétablissement en premier)"]] == [ticket_id]


def test_prometheus_scrapes_the_projector_with_the_staff_token(tmp_path: Path) -> None:
    """The production job of the projector (``slaledger project``, its own /metrics): the real
    Prometheus scrapes it with the token file; the same job without the token is refused."""
    from projections.migrate import create_schema
    from projections.tokens import ensure_token
    from slaledger.brokers.embedded import EmbeddedBroker
    from streams.topics import create_topics

    prometheus_bin = system_tool("prometheus", package="prometheus")
    sqlite = f"sqlite:///{tmp_path / 'slaledger.db'}"
    engine = create_engine(sqlite)
    create_schema(engine)
    ensure_token(engine, TOKEN, "auditor", "prometheus")
    metrics_port, prom_port = free_port(), free_port()
    (tmp_path / "token").write_text(TOKEN)
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config.pop("rule_files")
    config.pop("alerting")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "slaledger-projector"]
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    anonymous = {k: v for k, v in job.items() if k != "authorization"} | {"job_name": "anonymous"}
    config["scrape_configs"] = [job, anonymous]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    started: list[Process] = []
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        create_topics(broker.bootstrap, 4)
        try:
            started.append(Process([sys.executable, "-m", "slaledger.cli", "project", "--metrics-port",
                                    str(metrics_port)], tmp_path / "projector.log",
                                   env={**os.environ, "SLALEDGER_BROKER_URL": broker.url, "SLALEDGER_EMBEDDED": "1",
                                        "SLALEDGER_DATABASE_URL": sqlite, "SLALEDGER_DATA_DIR": str(tmp_path)}))
            started.append(Process([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prometheus.log"))
            prom = f"http://127.0.0.1:{prom_port}"

            def up() -> dict[str, str]:
                result = prom_query(prom, "up") if reachable(f"{prom}/-/ready") else {"result": []}
                return {r["metric"]["job"]: r["value"][1] for r in result["result"]}

            assert all(p.alive() for p in started)
            wait_for(lambda: up() == {"slaledger-projector": "1", "anonymous": "0"}, 60, what="both jobs scraped")
            build = prom_query(prom, 'slaledger_build_info{job="slaledger-projector"}')["result"]
            assert [r["value"][1] for r in build] == ["1"]  # the projection's own series, scraped
        finally:
            for process in reversed(started):
                process.stop()
