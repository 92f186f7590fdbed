"""The iTop mapping: one recorded-shape snapshot → the commands the HTTP API would send."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sla.events import EventType, validate_ticket_id
from sla.policy import Policy
from sla.ticket import CommandType, Status, Ticket, command_event_id, decide
from slaledger.itop.client import ItopObject, StatusChange, parse_itop_time
from slaledger.itop.mapping import (
    Reference,
    Translation,
    command_id_for,
    html_to_text,
    slugify,
    ticket_id_for,
    translate,
)
from streams.codec import decode_command, encode_command
from streams.processor import TicketProcessor
from tests.itop_fake import FIXTURES, load_fixture

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
REFERENCE = Reference.from_file(FIXTURES / "org-map.toml")


def snapshot(fixture: str, key: str) -> ItopObject:
    item = load_fixture(fixture)["objects"][f"{'Incident' if fixture.startswith('incident') else 'UserRequest'}::{key}"]
    return ItopObject(item["class"], item["key"], copy.deepcopy(item["fields"]))


def request(key: str, **changes: Any) -> ItopObject:
    obj = snapshot("userrequest_core_get.json", key)
    return ItopObject(obj.itop_class, obj.key, {**obj.fields, **changes})


def run(obj: ItopObject, reference: Reference = REFERENCE, now: datetime = NOW) -> Translation:
    return translate(obj, reference, actor="itop:sync", tz=PARIS, now=now)


def final_state(translation: Translation) -> Ticket:
    """Apply the commands as the ticket agent would (every one must be accepted)."""
    ticket: Ticket | None = None
    for command in translation.commands:
        events = decide(ticket, command, NOW)
        ticket = ticket or Ticket(command.ticket_id)
        for event in events:
            ticket.apply(event)
    assert ticket is not None
    return ticket


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def steps(translation: Translation) -> list[tuple[CommandType, datetime | None]]:
    return [(c.type, c.occurred_at) for c in translation.commands]


def test_full_lifecycle_of_a_portal_request() -> None:
    out = run(request("101"))
    assert out.ticket_id == "IT-R-000101" and not out.unknown and not out.skipped
    assert steps(out) == [
        (CommandType.FILE, utc("2026-11-02T09:12:00+01:00")),
        (CommandType.ACKNOWLEDGE, utc("2026-11-02T10:05:00+01:00")),
        (CommandType.INFORM, utc("2026-11-02T10:06:00+01:00")),  # the question, then the pending, same second
        (CommandType.WAIT_FOR_CUSTOMER, utc("2026-11-02T10:06:00+01:00")),
        (CommandType.CUSTOMER_RESPONSE, utc("2026-11-03T14:20:00+01:00")),  # the caller's public log entry
        (CommandType.INFORM, utc("2026-11-04T11:00:00+01:00")),
        (CommandType.RESOLVE, utc("2026-11-04T11:00:00+01:00")),
        (CommandType.CLOSE, utc("2026-11-12T11:00:00+01:00")),
    ]
    filing = out.commands[0].payload
    assert filing == {"kind": "assistance", "channel": "portal", "product": "parapheur", "member": "commune-de-blois",
                      "subject": "Circuit de signature bloqué",
                      "description": "Le circuit Délibérations ne part plus en signature."}
    assert out.commands[3].payload == {"reason": "Nom du circuit demandé"}
    assert out.commands[4].payload == {"elements_complete": False, "message": "Il s'agit du circuit « Délibérations »."}
    assert out.commands[6].payload == {"resolution": "Circuit corrigé (étape de visa manquante)."}
    assert all(c.actor == "itop:sync" and not c.reply and c.scope_member is None for c in out.commands)
    ticket = final_state(out)
    assert ticket.status is Status.CLOSED and ticket.filed_at == utc("2026-11-02T09:12:00+01:00")


def test_ids_are_deterministic_and_distinct() -> None:
    first, again = run(request("101")), run(request("101"), now=datetime(2027, 1, 1, tzinfo=UTC))
    ids = [c.command_id for c in first.commands]
    assert ids == [c.command_id for c in again.commands]
    assert len(set(ids)) == len(ids)
    assert ids[0] == command_id_for("R-000101", "start_date", "2026-11-02 09:12:00")
    # a later snapshot (one more log entry, new last_update) keeps the ids of what it already had
    later = request("101", last_update="2026-11-20 10:00:00")
    assert [c.command_id for c in run(later).commands] == ids
    # the events the agent derives are deterministic too
    assert [command_event_id(i) for i in ids] == [command_event_id(c.command_id) for c in again.commands]


def test_business_times_follow_the_itop_time_zone_across_dst() -> None:
    out = run(request("102"))
    assert steps(out) == [(CommandType.FILE, datetime(2026, 10, 23, 15, 40, tzinfo=UTC)),  # CEST, +02:00
                          (CommandType.ACKNOWLEDGE, datetime(2026, 10, 26, 8, 0, tzinfo=UTC))]  # CET, +01:00
    assert out.commands[0].payload["kind"] == "incident" and out.commands[0].payload["channel"] == "phone"
    assert final_state(out).status is Status.IN_PROGRESS


def test_unknown_organisation_and_service_are_reported_not_dropped() -> None:
    out = run(request("103"))
    assert {(u.what, u.value, u.ref, u.ticket_id) for u in out.unknown} == {
        ("organisation", "Mairie de Nulle-Part", "R-000103", "IT-R-000103"),
        ("service", "Gestion financière", "R-000103", "IT-R-000103"),
    }
    filing = out.commands[0].payload
    assert filing["member"] == "mairie-de-nulle-part" and filing["product"] == "gestion-financiere"
    assert filing["channel"] == "email"  # origin mail
    assert final_state(out).status is Status.WAITING_FOR_CUSTOMER


def test_without_a_reference_names_are_slugified_and_only_missing_values_reported() -> None:
    assert not run(request("103"), Reference()).unknown
    out = run(request("103", org_name="", service_name=""), Reference())
    assert {(u.what, u.value) for u in out.unknown} == {("organisation", ""), ("service", "")}
    assert out.commands[0].payload["member"] == "inconnu" and out.commands[0].payload["product"] == "non-renseigne"


def test_unknown_origin_and_request_type_are_reported() -> None:
    out = run(request("104", origin="fax", request_type="change"))
    assert {(u.what, u.value) for u in out.unknown} == {("origin", "fax"), ("request_type", "change")}
    assert out.commands[0].payload["channel"] == "email" and out.commands[0].payload["kind"] == "assistance"


@pytest.mark.parametrize("origin", ["in_person", "chat"])
def test_itop_31_origins_are_live_contacts_like_a_call(origin: str) -> None:
    """A desk visit and a chat (iTop 3.1+) reach an agent live: filed as a call, no warning,
    and no portal intake clock."""
    out = run(request("104", origin=origin))
    assert not out.unknown
    assert out.commands[0].payload["channel"] == "phone"


def test_reference_service_may_set_the_kind(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text('[organisations]\n"Commune de Blois" = "blois"\n'
                    '[services]\n"Messagerie" = { product = "mail", kind = "go_live" }\n', encoding="utf-8")
    out = run(request("104"), Reference.from_file(path))
    assert {k: out.commands[0].payload[k] for k in ("member", "product", "kind")} == {
        "member": "blois", "product": "mail", "kind": "go_live"}


@pytest.mark.parametrize("text, message", [
    ('[teams]\n"x" = "y"\n', "unknown table"),
    ('[organisations]\n"x" = 3\n', "member id"),
    ('[services]\n"x" = { product = "p", kind = "urgent" }\n', "kind must be one of"),
    ("[organisations\n", "map.toml"),
])
def test_reference_file_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        Reference.from_file(path)


def test_a_reopened_request() -> None:
    out = run(request("105"))
    assert [c.type for c in out.commands] == [CommandType.FILE, CommandType.ACKNOWLEDGE, CommandType.INFORM,
                                              CommandType.RESOLVE, CommandType.REOPEN, CommandType.CUSTOMER_RESPONSE]
    assert out.commands[4].occurred_at == utc("2026-11-18T09:15:00+01:00")
    assert final_state(out).status is Status.IN_PROGRESS


def test_an_incident_from_monitoring() -> None:
    out = run(snapshot("incident_core_get.json", "201"))
    assert out.ticket_id == "IT-I-000201" and not out.unknown
    assert {k: out.commands[0].payload[k] for k in ("kind", "channel", "member", "product")} == {
        "kind": "incident", "channel": "email", "member": "agglo-montargoise", "product": "messagerie"}
    assert [c.type for c in out.commands] == [CommandType.FILE, CommandType.ACKNOWLEDGE, CommandType.INFORM,
                                              CommandType.RESOLVE]
    assert final_state(out).status is Status.RESOLVED


def test_leaving_pending_without_a_reply_is_a_customer_response_at_the_last_change() -> None:
    left = request("103", status="assigned", last_update="2026-11-21 10:00:00")
    out = run(left)
    assert steps(out)[-1] == (CommandType.CUSTOMER_RESPONSE, utc("2026-11-21T10:00:00+01:00"))
    assert "Sortie de l'attente" in out.commands[-1].payload["message"]
    assert final_state(out).status is Status.IN_PROGRESS
    # seen again after another change: same command id (the first time sent wins)
    again = run(request("103", status="assigned", last_update="2026-11-22 16:00:00"))
    assert again.commands[-1].command_id == out.commands[-1].command_id


def test_a_reply_of_the_caller_ends_the_wait() -> None:
    obj = request("103", status="assigned", last_update="2026-11-21 08:45:00")
    entries = [*obj.fields["public_log"]["entries"], {"date": "2026-11-21 08:45:00", "user_login": "Jeanne Martin",
                                                       "user_id": "44", "message": "C'est le poste 214."}]
    out = run(ItopObject(obj.itop_class, obj.key, {**obj.fields, "public_log": {"entries": entries}}))
    assert steps(out)[-1] == (CommandType.CUSTOMER_RESPONSE, utc("2026-11-21T08:45:00+01:00"))
    assert out.commands[-1].payload["message"] == "C'est le poste 214."
    assert [c.type for c in out.commands].count(CommandType.CUSTOMER_RESPONSE) == 1
    assert final_state(out).status is Status.IN_PROGRESS


def test_without_assignment_date_the_first_action_of_the_team_acknowledges() -> None:
    out = run(request("101", assignment_date=""))
    assert out.commands[1].type is CommandType.ACKNOWLEDGE
    assert out.commands[1].occurred_at == utc("2026-11-02T10:06:00+01:00")
    assert "déduite" in out.commands[1].payload["note"]
    assert out.commands[1].command_id == command_id_for("R-000101", "acknowledged", "2026-11-02 10:06:00")
    assert final_state(out).status is Status.CLOSED


def test_a_rejected_request_is_resolved_with_the_rejection() -> None:
    out = run(request("104", status="rejected", last_update="2026-11-28 09:00:00"))
    assert [c.type for c in out.commands] == [CommandType.FILE, CommandType.ACKNOWLEDGE, CommandType.RESOLVE]
    assert out.commands[2].payload == {"resolution": "Demande rejetée dans iTop."}
    later = run(request("104", status="rejected", last_update="2026-11-28 17:00:00"))
    assert [c.command_id for c in later.commands] == [c.command_id for c in out.commands]


def test_transitions_the_state_machine_refuses_are_skipped_not_sent() -> None:
    obj = request("102")
    early = {"date": "2026-10-24 10:00:00", "user_login": "Agent Support", "user_id": "3", "message": "Vu, on regarde."}
    out = run(ItopObject(obj.itop_class, obj.key, {**obj.fields, "public_log": {"entries": [early]}}))
    assert [c.type for c in out.commands] == [CommandType.FILE, CommandType.ACKNOWLEDGE]
    (skip,) = out.skipped
    assert (skip.field, skip.stamp, skip.command) == ("public_log", "2026-10-24 10:00:00", "inform")
    assert "pas encore pris en compte" in skip.reason and not skip.retry


def test_a_time_ahead_of_our_clock_is_retried_later() -> None:
    out = run(request("101"), now=datetime(2026, 11, 3, 12, 0, tzinfo=UTC))
    assert [c.type for c in out.commands][-1] is CommandType.WAIT_FOR_CUSTOMER
    assert out.skipped[0].retry and "futur" in out.skipped[0].reason


def test_no_start_date_no_ticket() -> None:
    out = run(request("104", start_date=""))
    assert not out.commands and out.skipped[0].field == "start_date"


def test_commands_survive_the_wire_and_a_resent_command_adds_nothing(policy: Policy) -> None:
    """The idempotency the connector relies on, in the ticket agent's own code."""
    processor = TicketProcessor(policy)
    ticket: Ticket | None = None
    emitted = []
    for command in run(request("101")).commands:
        data = encode_command(command)
        decoded = decode_command(data)
        assert (decoded.command_id, decoded.occurred_at, dict(decoded.payload)) == (
            command.command_id, command.occurred_at, dict(command.payload))
        step = processor.on_command(ticket, data, NOW)
        assert step.dead_letter is None and step.ticket is not None
        ticket = step.ticket
        emitted += step.emit
        again = processor.on_command(ticket, data, NOW)  # re-poll, restart, overlapping window
        assert again.emit == [] and again.ticket is None and again.dead_letter is None
    assert ticket is not None and ticket.status is Status.CLOSED
    assert [e.type for e in emitted][:2] == [EventType.TICKET_FILED, EventType.ACKNOWLEDGED]
    assert emitted[0].occurred_at == utc("2026-11-02T09:12:00+01:00") and emitted[0].actor == "itop:sync"


def test_ticket_ids_fit_the_rules() -> None:
    assert ticket_id_for("UserRequest", "123", "R-000123") == "IT-R-000123"
    assert ticket_id_for("Incident", "7", None) == "IT-Incident-7"
    odd = ticket_id_for("UserRequest", "9", "R 9/é" + "x" * 100)
    assert validate_ticket_id(odd) == odd and len(odd) == 64


def test_itop_times_and_text() -> None:
    assert parse_itop_time("", PARIS) is None and parse_itop_time(None, PARIS) is None
    # the autumn hour that happens twice: the first occurrence, on every poll
    assert parse_itop_time("2026-10-25 02:30:00", PARIS) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="Y-m-d H:i:s"):
        parse_itop_time("25/10/2026", PARIS)
    assert html_to_text("<p>Un&nbsp;<b>test</b></p><p>deux</p>") == "Un\xa0test\ndeux"
    assert slugify("Agglomération Montargoise ") == "agglomeration-montargoise"


def test_facts_older_than_the_policy_limit_are_reported_not_sent() -> None:
    """The worker would refuse them (its dating limit): the connector says so instead of
    sending commands that would only reach the dead letters."""
    from datetime import timedelta

    obj = request("101")  # filed at the end of October
    kept = translate(obj, REFERENCE, actor="itop:sync", tz=PARIS, now=NOW, max_backdate=timedelta(days=400))
    assert kept.commands and not kept.skipped
    old = translate(obj, REFERENCE, actor="itop:sync", tz=PARIS, now=NOW, max_backdate=timedelta(days=10))
    assert old.commands == []
    assert old.skipped and "10 jours" in old.skipped[0].reason


# --- the change log ----------------------------------------------------------------------

def changes(*items: tuple[str, str, str]) -> list[StatusChange]:
    return [StatusChange(date, old, new, op) for op, (date, old, new) in enumerate(items, start=1001)]


PAUSED_TWICE = changes(("2026-10-26 09:00:00", "new", "assigned"), ("2026-11-23 10:00:00", "assigned", "pending"),
                       ("2026-11-23 14:00:00", "pending", "assigned"), ("2026-11-24 09:00:00", "assigned", "pending"))


def test_three_status_changes_between_two_polls_are_three_facts_with_itops_times() -> None:
    before = run(request("102"), now=NOW)
    after_obj = request("102", status="pending", last_pending_date="2026-11-24 09:00:00",
                        last_update="2026-11-24 09:00:00")
    after = translate(after_obj, REFERENCE, actor="itop:sync", tz=PARIS, now=NOW, changes=PAUSED_TWICE)
    new = [c for c in after.commands if c.command_id not in {b.command_id for b in before.commands}]
    assert [(c.type, c.occurred_at) for c in new] == [
        (CommandType.WAIT_FOR_CUSTOMER, utc("2026-11-23T10:00:00+01:00")),
        (CommandType.CUSTOMER_RESPONSE, utc("2026-11-23T14:00:00+01:00")),  # leaving pending, at iTop's time
        (CommandType.WAIT_FOR_CUSTOMER, utc("2026-11-24T09:00:00+01:00")),
    ]
    assert not after.skipped and final_state(after).status is Status.WAITING_FOR_CUSTOMER
    # the snapshot alone keeps only the last pause: the first one is lost
    snapshot_only = run(after_obj)
    lost = [c for c in snapshot_only.commands if c.command_id not in {b.command_id for b in before.commands}]
    assert [(c.type, c.occurred_at) for c in lost] == [
        (CommandType.WAIT_FOR_CUSTOMER, utc("2026-11-24T09:00:00+01:00"))]
    # the fact both describe (the last pause, same iTop time) keeps the id the snapshot gave it
    assert lost[0].command_id == new[-1].command_id == command_id_for("R-000102", "last_pending_date",
                                                                       "2026-11-24 09:00:00")


def test_a_change_log_gives_the_same_ids_as_the_snapshot_for_the_same_facts() -> None:
    """R-000101 synced by a release that read only snapshots: reading its log sends nothing new."""
    log_101 = changes(("2026-11-02 10:05:00", "new", "assigned"), ("2026-11-02 10:06:01", "assigned", "pending"),
                      ("2026-11-03 14:20:00", "pending", "assigned"), ("2026-11-04 11:00:00", "assigned", "resolved"),
                      ("2026-11-12 11:00:00", "resolved", "closed"))
    with_log = translate(request("101"), REFERENCE, actor="itop:sync", tz=PARIS, now=NOW, changes=log_101)
    snapshot = run(request("101"))
    # the pending op is a second after last_pending_date (same request): the same fact, the snapshot's time
    assert steps(with_log) == steps(snapshot)
    assert [c.command_id for c in with_log.commands] == [c.command_id for c in snapshot.commands]


def test_reopen_and_close_from_the_change_log() -> None:
    log_105 = changes(("2026-11-16 10:30:00", "new", "assigned"), ("2026-11-17 16:00:00", "assigned", "resolved"),
                      ("2026-11-18 09:15:00", "resolved", "assigned"), ("2026-11-19 10:00:00", "assigned", "resolved"),
                      ("2026-11-27 10:00:00", "resolved", "closed"))
    obj = request("105", status="closed", resolution_date="2026-11-19 10:00:00", close_date="2026-11-27 10:00:00",
                  last_update="2026-11-27 10:00:00")
    out = translate(obj, REFERENCE, actor="itop:sync", tz=PARIS, now=NOW, changes=log_105)
    tail = [(c.type, c.occurred_at) for c in out.commands if c.type in (
        CommandType.RESOLVE, CommandType.REOPEN, CommandType.CLOSE)]
    assert tail == [(CommandType.RESOLVE, utc("2026-11-17T16:00:00+01:00")),
                    (CommandType.REOPEN, utc("2026-11-18T09:15:00+01:00")),
                    (CommandType.RESOLVE, utc("2026-11-19T10:00:00+01:00")),
                    (CommandType.CLOSE, utc("2026-11-27T10:00:00+01:00"))]
    assert final_state(out).status is Status.CLOSED
    reopen = next(c for c in out.commands if c.type is CommandType.REOPEN)
    assert reopen.command_id == command_id_for("R-000105", "reopen", "2026-11-17 16:00:00")


def test_a_rejection_from_the_change_log_keeps_its_single_id() -> None:
    log_104 = changes(("2026-11-27 16:00:00", "new", "rejected"))
    obj = request("104", status="rejected", last_update="2026-11-27 16:30:00")
    out = translate(obj, REFERENCE, actor="itop:sync", tz=PARIS, now=NOW, changes=log_104)
    rejected = [c for c in out.commands if c.type is CommandType.RESOLVE]
    assert [(c.occurred_at, c.command_id) for c in rejected] == [
        (utc("2026-11-27T16:00:00+01:00"), command_id_for("R-000104", "rejected", ""))]
    assert [c.command_id for c in run(obj).commands if c.type is CommandType.RESOLVE] == [rejected[0].command_id]


def test_a_bad_date_in_the_change_log_is_reported_not_fatal() -> None:
    out = translate(request("102"), REFERENCE, actor="itop:sync", tz=PARIS, now=NOW,
                    changes=changes(("2026-11-23T10:00", "assigned", "pending")))
    assert [(s.field, s.stamp) for s in out.skipped] == [("status", "2026-11-23T10:00")]
    assert [c.type for c in out.commands] == [c.type for c in run(request("102")).commands]
