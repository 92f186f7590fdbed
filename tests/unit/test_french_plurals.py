"""Counted nouns agree with their count, as French wants: « 1 jour », « 2 jours » — never
« 1 jours » (the backdating refusal said « plus de 1 jours »), nor « jour(s) »."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.audit.dispute_file import policy_readings
from sla import french, readings
from sla.explain import rule_text
from sla.policy import Policy
from sla.ticket import Command, CommandType, DomainError, decide
from slaledger.settings import load_policy
from tests.conftest import at

POLICY: Policy = load_policy()
VERSION = POLICY.versions[-1]
NOW = at("2026-12-10T10:00:00+01:00")
FILE = {"kind": "incident", "channel": "phone", "member": "m-001", "product": "ent-netocentre", "subject": "Panne"}

# A count below two before a plural noun, or a noun hedged with « (s) ».
WRONG = re.compile(r"(?<![\d,.])[01] (jours|heures|minutes|secondes|semaines|autres)\b|\w\(s\)")

limits = st.one_of(st.integers(0, 400).map(lambda d: timedelta(days=d)),
                   st.integers(60, 400 * 86400).map(lambda s: timedelta(seconds=s)))


@pytest.mark.parametrize(("number", "noun", "said"), [
    (0, "jour", "0 jour"), (1, "jour", "1 jour"), (2, "jour", "2 jours"),
    (1, "jour calendaire", "1 jour calendaire"), (8, "jour calendaire", "8 jours calendaires"),
    (3, "mois", "3 mois"), (2, "heure ouvrée", "2 heures ouvrées"),
])
def test_a_count_below_two_keeps_the_singular(number: int, noun: str, said: str) -> None:
    assert french.count(number, noun) == said


@given(limit=limits)
def test_the_backdating_refusal_agrees_with_its_limit(limit: timedelta) -> None:
    dated = Command(CommandType.FILE, "T-1", "agent:alice", FILE, NOW - limit - timedelta(minutes=1))
    with pytest.raises(DomainError) as refused:
        decide(None, dated, NOW, max_backdate=limit)
    assert "remonte à plus de" in refused.value.message
    assert not WRONG.search(refused.value.message), refused.value.message


def test_the_refusal_of_a_one_day_limit_says_one_day() -> None:
    dated = Command(CommandType.FILE, "T-1", "agent:alice", FILE, NOW - timedelta(days=2))
    with pytest.raises(DomainError, match="remonte à plus de 1 jour avant son enregistrement"):
        decide(None, dated, NOW, max_backdate=timedelta(days=1))


@given(days=st.integers(1, 400), other=st.integers(1, 400))
def test_calendar_rules_and_their_changes_agree_with_their_days(days: int, other: int) -> None:
    calendar_sla = next(s for s in VERSION.slas if s.rule == "calendar" and not s.months)
    sla = replace(calendar_sla, days=days)
    assert not WRONG.search(rule_text(sla)), rule_text(sla)
    draft = replace(POLICY, versions=(*POLICY.versions[:-1], replace(VERSION, slas=tuple(
        replace(s, days=other) if s.name == sla.name else s for s in VERSION.slas))))
    current = replace(POLICY, versions=(*POLICY.versions[:-1], replace(VERSION, slas=tuple(
        sla if s.name == sla.name else s for s in VERSION.slas))))
    said = "\n".join(readings.changes(current, draft))
    assert not WRONG.search(said), said


@given(agents=limits, connector=limits)
def test_the_dispute_files_reading_of_the_backdating_limits_agrees(agents: timedelta, connector: timedelta) -> None:
    said = "\n".join(policy_readings(replace(VERSION, max_backdate=agents, connector_max_backdate=connector)))
    assert "peut précéder son enregistrement de" in said
    assert not WRONG.search(said), said
