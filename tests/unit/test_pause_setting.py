"""Issue #28, item 3: which waits pause which clock is a policy setting (``pauses_on`` /
``resumes_on`` per SLA), quoted in the dispute file's readings and in the statement; the
convention's two versions keep their verdicts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.audit.dispute_file import policy_readings
from projections.monthly import Month, statement, to_html
from sla.clock import clocks
from sla.events import EventType
from sla.policy import Policy, PolicyError, parse_policy
from sla.readings import pause_reading
from sla.ticket import fold
from slaledger.settings import load_policy
from tests.conftest import ev, filed

POLICY = load_policy()
DEFAULT = (Path(__file__).resolve().parents[2] / "sla" / "default_policy.toml").read_text(encoding="utf-8")
NO_ADMIN_PAUSE = load_policy(Path(__file__).resolve().parents[2] / "docs" / "drafts" / "no-admin-pause.toml")


def test_both_versions_pause_the_week_and_the_month_on_the_member_only() -> None:
    for version in POLICY.versions:
        setting = {s.name: (sorted(s.pauses_on), sorted(s.resumes_on)) for s in version.slas}
        assert setting == {
            "intake": ([], []), "incident_eta": ([], []), "incident_update": ([], []),
            "administrative_answer": (["waiting_for_customer"], ["customer_responded"]),
            "go_live": (["waiting_for_customer"], ["customer_responded"]),
        }, version.id


def test_the_setting_is_quoted_in_the_readings_and_the_statement() -> None:
    version = POLICY.versions[-1]
    readings = policy_readings(version)
    admin = next(line for line in readings if line.startswith("Réponse à une demande administrative"))
    assert "délai suspendu à la mise en attente du demandeur, repris à la réponse du demandeur" in admin
    intake = next(line for line in readings if line.startswith("Prise en compte"))
    assert "délai jamais suspendu" in intake
    events = [filed("2026-11-02T10:00:00+01:00", kind="administrative", channel="phone"),
              ev(EventType.CUSTOMER_INFORMED, "2026-11-03T10:00:00+01:00", message="Réponse")]
    doc = statement([fold(events)], POLICY, Month(2026, 11), member="m-001", member_name="M",
                    generated_at=datetime(2026, 12, 1, 6, tzinfo=UTC), head=None)
    quoted = {(p["policy_version"], p["sla"]): p["reading"] for p in doc["pauses"]}
    assert set(quoted) == {("convention-2026.1", s.name) for s in POLICY.versions[0].slas}
    assert quoted[("convention-2026.1", "go_live")] == pause_reading(POLICY.versions[0].slas[2])
    page = to_html(doc)
    assert "Suspension des délais" in page and "convention-2026.1) : délai jamais suspendu" in page


def without(key: str, sla: str = "go_live") -> str:
    """The default policy with one line of an SLA's pause setting removed (both versions)."""
    parts = DEFAULT.split("[[versions.slas]]")
    return "[[versions.slas]]".join(re.sub(rf"^{key} = .*\n", "", p, flags=re.M) if f'name = "{sla}"' in p else p
                                    for p in parts)


@pytest.mark.parametrize("key", ["pauses_on", "resumes_on"])
def test_a_clock_that_pauses_must_resume(key: str) -> None:
    with pytest.raises(PolicyError, match="pauses_on and resumes_on go together"):
        parse_policy(without(key))


def test_a_signal_cannot_both_stop_and_pause() -> None:
    text = DEFAULT.replace('pauses_on = ["waiting_for_customer"]', 'pauses_on = ["waiting_for_customer", "resolved"]')
    with pytest.raises(PolicyError, match=r"pauses_on: \['resolved'\] also stop"):
        parse_policy(text)


instants = st.datetimes(min_value=datetime(2026, 1, 5), max_value=datetime(2027, 6, 30),
                        timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))
steps = st.lists(st.tuples(st.sampled_from(["wait", "respond", "inform", "answer", "resolve"]),
                           st.integers(min_value=60, max_value=5 * 86400)), max_size=6)


def history(start: datetime, kind: str, moves: list[tuple[str, int]]) -> list:  # type: ignore[type-arg]
    events = [filed(start, kind=kind, channel="email", elements_complete=True), ev(EventType.ACKNOWLEDGED, start)]
    when = start
    for move, gap in moves:
        when += timedelta(seconds=gap)
        if move == "wait":
            events.append(ev(EventType.WAITING_FOR_CUSTOMER, when, reason="Pièce"))
        elif move == "respond":
            events.append(ev(EventType.CUSTOMER_RESPONDED, when, message="Voici", elements_complete=False))
        elif move == "resolve":
            events.append(ev(EventType.RESOLVED, when, resolution="Fait"))
        else:
            events.append(ev(EventType.CUSTOMER_INFORMED, when, message="Message", answer=move == "answer"))
    return events


def verdicts(events: list, policy: Policy, now: datetime) -> dict[str, tuple[str, datetime | None]]:  # type: ignore[type-arg]
    return {c.sla: (str(c.status), c.deadline) for c in clocks(events, policy, now)}


@settings(max_examples=150, deadline=None)
@given(instants, st.sampled_from(["administrative", "go_live", "incident", "assistance"]), steps)
def test_the_setting_changes_only_tickets_that_waited(start: datetime, kind: str,
                                                      moves: list[tuple[str, int]]) -> None:
    """The pause is what the setting says and nothing else: without a wait, removing it
    changes no verdict of either version; with one, only the administrative week can move."""
    events = history(start, kind, moves)
    now = start + timedelta(days=90)
    default, unpaused = verdicts(events, POLICY, now), verdicts(events, NO_ADMIN_PAUSE, now)
    if not any(m == "wait" for m, _ in moves):
        assert default == unpaused
    else:
        assert {k: v for k, v in default.items() if k != "administrative_answer"} == \
               {k: v for k, v in unpaused.items() if k != "administrative_answer"}
