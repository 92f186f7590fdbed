"""Grafana dashboards as code (grafana-foundation-sdk, the build for Grafana 11.6 — the image
pinned in docker-compose.yml).

    python infra/grafana/dashboards.py          # regenerate infra/grafana/dashboards/*.json
    python infra/grafana/dashboards.py --check  # exit 1 if the committed JSON is stale

Monthly compliance is a SQL question (exact, per calendar month in Europe/Paris, auditable)
with the statement's definition (``projections.compliance`` writes that SQL); this month's
error budget, rates, distributions and pipeline health come from Prometheus. Every SQL query and every
PromQL expression here is run against a real PostgreSQL projection and a real Prometheus by
tests/e2e/test_observability.py. SQL queries use only the ``$__timeFrom()``/``$__timeTo()``
macros and the ``$member`` variable, which that test expands the way Grafana does.

The member's dashboards have a ``$member`` variable (every member by default): SQL panels
filter on it, and so do the Prometheus panels on ``slaledger_sla_outcomes_total``, the one
metric with a member label. Ticket ids in tables link to the web view's ``/tickets/{id}``,
relative: Grafana and the web view share one origin behind the reverse proxy (``proxy``
profile of docker-compose.yml, Grafana under ``/grafana/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from projections import compliance

OUT = Path(__file__).parent / "dashboards"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid="postgres")
OPEN = "t.status NOT IN ('resolved', 'closed')"
# A ticket id cell opens the ticket's page in the web view.
TICKET_LINK = [DynamicConfigValue("links", [{"title": "Ouvrir la demande", "url": "/tickets/${__value.raw}"}])]
# The contractual intake verdict, with the statement's definition (projections.compliance).
INTAKE = 'sla="intake",member=~"$member"'


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL target for Grafana's PostgreSQL datasource (the SDK has no builder for it)."""

    def __init__(self, sql: str, ref_id: str = "A", fmt: str = "table") -> None:
        self.sql, self.ref_id, self.fmt = sql, ref_id, fmt

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
                "editorMode": "code", "format": self.fmt, "rawQuery": True, "rawSql": self.sql}


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, sql: str, ref_id: str = "A", fmt: str = "table") -> None:
        self.query = SqlQuery(" ".join(sql.split()), ref_id, fmt)

    def build(self) -> cogvariants.Dataquery:
        return self.query


def prom(expr: str, legend: str = "", ref_id: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(PROMETHEUS)
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query


def sql_table(title: str, sql: str, description: str, height: int = 10, width: int = 24) -> table.Panel:
    panel = (table.Panel().title(title).description(description).datasource(POSTGRES)
             .with_target(Sql(sql)).height(height).span(width).filterable(True))
    return panel.override_by_name("Ticket", TICKET_LINK) if '"Ticket"' in sql else panel


def member_variable() -> dashboard.QueryVariable:
    """Members as the projection knows them; several or all may be chosen."""
    return (dashboard.QueryVariable("member").label("Adhérent").datasource(POSTGRES)
            .query("SELECT DISTINCT member FROM tickets ORDER BY 1").refresh(VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
            .current(VariableOption(selected=True, text=["All"], value=["$__all"])))


def base(uid: str, title: str, description: str, tags: list[str], time_from: str = "now-24h",
         members: bool = True) -> dashboard.Dashboard:
    board = (dashboard.Dashboard(title).uid(uid).description(description).tags(["slaledger", *tags])
             .timezone("Europe/Paris").time(time_from, "now").refresh("30s"))
    return board.with_variable(member_variable()) if members else board


def support_queue() -> dashboard.Dashboard:
    at_risk = f"""
        SELECT c.deadline AS "Échéance", c.ticket_id AS "Ticket", t.member AS "Adhérent", t.kind AS "Type",
               c.sla AS "SLA", t.subject AS "Objet", c.explanation AS "Explication"
        FROM sla_clocks c JOIN tickets t ON t.ticket_id = c.ticket_id
        WHERE {OPEN} AND t.member IN ($member)
              AND c.status = 'running' AND c.warning_at <= now() AND c.deadline > now()
        ORDER BY c.deadline"""
    breached = f"""
        SELECT c.deadline AS "Échéance dépassée", c.ticket_id AS "Ticket", t.member AS "Adhérent",
               t.kind AS "Type", c.sla AS "SLA", t.status AS "État", t.subject AS "Objet",
               c.explanation AS "Explication"
        FROM sla_clocks c JOIN tickets t ON t.ticket_id = c.ticket_id
        WHERE {OPEN} AND t.member IN ($member) AND c.stopped_at IS NULL
              AND (c.status = 'breached' OR (c.status = 'running' AND c.deadline <= now()))
        ORDER BY c.deadline"""
    running = f"""
        SELECT c.deadline AS "Échéance", c.ticket_id AS "Ticket", t.member AS "Adhérent", t.kind AS "Type",
               c.sla AS "SLA", c.status AS "Horloge", t.subject AS "Objet"
        FROM sla_clocks c JOIN tickets t ON t.ticket_id = c.ticket_id
        WHERE {OPEN} AND t.member IN ($member) AND c.status IN ('running', 'paused')
        ORDER BY c.status DESC, c.deadline NULLS LAST
        LIMIT 500"""
    return (base("slaledger-support-queue", "File du support",
                 "Demandes ouvertes : à risque (75 % du délai) triées par échéance, dépassées et toujours ouvertes.",
                 ["support"])
            .with_panel(stat.Panel().title("À risque").span(6).height(4).with_target(
                prom('sum(slaledger_open_tickets{sla_state="at_risk"})', instant=True)))
            .with_panel(stat.Panel().title("Dépassées, ouvertes").span(6).height(4).with_target(
                prom('sum(slaledger_open_tickets{sla_state="breached"})', instant=True)))
            .with_panel(stat.Panel().title("En cours").span(6).height(4).with_target(
                prom('sum(slaledger_open_tickets{sla_state=~"running|paused"})', instant=True)))
            .with_panel(stat.Panel().title("Prochaine échéance").span(6).height(4).unit("dateTimeFromNow")
                        .with_target(prom("min(slaledger_sla_earliest_deadline_timestamp_seconds) * 1000",
                                          instant=True)))
            .with_panel(sql_table("À risque — triées par échéance", at_risk,
                                  "Horloges à 75 % ou plus de leur délai, échéance non atteinte."))
            .with_panel(sql_table("Dépassées et toujours ouvertes", breached,
                                  "Échéance dépassée, demande ni résolue ni close."))
            .with_panel(sql_table("Toutes les horloges en cours", running,
                                  "Horloges courantes et en pause (attente de l'adhérent).", height=12)))


def monthly_compliance() -> dashboard.Dashboard:
    """The statement's compliance (``projections.compliance``): met / (met + breached) per
    calendar month of the verdict, and this month's error budget (recording rules)."""
    per_sla_and_member = compliance.sql_by_month("c.sla || ' — ' || c.member", "SLA — adhérent")
    breaches = """
        SELECT c.decided_at AS "Échéance dépassée", c.ticket_id AS "Ticket", c.member AS "Adhérent", c.sla AS "SLA",
               c.policy_version AS "Politique", c.explanation AS "Explication"
        FROM sla_clocks c
        WHERE c.status = 'breached' AND c.member IN ($member)
          AND c.decided_at >= $__timeFrom() AND c.decided_at < $__timeTo()
        ORDER BY c.decided_at DESC"""
    about = ("1 − manquements / ((1 − objectif) × engagements jugés), objectif de chaque SLA selon la politique : "
             "100 % sans manquement, 0 % quand les manquements du mois atteignent ce que l'objectif permet, "
             "négatif au-delà (objectif manqué).")

    def budget(title: str, expr: str, legend: str, width: int) -> bargauge.Panel:
        return (bargauge.Panel().title(title).description(about).span(width).height(8).unit("percentunit")
                .min(-1).max(1).with_target(prom(expr, legend=legend, instant=True)))

    return (base("slaledger-monthly-compliance", "Conformité mensuelle",
                 "Taux de respect = respectés / (respectés + manquements), comme le relevé mensuel : un engagement "
                 "compte dans le mois civil (Europe/Paris) où son verdict est acquis ; manquements retirés et hors "
                 "engagement à part.",
                 ["sla", "contrat"], time_from="now-6M/M")
            .with_panel(budget("Budget d'erreur restant ce mois-ci, par SLA", "slaledger:sla_error_budget_left:month",
                               "{{sla}}", 12))
            .with_panel(budget("Budget d'erreur restant ce mois-ci, par SLA et par adhérent",
                               'slaledger:sla_error_budget_left:month_by_member{member=~"$member"}',
                               "{{sla}} — {{member}}", 12))
            .with_panel(sql_table("Conformité par SLA", compliance.sql_by_month("c.sla", "SLA"),
                                  "Engagements respectés et manqués, par mois civil du verdict.", width=12))
            .with_panel(sql_table("Conformité par SLA et par adhérent", per_sla_and_member,
                                  "La même chose pour chaque adhérent (les chiffres de son relevé mensuel).",
                                  width=12))
            .with_panel(sql_table("Manquements de la période", breaches,
                                  "Chaque manquement, à l'instant de la première échéance dépassée, avec la version "
                                  "de la politique appliquée.")))


def time_to_acknowledge() -> dashboard.Dashboard:
    bucket = "slaledger_acknowledge_duration_seconds_bucket"
    return (base("slaledger-time-to-acknowledge", "Délai de prise en compte",
                 "Verdict contractuel du SLA intake, et distribution du délai brut entre le dépôt et la prise "
                 "en compte (histogramme, borne à 4 h ; le délai brut ignore la plage horaire du contrat).",
                 ["sla"], time_from="now-7d")
            .with_panel(stat.Panel().title("Prises en compte dans le délai contractuel (depuis l'origine)").span(8)
                        .height(6).unit("percentunit")
                        .description("Verdict du SLA intake (4 h dans la plage, ou 12 h le jour ouvré suivant) : "
                                     "respectés / (respectés + manquements), manquements retirés à part.")
                        .with_target(prom(compliance.promql_ratio(INTAKE), instant=True)))
            .with_panel(stat.Panel().title("Prises en compte dans le délai contractuel (24 h glissantes)").span(8)
                        .height(6).unit("percentunit")
                        .with_target(prom(compliance.promql_ratio(INTAKE, "1d"), instant=True)))
            .with_panel(stat.Panel().title("Délai médian (7 j)").span(8).height(6).unit("s").with_target(prom(
                f"histogram_quantile(0.5, sum by (le) (increase({bucket}[7d])))", instant=True)))
            .with_panel(timeseries.Panel().title("Quantiles du délai de prise en compte").span(24).height(9)
                        .unit("s")
                        .with_target(prom(f"histogram_quantile(0.5, sum by (le) (rate({bucket}[$__rate_interval])))",
                                          legend="médiane"))
                        .with_target(prom(f"histogram_quantile(0.9, sum by (le) (rate({bucket}[$__rate_interval])))",
                                          legend="90e centile", ref_id="B")))
            .with_panel(table.Panel().title("Répartition (nombre cumulé par borne, en secondes)").span(24)
                        .height(8).with_target(prom(f"sum by (le) ({bucket})", legend="{{le}}", instant=True))))


def incidents() -> dashboard.Dashboard:
    open_incidents = f"""
        SELECT t.filed_at AS "Déposé le", t.ticket_id AS "Ticket", t.member AS "Adhérent", t.product AS "Produit",
               t.status AS "État", t.acknowledged_at AS "Pris en compte le",
               t.restoration_eta AS "Rétablissement probable", t.subject AS "Objet"
        FROM tickets t
        WHERE t.kind = 'incident' AND {OPEN} AND t.member IN ($member)
        ORDER BY t.restoration_eta IS NOT NULL, t.filed_at"""
    resolved = """
        SELECT t.resolved_at AS "Résolu le", t.ticket_id AS "Ticket", t.member AS "Adhérent", t.product AS "Produit",
               t.restoration_eta AS "Rétablissement annoncé",
               round(extract(epoch FROM (t.resolved_at - t.filed_at)) / 3600.0, 1) AS "Durée (h)"
        FROM tickets t
        WHERE t.kind = 'incident' AND t.member IN ($member)
              AND t.resolved_at >= $__timeFrom() AND t.resolved_at < $__timeTo()
        ORDER BY t.resolved_at DESC"""
    return (base("slaledger-incidents", "Incidents",
                 "Incidents ouverts et heure probable de rétablissement communiquée à l'adhérent.",
                 ["incident"], time_from="now-30d")
            .with_panel(stat.Panel().title("Incidents sans heure de rétablissement").span(8).height(5).with_target(
                prom("slaledger_incidents_without_eta", instant=True)))
            .with_panel(stat.Panel().title("Incidents ouverts").span(8).height(5).with_target(
                prom('sum(slaledger_open_tickets{kind="incident"})', instant=True)))
            .with_panel(timeseries.Panel().title("Incidents ouverts dans le temps").span(8).height(5).with_target(
                prom('sum by (sla_state) (slaledger_open_tickets{kind="incident"})', legend="{{sla_state}}")))
            .with_panel(sql_table("Incidents ouverts (sans heure de rétablissement en premier)", open_incidents,
                                  "L'heure probable de rétablissement est celle de la dernière information."))
            .with_panel(sql_table("Incidents résolus sur la période", resolved,
                                  "Durée entre le dépôt et la résolution.")))


COMMAND_LATENCY = "slaledger_command_duration_seconds_bucket"


def pipeline() -> dashboard.Dashboard:
    return (base("slaledger-pipeline", "Santé du pipeline",
                 "Workers (commandes : latence et issues), projecteur, retard de projection, événements "
                 "traités et mis au rebut.",
                 ["exploitation"], time_from="now-6h", members=False)
            .with_panel(stat.Panel().title("Workers joignables").span(6).height(4).with_target(
                prom('sum(up{job="slaledger-worker"})', instant=True)))
            .with_panel(stat.Panel().title("Projecteur joignable").span(6).height(4).with_target(
                prom('sum(up{job="slaledger-projector"})', instant=True)))
            .with_panel(stat.Panel().title("Âge du dernier événement").span(6).height(4).unit("s").with_target(
                prom("time() - max(slaledger_last_event_timestamp_seconds)", instant=True)))
            .with_panel(stat.Panel().title("Retard total (événements)").span(6).height(4).with_target(
                prom("sum(slaledger_consumer_lag)", instant=True)))
            .with_panel(timeseries.Panel().title("Retard de projection par partition").span(12).height(8)
                        .with_target(prom("max by (topic, partition) (slaledger_consumer_lag)",
                                          legend="{{topic}}/{{partition}}")))
            .with_panel(timeseries.Panel().title("Événements projetés par type").span(12).height(8).unit("ops")
                        .with_target(prom("sum by (type) (rate(slaledger_events_processed_total[$__rate_interval]))",
                                          legend="{{type}}")))
            .with_panel(timeseries.Panel().title("Mises au rebut par raison").span(12).height(8)
                        .with_target(prom("sum by (reason) (increase(slaledger_dead_lettered_total[$__rate_interval]))",
                                          legend="{{reason}}")))
            # Each worker's /metrics (slaledger.command_metrics): from the HTTP request to the outcome.
            .with_panel(timeseries.Panel().title("Latence des commandes (requête HTTP → issue)").span(12).height(8)
                        .unit("s")
                        .with_target(prom(f"histogram_quantile(0.5, sum by (le) (rate({COMMAND_LATENCY}"
                                          "[$__rate_interval])))", legend="médiane"))
                        .with_target(prom(f"histogram_quantile(0.99, sum by (le) (rate({COMMAND_LATENCY}"
                                          "[$__rate_interval])))", legend="99e centile", ref_id="B")))
            .with_panel(timeseries.Panel().title("Commandes par type et issue").span(12).height(8).unit("ops")
                        .with_target(prom("sum by (command, outcome) (rate(slaledger_commands_total"
                                          "[$__rate_interval]))", legend="{{command}} → {{outcome}}")))
            .with_panel(table.Panel().title("Versions déployées").span(12).height(8).with_target(
                prom("count by (version, job) (slaledger_build_info)", instant=True))))


DASHBOARDS = {
    "support-queue": support_queue,
    "monthly-compliance": monthly_compliance,
    "time-to-acknowledge": time_to_acknowledge,
    "incidents": incidents,
    "pipeline": pipeline,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    out = {}
    for name, build in DASHBOARDS.items():
        model: Any = build().build()
        out[f"{name}.json"] = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [name for name, text in rendered.items()
                 if not (OUT / name).exists() or (OUT / name).read_text(encoding="utf-8") != text]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in rendered)
        for name in stale + extra:
            print(f"stale dashboard: infra/grafana/dashboards/{name} (run python infra/grafana/dashboards.py)",
                  file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
