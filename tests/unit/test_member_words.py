"""What a member reads (issue #32 items 2 and 5): times to the minute — seconds only where the
verdict compares two instants within the same minute —, French labels, no raw ids, no phrase
said twice, one way to write a rate. The same ticket through each document a person reads:
the statement (HTML, CSV), the dispute file (Markdown, HTML) and the ticket page."""

from __future__ import annotations

import re
from html import unescape

import pytest

from projections import monthly
from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import LogRecord
from projections.report import to_html, to_markdown
from service.principal import Principal
from sla.events import Event, EventType, encode_event
from sla.policy import Policy
from sla.ticket import fold
from sla.view import ticket_view
from slaledger.web.render import ticket_page
from tests.conftest import PARIS, at, ev, filed

NOW = at("2027-01-15T12:00:00+01:00")
MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d[,.]\d")
SECONDS = re.compile(r"\d\d:\d\d:\d\d")


def events() -> list[Event]:
    """Filed at 09:45:46.26395, acknowledged 2.8 s after its 13:45:46.26395 deadline: the
    deadline and the acknowledgement read apart only to the second; an incident's internal
    objective (« (objectif interne) » in its title) too."""
    return [filed("2026-11-02T09:45:46.263950+01:00", kind="incident"),
            ev(EventType.ACKNOWLEDGED, "2026-11-02T13:45:49.031436+01:00"),
            ev(EventType.CUSTOMER_INFORMED, "2026-11-02T14:10:12.500000+01:00", message="En cours")]


def statement(policy: Policy, name: str = "Commune de Test") -> dict:
    return monthly.statement([fold(events())], policy, monthly.Month.parse("2026-11"), member="m-001",
                             member_name=name, generated_at=NOW, head=None)


def dispute(policy: Policy) -> dict:
    records = [LogRecord(encode_event(e), {"topic": "t", "partition": 0, "offset": i})
               for i, e in enumerate(events())]
    return dispute_file(replay(iter(records), policy, Filters(ticket="T-1"), source="topic"))


def visible(html: str) -> str:
    """The text a person reads (no markup, no attribute: ``datetime`` keeps full precision)."""
    return unescape(re.sub(r"\s+", " ", re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S)))


def documents(policy: Policy) -> dict[str, str]:
    view = ticket_view(fold(events()), policy, NOW)
    agent = Principal(token_id="t", role="agent", member=None, label="alice")
    return {"statement": visible(monthly.to_html(statement(policy))), "csv": monthly.to_csv(statement(policy)),
            "markdown": to_markdown(dispute(policy)), "dispute": visible(to_html(dispute(policy))),
            "page": visible(ticket_page(view, events(), agent, NOW, PARIS))}


@pytest.mark.parametrize("name", ["statement", "csv", "markdown", "dispute", "page"])
def test_times_are_to_the_minute_and_finer_only_beside_the_deadline_they_are_judged_by(
        policy: Policy, name: str) -> None:
    text = documents(policy)[name]
    assert not MICROSECONDS.search(text), MICROSECONDS.findall(text)
    # only the deadline missed by 2.8 s and the acknowledgement carry seconds
    assert set(SECONDS.findall(text)) <= {"13:45:46", "13:45:49", "12:45:46", "12:45:49"}, SECONDS.findall(text)
    if name != "csv":
        assert "09:45" in text
    if name in ("markdown", "dispute", "page"):  # the timeline
        assert "14:10" in text


def test_the_explanation_writes_the_missed_deadline_to_the_second(policy: Policy) -> None:
    text = documents(policy)["statement"]
    assert "prise en compte due le lundi 2 novembre 2026 à 13:45:46" in text
    assert "Prise en compte le lundi 2 novembre 2026 à 13:45:49 : échéance dépassée de 3 s" in text


def test_machine_fields_keep_full_precision(policy: Policy) -> None:
    assert statement(policy)["clocks"][0]["deadline"].endswith(":46.263950Z")
    assert dispute(policy)["tickets"][0]["timeline"][0]["occurred_at"].endswith(":46.263950Z")


@pytest.mark.parametrize("name", ["statement", "markdown", "dispute", "page"])
def test_words_are_french_and_said_once(policy: Policy, name: str) -> None:
    text = documents(policy)[name]
    assert "(objectif interne) (objectif interne)" not in text and "objectif interne) — objectif interne" not in text
    for raw in ("intake", "incident_eta", "incident_update", "head_id", "schema", "100.0 %", "{'id'"):
        assert raw not in text, raw


def test_rates_are_written_one_way(policy: Policy) -> None:
    assert "taux de respect 0,0 %" in documents(policy)["markdown"]
    assert "taux de respect 0,0 %" in documents(policy)["dispute"]
    assert "0,0 %" in documents(policy)["statement"]


def test_a_member_without_a_name_is_not_named_twice(policy: Policy) -> None:
    html = visible(monthly.to_html(statement(policy, name="m-001")))
    assert "m-001 (m-001)" not in html and "m-001 — mois de novembre 2026" in html


def test_the_signed_head_reads_in_french(policy: Policy) -> None:
    doc = statement(policy)
    doc["head"] = {"schema": "slaledger.tree-head/1", "head_id": 7, "tree_size": 12, "root_hash": "ab" * 32,
                   "timestamp": "2026-12-01T05:00:00.123456Z", "policy_versions": [{"id": "convention-2026.1"}],
                   "key_id": "cd" * 32, "signature": "c2ln"}
    text = visible(monthly.to_html(doc))
    assert "Tête n° 7" in text and "Politiques en vigueur convention-2026.1" in text
    assert "Signée le mardi 1er décembre 2026 à 06:00 (UTC+01:00)" in text
    assert "schema" not in text and "tree-head" not in text and "{'id'" not in text and "head_id" not in text


def test_the_timeline_names_an_sla_by_its_title(policy: Policy) -> None:
    breach = ev(EventType.SLA_BREACHED, "2026-11-02T13:45:46.263950+01:00", sla="intake",
                deadline=at("2026-11-02T13:45:46.263950+01:00"), policy_version="convention-2026.1",
                explanation="Rien n'était enregistré à l'échéance.")
    history = [*events()[:1], breach, *events()[1:]]
    view = ticket_view(fold(history), policy, NOW)
    page = visible(ticket_page(view, history, Principal("t", "agent", None, "alice"), NOW, PARIS))
    # the deadline the acknowledgement missed by 2.8 s, written as the clock writes it
    assert ("« Prise en compte d'une demande déposée sur le portail », échéance du lundi 2 novembre 2026 "
            "à 13:45:46") in page
    assert "délai intake" not in page


def test_sla_explain_answers_in_french(capsys: pytest.CaptureFixture[str]) -> None:
    from slaledger.cli import main

    assert main(["sla", "explain", "--kind", "incident", "--channel", "portal",
                 "--filed-at", "2026-03-12T10:00:00.250000+01:00"]) == 0
    out = capsys.readouterr().out
    assert "- Prise en compte d'une demande déposée sur le portail (engagement contractuel) : échéance jeudi 12 mars " \
           "2026 à 14:00 (en cours)" in out
    assert "intake:" not in out and "[running]" not in out and not MICROSECONDS.search(out)
