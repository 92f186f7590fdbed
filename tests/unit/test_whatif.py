"""What-if (#29): the three questions of a support manager answered on hand-computed tickets —
the administrative week without its pause, Whit Monday worked, Saturday a jour ouvrable —
and the comparison's own rules (nothing changes under the same policy; one ticket at a time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.audit.replay import Filters
from projections.audit.sources import LogRecord
from projections.whatif import compare, judging, ticket_histories, to_csv, to_html, to_pdf, to_table
from sla.events import Event, EventType, encode_event
from sla.policy import Policy
from slaledger.settings import load_policy
from tests.conftest import at, ev, filed

DRAFTS = Path(__file__).resolve().parents[2] / "docs" / "drafts"
NOW = at("2026-12-20T12:00:00+01:00")


def draft(name: str) -> Policy:
    return load_policy(DRAFTS / f"{name}.toml")


def changed(histories: list[list[Event]], policy: Policy, other: Policy) -> set[tuple[str, str, str, str, str, str]]:
    doc = compare(histories, policy, other, NOW).document(source="test", filters=Filters(), draft_name="d",
                                                         draft_version=None)
    return {(c["ticket_id"], c["sla"], c["before"]["verdict"], c["after"]["verdict"], c["before"]["deadline"],
             c["after"]["deadline"]) for c in doc["changes"]}


def admin_with_wait(ticket_id: str, *, wait: bool) -> list[Event]:
    """By phone on Monday 2 November 10:00; waiting for the member from Wednesday 4 to Monday 9
    (5 days); answered on Thursday 12 November."""
    events = [filed("2026-11-02T10:00:00+01:00", ticket_id=ticket_id, kind="administrative", channel="phone")]
    if wait:
        events += [ev(EventType.WAITING_FOR_CUSTOMER, "2026-11-04T10:00:00+01:00", ticket_id, reason="Pièce"),
                   ev(EventType.CUSTOMER_RESPONDED, "2026-11-09T10:00:00+01:00", ticket_id, message="Voici",
                      elements_complete=False)]
    events.append(ev(EventType.CUSTOMER_INFORMED, "2026-11-12T10:00:00+01:00", ticket_id, message="Réponse"))
    return events


def test_what_if_the_administrative_week_did_not_pause(policy: Policy) -> None:
    histories = [admin_with_wait("A-WAIT", wait=True), admin_with_wait("A-PLAIN", wait=False)]
    # paused 5 days: due 14 November 10:00, answered on the 12th; without the pause due on the 9th
    assert changed(histories, policy, draft("no-admin-pause")) == {
        ("A-WAIT", "administrative_answer", "met", "breached", "2026-11-14T09:00:00Z", "2026-11-09T09:00:00Z")}


def portal(ticket_id: str, when: str, acknowledged: str) -> list[Event]:
    return [filed(when, ticket_id=ticket_id), ev(EventType.ACKNOWLEDGED, acknowledged, ticket_id)]


@pytest.mark.parametrize(("name", "histories", "expected"), [
    pytest.param("whit-monday-worked", [
        # Friday 22 May 2026 after hours: due Tuesday 26 at 12:00 (Monday 25 is Whit Monday), or Monday 12:00
        portal("W-FRI", "2026-05-22T17:00:00+02:00", "2026-05-26T09:00:00+02:00"),
        # on Whit Monday at 10:00: due Tuesday 12:00, or 14:00 the same day; met either way
        portal("W-MON", "2026-05-25T10:00:00+02:00", "2026-05-25T13:00:00+02:00"),
        # Ascension (Thursday 14 May) stays a holiday: nothing changes
        portal("W-ASC", "2026-05-13T17:00:00+02:00", "2026-05-15T09:00:00+02:00"),
    ], {
        ("W-FRI", "intake", "met", "breached", "2026-05-26T10:00:00Z", "2026-05-25T10:00:00Z"),
        ("W-MON", "intake", "met", "met", "2026-05-26T10:00:00Z", "2026-05-25T12:00:00Z"),
    }, id="whit-monday-worked"),
    pytest.param("saturday-ouvrable", [
        # Friday 6 November after 16:00: due Monday 9 at 12:00, or Saturday 7 at 12:00
        portal("S-FRI", "2026-11-06T17:00:00+01:00", "2026-11-09T09:00:00+01:00"),
        # on Saturday at 07:00: due Monday 12:00, or that Saturday at 12:00 (acknowledged at 11:00: met)
        portal("S-SAT7", "2026-11-07T07:00:00+01:00", "2026-11-07T11:00:00+01:00"),
        # on Saturday at 10:00, after its opening: the next jour ouvrable is Monday either way
        portal("S-SAT10", "2026-11-07T10:00:00+01:00", "2026-11-09T09:00:00+01:00"),
        # on a Tuesday within the window: 4 hours either way
        portal("S-TUE", "2026-11-10T10:00:00+01:00", "2026-11-10T11:00:00+01:00"),
    ], {
        ("S-FRI", "intake", "met", "breached", "2026-11-09T11:00:00Z", "2026-11-07T11:00:00Z"),
        ("S-SAT7", "intake", "met", "met", "2026-11-09T11:00:00Z", "2026-11-07T11:00:00Z"),
    }, id="saturday-ouvrable"),
])
def test_what_if_the_draft_were_in_force(name: str, histories: list[list[Event]], expected: set[tuple[str, ...]],
                                        policy: Policy) -> None:
    assert changed(histories, policy, draft(name)) == expected


def test_the_same_policy_changes_nothing_and_counts_like_the_statement(policy: Policy) -> None:
    histories = [admin_with_wait("A-WAIT", wait=True), portal("S-FRI", "2026-11-06T17:00:00+01:00",
                                                              "2026-11-09T13:00:00+01:00"),
                 portal("S-TUE", "2026-11-10T10:00:00+01:00", "2026-11-10T11:00:00+01:00")]
    comparison = compare(histories, policy, load_policy(), NOW)
    doc = comparison.document(source="test", filters=Filters(), draft_name="same", draft_version=None)
    assert doc["changes"] == [] and doc["policy_changes"] == [] and doc["tickets"] == 3
    intake = next(s for s in doc["summary"] if s["sla"] == "intake")
    assert intake["before"] == intake["after"]
    assert (intake["before"]["met"], intake["before"]["breached"], intake["before"]["compliance"]) == (1, 1, 0.5)


def test_a_declared_breach_the_draft_disproves_counts_as_retracted(policy: Policy) -> None:
    """A GIP that works Whit Monday declared the breach on Monday 25 May at 12:00; under the
    convention's reading the request was due on Tuesday and met: the declared breach stays in
    the log and counts as retracted, as the worker would retract it."""
    breach = at("2026-05-25T12:00:00+02:00")
    events = [filed("2026-05-22T17:00:00+02:00", ticket_id="W-LATE"),
              ev(EventType.SLA_BREACHED, breach, "W-LATE", sla="intake", deadline=breach,
                 policy_version="convention-2026.1", explanation="Rien"),
              ev(EventType.ACKNOWLEDGED, "2026-05-26T09:00:00+02:00", "W-LATE")]
    assert changed([events], draft("whit-monday-worked"), policy) == {
        ("W-LATE", "intake", "breached", "retracted", "2026-05-25T10:00:00Z", "2026-05-26T10:00:00Z")}


def test_a_draft_version_judges_every_ticket(policy: Policy) -> None:
    histories = [admin_with_wait("A-WAIT", wait=True)]
    # the 2026.2 version judges November's request: only an answer stops the week (the message is not one)
    every = judging(load_policy(), "convention-2026.2")
    assert changed(histories, policy, every) == {
        ("A-WAIT", "administrative_answer", "met", "breached", "2026-11-14T09:00:00Z", "2026-11-14T09:00:00Z")}


def records(events: list[Event], *, archive: bool) -> list[LogRecord]:
    return [LogRecord(encode_event(e), {"archive_seq": i} if archive else {"topic": "t", "partition": 0, "offset": i})
            for i, e in enumerate(events)]


def test_histories_one_ticket_at_a_time_and_filtered() -> None:
    a = portal("T-A", "2026-11-10T10:00:00+01:00", "2026-11-10T11:00:00+01:00")
    a.append(ev(EventType.CLOSED, "2026-11-10T12:00:00+01:00", "T-A"))
    b = portal("T-B", "2026-11-10T10:30:00+01:00", "2026-11-10T11:30:00+01:00")
    c = [filed("2026-12-10T10:00:00+01:00", ticket_id="T-C")]  # outside the period
    period = Filters(filed_from=at("2026-11-01T00:00:00+01:00"), filed_to=at("2026-12-01T00:00:00+01:00"))
    # the archive in ticket order; a re-sent copy is read once
    ordered = records([*a, a[1], *b, *c], archive=True)
    assert [[e.ticket_id for e in h] for h in ticket_histories(ordered, period)] == [["T-A"] * 3, ["T-B"] * 2]
    # a topic interleaves tickets: a closed one is complete at once, the others at the end
    topic = records([a[0], b[0], a[1], a[2], b[1], *c, a[1]], archive=False)
    assert [[e.ticket_id for e in h] for h in ticket_histories(topic, period)] == [["T-A"] * 3, ["T-B"] * 2]


def test_renderings_name_every_change(policy: Policy) -> None:
    histories = [admin_with_wait("A-WAIT", wait=True)]
    doc = compare(histories, policy, draft("no-admin-pause"), NOW, by_member=True).document(
        source="archive", filters=Filters(), draft_name="no-admin-pause.toml", draft_version=None)
    table = to_table(doc)
    assert ("- A-WAIT (m-001) administrative_answer : respecté (échéance samedi 14 novembre 2026 à 10:00) → "
            "manquement (échéance lundi 9 novembre 2026 à 10:00)") in table
    assert "Réponse apportée le jeudi 12 novembre 2026 à 10:00 : échéance dépassée de 3 j." in table
    assert "délai suspendu à la mise en attente du demandeur" in table  # the policy change, in French
    assert "100,0 % → 0,0 %" in table  # the statement's compliance, before and after (french.percent)
    assert to_csv(doc).count("A-WAIT") == 1
    html = to_html(doc, "/tickets/{ticket_id}")
    assert 'href="/tickets/A-WAIT"' in html and "m-001" in html
    assert to_pdf(doc).startswith(b"%PDF")


@pytest.mark.parametrize("name", ["no-admin-pause", "whit-monday-worked", "saturday-ouvrable"])
def test_the_drafts_change_only_what_they_say(name: str, policy: Policy) -> None:
    from sla.readings import changes

    lines = changes(policy, draft(name))
    expected = {"no-admin-pause": "délai suspendu à la mise en attente du demandeur, repris à la réponse du "
                                  "demandeur → délai jamais suspendu",
                "whit-monday-worked": "lundi de Pentecôte férié → travaillé",
                "saturday-ouvrable": "« jour ouvrable suivant » lu au sens du Code du travail"}[name]
    detail = [line for line in lines if line.startswith("  - ")]
    # once per version (and per calendar for the holidays: intake and support)
    assert len(detail) == (4 if name == "whit-monday-worked" else 2), lines
    assert all(expected in line for line in detail), lines


def test_policy_diff_names_hours_holidays_durations_and_new_versions(policy: Policy) -> None:
    from sla.policy import parse_policy
    from sla.readings import changes

    text = (DRAFTS.parent.parent / "sla" / "default_policy.toml").read_text(encoding="utf-8")
    edited = (text.replace('"2027-05-08" = "Fête de la Victoire"\n', "").replace('open = "08:00"', 'open = "08:30"')
              .replace("days = 7", "days = 8").replace("warning_ratio = 0.75", "warning_ratio = 0.8", 1))
    lines = changes(policy, parse_policy(edited))
    assert "  - alerte d'échéance à 75 % → 80 % du délai" in lines
    assert "  - plage « intake » : horaires lun.–ven. 08:00–16:00 → lun.–ven. 08:30–16:00" in lines
    assert "  - plage « support » : jours fériés retirés : samedi 8 mai 2027 (Fête de la Victoire)" in lines
    assert ("  - engagement « administrative_answer » : délai 7 jours calendaires → 8 jours calendaires"
            in lines)
    renamed = parse_policy(text.replace('id = "convention-2026.2"', 'id = "convention-2027.1"'))
    lines = changes(policy, renamed)
    # a renamed copy: compared with the version it replaces, in force at its start
    assert lines == ["Nouvelle version convention-2027.1, en vigueur à partir du mardi 1er décembre 2026 à 00:00, "
                     "par rapport à convention-2026.2 : aucun changement de règle.",
                     "Version convention-2026.2 retirée."]
