"""The pages' forms: who sees which action, the form token, and a form read as the API's body."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.principal import Principal
from sla.policy import Policy
from sla.ticket import CommandType, Status
from slaledger.web import actions
from slaledger.web.access import BadRequest
from slaledger.web.commands import command_from_body

PARIS = ZoneInfo("Europe/Paris")
AGENT = Principal("t1", "agent", None, "agent:marie")
REFERENT = Principal("t2", "referent", "commune-de-blois", "référente")
AUDITOR = Principal("t3", "auditor", None, "audit")


def names(forms: list[actions.ActionForm]) -> list[str]:
    return [f.action for f in forms]


def test_the_support_team_sees_what_the_status_allows() -> None:
    assert names(actions.forms_for(AGENT, "open", "incident")) == ["acknowledge", "customer-response", "reclassify"]
    assert names(actions.forms_for(AGENT, "in_progress", "incident")) == [
        "inform", "wait-for-customer", "customer-response", "reclassify", "resolve"]
    assert names(actions.forms_for(AGENT, "resolved", "incident")) == ["close", "reopen"]
    assert actions.forms_for(AGENT, "closed", "incident") == []


def test_a_referent_answers_and_an_auditor_reads() -> None:
    for status in Status:
        assert set(names(actions.forms_for(REFERENT, status.value, "go_live"))) <= {"customer-response"}
        assert actions.forms_for(AUDITOR, status.value, "incident") == []
    assert names(actions.forms_for(REFERENT, "waiting_for_customer", "go_live")) == ["customer-response"]
    # a referent does not date their facts: no date input
    (form,) = actions.forms_for(REFERENT, "in_progress", "go_live")
    assert "occurred_at" not in [f.name for f in form.fields]


def test_inputs_follow_the_kind() -> None:
    def inform_fields(kind: str) -> list[str]:
        (form,) = [f for f in actions.forms_for(AGENT, "in_progress", kind) if f.action == "inform"]
        return [f.name for f in form.fields]

    assert inform_fields("incident") == ["message", "restoration_eta", "occurred_at"]
    assert inform_fields("administrative") == ["message", "answer", "occurred_at"]
    assert inform_fields("assistance") == ["message", "occurred_at"]


@pytest.mark.parametrize(("local", "instant"), [("2026-01-15T09:30", "2026-01-15T09:30:00+01:00"),
                                                  ("2026-07-15T09:30", "2026-07-15T09:30:00+02:00")])
def test_a_browser_date_is_read_in_paris_time(local: str, instant: str) -> None:
    fields = actions.action_fields(CommandType.INFORM, "incident", True)
    body = actions.body_from_form(fields, {"message": "ok", "restoration_eta": local}, PARIS)
    assert body == {"message": "ok", "restoration_eta": instant}


def test_empty_inputs_are_left_out_and_boxes_are_booleans() -> None:
    fields = actions.action_fields(CommandType.CUSTOMER_RESPONSE, "go_live", False)
    assert actions.body_from_form(fields, {"message": "  "}, PARIS) == {"elements_complete": False}
    assert actions.body_from_form(fields, {"message": "voici", "elements_complete": "on"}, PARIS) == {
        "message": "voici", "elements_complete": True}
    # the body goes through the API's own validation
    command = command_from_body(CommandType.CUSTOMER_RESPONSE, "SL-1", {"elements_complete": True}, REFERENT)
    assert command.payload == {"elements_complete": True} and command.scope_member == "commune-de-blois"


def test_bad_input_is_a_french_422() -> None:
    fields = actions.action_fields(CommandType.INFORM, "incident", True)
    with pytest.raises(BadRequest) as missing:
        actions.body_from_form(fields, {"message": ""}, PARIS)
    assert missing.value.status == 422 and missing.value.field == "message" and "à renseigner" in missing.value.message
    with pytest.raises(BadRequest) as bad_date:
        actions.body_from_form(fields, {"message": "x", "restoration_eta": "demain"}, PARIS)
    assert bad_date.value.field == "restoration_eta" and "date et heure attendues" in bad_date.value.message


@pytest.mark.parametrize("raw", ["0001-01-01T00:00", "0001-01-01T00:08"])
def test_a_date_in_year_one_is_a_french_422(raw: str) -> None:
    """Year 1 in Paris (local mean time, +0:09) is before the first instant Python holds in UTC."""
    fields = actions.action_fields(CommandType.INFORM, "incident", True)
    with pytest.raises(BadRequest) as refused:
        actions.body_from_form(fields, {"message": "x", "restoration_eta": raw}, PARIS)
    assert refused.value.status == 422 and refused.value.field == "restoration_eta"
    assert "hors des dates acceptées" in refused.value.message


def test_a_referent_files_on_the_portal_for_their_member() -> None:
    assert "member" not in [f.name for f in actions.filing_fields(REFERENT)]
    body = actions.filing_body(REFERENT, {"kind": "assistance", "product": "ent", "subject": "Compte"}, PARIS)
    command = command_from_body(CommandType.FILE, "SL-2", body, REFERENT)
    assert command.payload["channel"] == "portal" and command.payload["member"] == "commune-de-blois"


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_a_form_token_belongs_to_its_session(session: str, other: str) -> None:
    token = actions.form_token(session)
    assert actions.form_token_ok(session, token)
    assert actions.form_token_ok(other, token) == (other == session)
    assert not actions.form_token_ok(session, "")


def test_form_keys_are_accepted_only_in_their_own_shape() -> None:
    key = actions.new_form_key()
    assert actions.posted_form_key({"form_key": key}) == key
    assert actions.posted_form_key({"form_key": "form-<script>"}) is None
    assert actions.posted_form_key({}) is None


@pytest.mark.parametrize(("local", "why"), [("2026-03-29T02:30", "n'existe pas"), ("2026-10-25T02:30", "deux fois")])
def test_a_clock_change_is_never_guessed(local: str, why: str) -> None:
    fields = actions.action_fields(CommandType.INFORM, "incident", True)
    with pytest.raises(BadRequest) as refused:
        actions.body_from_form(fields, {"message": "x", "restoration_eta": local}, PARIS)
    assert refused.value.status == 422 and why in refused.value.message


def test_too_long_or_control_characters_are_refused_in_french() -> None:
    fields = actions.filing_fields(AGENT)
    base = {"member": "m", "kind": "incident", "channel": "portal", "product": "p", "subject": "s"}
    with pytest.raises(BadRequest, match="501 caractères, 500 au plus"):
        actions.body_from_form(fields, {**base, "subject": "x" * 501}, PARIS)
    with pytest.raises(BadRequest, match="caractère de contrôle"):
        actions.body_from_form(fields, {**base, "subject": "a\x1bb"}, PARIS)
    assert actions.body_from_form(fields, {**base, "description": "ligne 1\r\nligne 2\tfin"}, PARIS)["description"]


def test_a_non_ascii_form_token_is_refused_not_an_error() -> None:
    assert not actions.form_token_ok("session", "jéton")


def test_a_refused_action_keeps_its_key_and_its_text_even_when_no_longer_offered(policy: Policy) -> None:
    from datetime import UTC, datetime

    from sla.ticket import Command, Ticket, decide
    from sla.view import ticket_view
    from slaledger.web.render import ticket_page

    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    ticket = Ticket("SL-3")
    for command in (Command(CommandType.FILE, "SL-3", "a", {"kind": "assistance", "channel": "portal",
                                                             "product": "ent", "member": "commune-de-blois",
                                                             "subject": "s"}, now),
                    Command(CommandType.ACKNOWLEDGE, "SL-3", "a", {}, now),
                    Command(CommandType.RESOLVE, "SL-3", "a", {}, now)):
        for event in decide(ticket if ticket.exists else None, command, now):
            ticket.apply(event)
    view = ticket_view(ticket, policy, now)
    form = {"action": "customer-response", "message": "<b>ma réponse</b>", "form_key": "form-" + "k" * 24}
    refusal = {"action": "customer-response", "message": "Impossible : il est résolu.", "values": form,
               "form_key": actions.posted_form_key(form), "typed": actions.typed(form)}
    html = ticket_page(view, None, REFERENT, now, PARIS, token="t", refusal=refusal)
    assert "Action refusée : Impossible : il est résolu." in html
    assert "&lt;b&gt;ma réponse&lt;/b&gt;" in html and "<b>ma" not in html
    offered = ticket_page(view, None, AGENT, now, PARIS, token="t",
                          refusal={**refusal, "action": "close"})
    assert 'value="form-' + "k" * 24 + '"' in offered
