"""The monthly statement (issue #16) without a database: month boundaries in Europe/Paris
(daylight-saving months included), the month rule, rates, the schedule's due month, the
members directory and the SMTP settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.monthly import Month, MonthError, decided_at, month_due, next_run, statement, to_csv
from sla.clock import evaluate
from sla.events import EventType
from sla.policy import Policy
from sla.ticket import Ticket, fold
from slaledger.mail import MailError, SmtpConfig, statement_message
from slaledger.members import MembersError, parse_members
from slaledger.settings import Settings
from tests.conftest import PARIS, at, ev, filed

LATER = at("2027-06-01T00:00:00+02:00")


def doc(tickets: list[Ticket], policy: Policy, month: str, generated_at: datetime = LATER) -> dict:
    return statement(tickets, policy, Month.parse(month), member="m-001", member_name="Commune de Test",
                     generated_at=generated_at, head=None)


def counted(d: dict) -> list[tuple[str, str, str]]:
    return [(c["ticket_id"], c["sla"], c["verdict"]) for c in d["clocks"]]


@pytest.mark.parametrize(("month", "start", "length"), [
    ("2026-10", "2026-10-01T00:00:00+02:00", timedelta(days=31, hours=1)),  # autumn change: one hour more
    ("2026-03", "2026-03-01T00:00:00+01:00", timedelta(days=31, hours=-1)),  # spring change: one hour less
    ("2026-11", "2026-11-01T00:00:00+01:00", timedelta(days=30)),
    ("2026-12", "2026-12-01T00:00:00+01:00", timedelta(days=31)),
])
def test_a_month_runs_from_local_midnight_to_local_midnight(month: str, start: str, length: timedelta) -> None:
    lo, hi = Month.parse(month).bounds(PARIS)
    assert lo == at(start) and hi - lo == length
    assert hi.astimezone(PARIS).day == 1 and hi.astimezone(PARIS).hour == 0


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-11", "2026/11", "2026-1", "", "novembre"])
def test_a_month_is_yyyy_mm(text: str) -> None:
    with pytest.raises(MonthError, match="expected YYYY-MM"):
        Month.parse(text)


def test_months_follow_each_other_across_years() -> None:
    assert str(Month(2026, 12).next()) == "2027-01" and str(Month(2027, 1).previous()) == "2026-12"
    assert Month(2026, 11).french() == "novembre 2026" and Month(2026, 8).french() == "août 2026"


def silent_administrative(filed_at: str, ticket_id: str) -> Ticket:
    """A phone request (no intake clock) never answered: breached when its week runs out."""
    return fold([filed(filed_at, kind="administrative", channel="phone", ticket_id=ticket_id)])


def test_a_breach_counts_in_the_local_month_of_its_deadline_across_the_autumn_change(policy: Policy) -> None:
    # Filed 25 October 00:30 summer time: due 1 November 00:30 winter time = 31 October 23:30 UTC.
    # Filed 24 October 23:30 summer time: due 31 October 23:30 winter time.
    tickets = [silent_administrative("2026-10-25T00:30:00+02:00", "NOV"),
               silent_administrative("2026-10-24T23:30:00+02:00", "OCT")]
    assert counted(doc(tickets, policy, "2026-10")) == [("OCT", "administrative_answer", "breached")]
    november = doc(tickets, policy, "2026-11")
    assert counted(november) == [("NOV", "administrative_answer", "breached")]
    assert november["breaches"][0]["decided_at"] == "2026-10-31T23:30:00Z"  # October in UTC, November in Paris


def test_a_breach_counts_in_the_local_month_of_its_deadline_across_the_spring_change(policy: Policy) -> None:
    # Filed 25 March 00:30 winter time: due 1 April 00:30 summer time = 31 March 22:30 UTC.
    tickets = [silent_administrative("2026-03-25T00:30:00+01:00", "APR")]
    assert counted(doc(tickets, policy, "2026-03")) == []
    assert counted(doc(tickets, policy, "2026-04")) == [("APR", "administrative_answer", "breached")]


def test_a_clock_stopped_at_midnight_belongs_to_the_month_that_begins(policy: Policy) -> None:
    ticket = fold([filed("2026-10-28T10:00:00+01:00", kind="administrative", channel="phone", ticket_id="MID"),
                   ev(EventType.CUSTOMER_INFORMED, "2026-11-01T00:00:00+01:00", "MID", message="Réponse")])
    assert counted(doc([ticket], policy, "2026-10")) == []
    assert counted(doc([ticket], policy, "2026-11")) == [("MID", "administrative_answer", "met")]


def test_met_counts_at_the_stop_and_breached_at_the_missed_deadline(policy: Policy) -> None:
    """Filed 30 October, acknowledged 2 November 12:00 after a deadline of 2 November 12:00 + 0:
    the breach is sealed at the deadline, whatever came later; a ticket acknowledged in time on
    a later day is counted on that day."""
    late = fold([filed("2026-10-30T17:00:00+01:00", ticket_id="LATE"),  # Friday after hours: due Monday 12:00
                 ev(EventType.ACKNOWLEDGED, "2026-11-03T09:00:00+01:00", "LATE")])
    on_time = fold([filed("2026-10-30T17:00:00+01:00", ticket_id="OK"),
                    ev(EventType.ACKNOWLEDGED, "2026-11-02T11:00:00+01:00", "OK")])
    november = doc([late, on_time], policy, "2026-11")
    assert counted(november) == [("OK", "intake", "met"), ("LATE", "intake", "breached")]
    breach = november["breaches"][0]
    assert breach["decided_at"] == "2026-11-02T11:00:00Z" and breach["overrun_seconds"] == 21 * 3600
    assert "échéance dépassée de 21 h" in breach["explanation"]
    assert counted(doc([late, on_time], policy, "2026-10")) == []


def test_rates_leave_retracted_and_excluded_apart(policy: Policy) -> None:
    deadline = at("2026-11-02T13:00:00+01:00")
    retracted = fold([
        filed("2026-11-02T09:00:00+01:00", ticket_id="RETRACTED"),
        ev(EventType.SLA_BREACHED, deadline, "RETRACTED", sla="intake", deadline=deadline,
           policy_version="convention-2026.1", explanation="Rien n'était enregistré à l'échéance."),
        # typed in afterwards, made before the deadline: the breach is disproved
        ev(EventType.ACKNOWLEDGED, "2026-11-02T12:00:00+01:00", "RETRACTED", recorded="2026-11-02T14:00:00+01:00"),
    ])
    excluded = fold([filed("2026-11-03T09:00:00+01:00", ticket_id="EXCLUDED", product="local-trust-mpe")])
    met = fold([filed("2026-11-04T09:00:00+01:00", ticket_id="MET"),
                ev(EventType.ACKNOWLEDGED, "2026-11-04T10:00:00+01:00", "MET")])
    breached = [fold([filed(f"2026-11-0{d}T09:00:00+01:00", ticket_id=f"B{d}")]) for d in (5, 6, 9)]
    november = doc([retracted, excluded, met, *breached], policy, "2026-11")
    intake = next(s for s in november["summary"] if s["sla"] == "intake")
    assert (intake["met"], intake["breached"], intake["retracted"], intake["excluded"]) == (1, 3, 1, 1)
    assert intake["rate"] == 0.25 and intake["rate_percent"] == 25.0 and intake["counted"] == 6
    assert [s["rate"] for s in november["summary"] if s["sla"] != "intake"] == [None] * (len(november["summary"]) - 1)
    verdicts = {c["ticket_id"]: c for c in november["clocks"]}
    assert verdicts["RETRACTED"]["verdict_fr"] == "manquement retiré"
    assert "est retiré" in verdicts["RETRACTED"]["explanation"]
    assert verdicts["EXCLUDED"]["decided_at"] == "2026-11-03T08:00:00Z"  # excluded: counted at the filing
    assert {c["ticket_id"] for c in november["breaches"]} == {"B5", "B6", "B9"}
    rows = to_csv(november).splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("member,month,sla,sla_title")


def test_a_statement_issued_during_its_month_is_provisional_and_counts_what_is_decided(policy: Policy) -> None:
    running = fold([filed("2026-11-20T09:00:00+01:00", ticket_id="RUN", kind="administrative", channel="phone")])
    met = fold([filed("2026-11-02T09:00:00+01:00", ticket_id="MET"),
                ev(EventType.ACKNOWLEDGED, "2026-11-02T10:00:00+01:00", "MET")])
    now = at("2026-11-21T12:00:00+01:00")
    november = doc([running, met], policy, "2026-11", generated_at=now)
    assert november["provisional"] and counted(november) == [("MET", "intake", "met")]
    assert november["open_at_end"] == 1
    assert not doc([running, met], policy, "2026-11")["provisional"]
    with pytest.raises(MonthError, match="has not started yet"):
        doc([met], policy, "2026-12", generated_at=now)


# --- properties -------------------------------------------------------------------------------

MONTHS = [Month(2026, 1)]
while MONTHS[-1] != Month(2027, 6):
    MONTHS.append(MONTHS[-1].next())

requests = st.builds(
    lambda minutes, kind, channel, product, ack, answer: (minutes, kind, channel, product, ack, answer),
    st.integers(0, 300 * 24 * 60),  # filed within 300 days from 1 February 2026
    st.sampled_from(["assistance", "incident", "administrative", "go_live"]),
    st.sampled_from(["portal", "phone", "email"]),
    st.sampled_from(["solaere", "local-trust-mpe"]),
    st.none() | st.integers(0, 20 * 24 * 60),  # minutes to the acknowledgement
    st.none() | st.integers(0, 20 * 24 * 60),  # minutes to the answer (inform / restoration time)
)


def build(i: int, spec: tuple) -> Ticket:
    minutes, kind, channel, product, ack, answer = spec
    filed_at = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    tid = f"T{i}"
    events = [filed(filed_at, ticket_id=tid, kind=kind, channel=channel, product=product)]
    if ack is not None:
        events.append(ev(EventType.ACKNOWLEDGED, filed_at + timedelta(minutes=ack), tid))
        if answer is not None:
            payload = {"restoration_eta": filed_at + timedelta(days=30)} if kind == "incident" else {}
            events.append(ev(EventType.CUSTOMER_INFORMED, filed_at + timedelta(minutes=ack + answer), tid,
                             message="Point d'étape", **payload))
    return fold(events)


@settings(max_examples=30, deadline=None)
@given(st.lists(requests, min_size=1, max_size=6))
def test_every_decided_clock_is_counted_in_exactly_one_month(policy: Policy, specs: list[tuple]) -> None:
    tickets = [build(i, spec) for i, spec in enumerate(specs)]
    decided = {(t.ticket_id, c.sla) for t in tickets for c in evaluate(t, policy, LATER)
               if t.filed_at is not None and decided_at(c, t.filed_at) is not None}
    seen: list[tuple[str, str]] = []
    for month in MONTHS:
        d = doc(tickets, policy, str(month))
        lo, hi = d["period"]["start"], d["period"]["end"]
        seen += [(c["ticket_id"], c["sla"]) for c in d["clocks"]]
        assert all(lo <= c["decided_at"] < hi for c in d["clocks"])
        for s in d["summary"]:
            assert s["met"] + s["breached"] + s["retracted"] + s["excluded"] == s["counted"]
            assert s["rate"] is None or 0 <= s["rate"] <= 1
            assert (s["rate"] is None) == (s["met"] + s["breached"] == 0)
        assert sum(s["counted"] for s in d["summary"]) == len(d["clocks"])
        assert len(d["breaches"]) == sum(s["breached"] for s in d["summary"])
    assert sorted(seen) == sorted(decided)  # once each, none lost


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)))
def test_the_due_month_and_the_next_run(now: datetime) -> None:
    tz = ZoneInfo("Europe/Paris")
    due = month_due(now, tz)
    wake = next_run(now, tz)
    local_wake = wake.astimezone(tz)
    assert wake > now and (local_wake.day, local_wake.hour, local_wake.minute) == (1, 6, 0)
    assert wake - now <= timedelta(days=32)
    # the month due is the one before the month of the last 06:00 on a 1st, never later
    assert Month.containing(now, tz) in (due.next(), due.next().next())
    assert month_due(wake, tz) == Month.containing(wake, tz).previous()


def test_the_statement_is_due_from_six_on_the_first() -> None:
    assert str(month_due(at("2026-12-01T05:59:59+01:00"), PARIS)) == "2026-10"
    assert str(month_due(at("2026-12-01T06:00:00+01:00"), PARIS)) == "2026-11"
    assert str(month_due(at("2027-01-01T06:00:00+01:00"), PARIS)) == "2026-12"
    assert next_run(at("2026-12-01T05:00:00+01:00"), PARIS) == at("2026-12-01T06:00:00+01:00")
    assert next_run(at("2026-03-15T12:00:00+01:00"), PARIS) == at("2026-04-01T06:00:00+02:00")


# --- the members directory and the SMTP settings ----------------------------------------------

def test_the_members_directory() -> None:
    members = parse_members('[members.commune-de-blois]\nname = "Commune de Blois"\nreferent = "dsi@blois.fr"\n',
                            "members.toml")
    assert members["commune-de-blois"].referent == "dsi@blois.fr"
    assert members["commune-de-blois"].name == "Commune de Blois"


@pytest.mark.parametrize(("text", "message"), [
    ('[members.x]\nname = "X"\nreferent = "dsi"\n', "members.x.referent: 'dsi' is not an e-mail address"),
    ('[members.x]\nname = "X"\nreferent = "a@b"\n', "'a@b' is not an e-mail address"),
    ('[members.x]\nname = "X"\nreferent = "Jean <a@b.fr>"\n', "is not an e-mail address"),
    ('[members.x]\nname = "X"\nreferent = "a@b.fr, c@d.fr"\n', "is not an e-mail address"),
    ('[members.x]\nname = "X"\n', "members.x.referent: an e-mail address is required"),
    ('[members.x]\nreferent = "a@b.fr"\n', "members.x.name: the member's name is required"),
    ('[members.x]\nname = "X"\nreferant = "a@b.fr"\n', "unknown key(s) ['referant']"),
    ('[member.x]\nname = "X"\n', "unknown table(s) ['member']"),
    ('[members.x\n', "not valid TOML"),
])
def test_a_bad_members_file_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(MembersError) as caught:
        parse_members(text, "members.toml")
    assert str(caught.value).startswith("members.toml") and message in str(caught.value)


def smtp_settings(**values: object) -> Settings:
    return Settings(**{"smtp_host": "smtp.example.org", "smtp_from": "slaledger@gip.example.org",  # type: ignore[arg-type]
                       **values})


def test_smtp_settings(tmp_path: Path) -> None:
    config = SmtpConfig.from_settings(smtp_settings())
    assert (config.port, config.security) == (587, "starttls")
    assert SmtpConfig.from_settings(smtp_settings(smtp_security="ssl")).port == 465
    secret = tmp_path / "smtp_password"
    secret.write_text("s3cret\n")
    config = SmtpConfig.from_settings(smtp_settings(smtp_user="relay", smtp_password_file=str(secret)))
    assert config.password == "s3cret"
    assert "s3cret" not in str(smtp_settings(smtp_password="s3cret").public())


@pytest.mark.parametrize(("values", "message"), [
    ({"smtp_host": ""}, "SLALEDGER_SMTP_HOST is not set"),
    ({"smtp_security": "tls"}, "SLALEDGER_SMTP_SECURITY: 'tls' is not one of"),
    ({"smtp_from": "slaledger"}, "SLALEDGER_SMTP_FROM: 'slaledger' is not an e-mail address"),
    ({"smtp_user": "u", "smtp_password": "p", "smtp_security": "none"}, "unencrypted connection"),
    ({"smtp_password": "p"}, "without SLALEDGER_SMTP_USER"),
    ({"smtp_user": "u", "smtp_password": "p", "smtp_password_file": "/x"}, "both set"),
    ({"smtp_user": "u", "smtp_password_file": "/nonexistent/secret"}, "SLALEDGER_SMTP_PASSWORD_FILE: "),
])
def test_bad_smtp_settings_are_refused(values: dict, message: str) -> None:
    with pytest.raises(MailError, match=message.replace("(", r"\(")):
        SmtpConfig.from_settings(smtp_settings(**values))


def test_the_message_carries_the_pdf() -> None:
    message = statement_message(sender="a@b.fr", recipient="c@d.fr", subject="Relevé — novembre 2026",
                                body="Bonjour,\n", pdf=b"%PDF-1.7 ...", filename="releve.pdf",
                                message_id="<x@b.fr>", date=at("2026-12-01T06:00:00+01:00"))
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "application/pdf" and attachment.get_content() == b"%PDF-1.7 ..."
    assert message["Date"] == "Tue, 01 Dec 2026 06:00:00 +0100"
