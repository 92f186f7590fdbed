"""The one definition of compliance (``projections.compliance``, issue #28): the formulas, and
the dashboards' SQL and the recording rules held to the module. The three computed on the same
data: tests/e2e/test_compliance.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from projections import compliance
from sla.policy import PolicyError, parse_policy
from slaledger.settings import load_policy

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_the_statement_s_rate_retracted_apart() -> None:
    # 18 met, 1 breached, 1 retracted: 94.7 %, not 95 % — the three-way disagreement
    assert round(100 * compliance.rate(18, 1), 1) == 94.7  # type: ignore[operator]
    assert compliance.rate(0, 0) is None


def test_budget_left_is_exact_at_the_objective() -> None:
    assert compliance.budget_left(20, 0, 95) == 1
    assert compliance.budget_left(19, 1, 95) == 0  # one breach in 20 is what 95 % allows: spent, not 1e-16
    assert compliance.budget_left(39, 1, 95) == 0.5
    assert compliance.budget_left(18, 2, 95) == -1
    assert compliance.budget_left(0, 0, 95) is None


def test_the_recording_rules_are_the_module_s() -> None:
    doc = yaml.safe_load((INFRA / "prometheus" / "rules" / "compliance.rules.yml").read_text())
    recorded = {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    assert recorded == compliance.RECORDING_RULES


def test_the_dashboards_count_with_the_module_s_sql() -> None:
    board = json.loads((INFRA / "grafana" / "dashboards" / "monthly-compliance.json").read_text())
    sql = {p["title"]: t["rawSql"] for p in board["panels"] for t in p["targets"] if "rawSql" in t}
    assert sql["Conformité par SLA"] == " ".join(compliance.sql_by_month("c.sla", "SLA").split())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"] if "expr" in t]
    assert "slaledger:sla_error_budget_left:month" in exprs


def test_the_month_is_the_policy_s() -> None:
    policy = load_policy()
    assert {v.tz.key for v in policy.versions} == {compliance.TIMEZONE}
    assert compliance.objectives(policy) == {"intake": 95.0, "administrative_answer": 95.0, "go_live": 95.0,
                                             "incident_eta": 95.0, "incident_update": 95.0}


POLICY = """
[[versions]]
id = "v1"
effective_from = "2026-01-01T00:00:00+01:00"
timezone = "Europe/Paris"
[[versions.slas]]
name = "answer"
rule = "elapsed"
duration = "4h"
starts_on = ["filed"]
stops_on = ["acknowledged"]
"""


def test_an_sla_s_objective_is_a_policy_setting() -> None:
    policy = parse_policy(POLICY.replace('name = "answer"', 'name = "answer"\nobjective_percent = 99.5'))
    assert compliance.objectives(policy) == {"answer": 99.5}
    with pytest.raises(PolicyError, match="objective_percent: between 0 and 100"):
        parse_policy(POLICY.replace('name = "answer"', 'name = "answer"\nobjective_percent = 100'))
