"""The products catalogue (the policy) and how a typed name becomes the slug an event stores (#32, item 4)."""

from __future__ import annotations

import pytest

from sla.catalogue import Catalogue, Entry, UnknownName, folded
from sla.clock import ClockStatus, evaluate
from sla.events import EventType, new_event
from sla.policy import Policy, PolicyError, parse_policy
from sla.ticket import Command, CommandType, DomainError, Ticket, decide, fold
from streams.codec import encode_command
from streams.processor import TicketProcessor
from tests.conftest import at

NOW = at("2026-12-07T10:00:00+01:00")  # a Monday, in the intake window
FILING = {"kind": "incident", "channel": "portal", "member": "commune-de-blois", "subject": "Panne"}


def filed(policy: Policy, product: str) -> Ticket:
    events = decide(None, Command(CommandType.FILE, "SL-1", "agent:alice", {**FILING, "product": product}), NOW,
                    policy=policy)
    return fold(events)


@pytest.mark.parametrize("typed", ["local-trust-mpe", "Local Trust MPE", "LOCAL TRUST MPE", "local trust mpe",
                                   "Plate-forme de marchés publics", "plateforme de marches publics", " MPE "])
def test_a_name_or_an_alias_is_stored_as_the_slug_and_excluded(policy: Policy, typed: str) -> None:
    ticket = filed(policy, typed)
    assert ticket.product == "local-trust-mpe"
    intake = next(c for c in evaluate(ticket, policy, NOW) if c.sla == "intake")
    assert intake.status is ClockStatus.EXCLUDED


def test_an_unknown_product_is_refused_with_the_closest_names(policy: Policy) -> None:
    with pytest.raises(DomainError) as refused:
        filed(policy, "Local Trus MPE")
    assert refused.value.code == "invalid"
    assert refused.value.message == "Produit inconnu : « Local Trus MPE » (produits proches : Local Trust MPE)."
    with pytest.raises(DomainError) as nothing_close:
        filed(policy, "zzz")
    assert "aucun produit proche ; produits connus : ENT NetOCentre, Parapheur électronique (parapheur)" in (
        nothing_close.value.message)


def test_a_reclassification_names_a_catalogue_product_too(policy: Policy) -> None:
    ticket = filed(policy, "parapheur")
    events = decide(ticket, Command(CommandType.RECLASSIFY, "SL-1", "agent:alice", {"product": "Local Trust MPE"}),
                    NOW, policy=policy)
    assert events[0].payload["product"] == "local-trust-mpe"
    with pytest.raises(DomainError, match="ne change ni"):  # the same product, by its name
        decide(ticket, Command(CommandType.RECLASSIFY, "SL-1", "agent:alice", {"product": "Parapheur électronique"}),
               NOW, policy=policy)
    with pytest.raises(DomainError, match="Produit inconnu : « Parafeur »"):
        decide(ticket, Command(CommandType.RECLASSIFY, "SL-1", "agent:alice", {"product": "Parafeur"}), NOW,
               policy=policy)


def test_the_worker_answers_an_unknown_product_as_invalid(policy: Policy) -> None:
    command = Command(CommandType.FILE, "SL-1", "agent:alice", {**FILING, "product": "parafeur"}, reply=True)
    step = TicketProcessor(policy).on_command(None, encode_command(command), NOW)
    assert step.outcome is not None and step.outcome.result == "invalid"
    assert "Parapheur électronique (parapheur)" in step.outcome.body["error"]
    assert not step.emit


def test_an_event_already_in_the_log_with_free_text_folds_as_before(policy: Policy) -> None:
    """The log is never rewritten and a stored product is never re-read through the catalogue:
    a ticket filed as « Local Trust MPE » before the catalogue keeps its running clocks."""
    old = new_event(EventType.TICKET_FILED, "SL-OLD", occurred_at=NOW, recorded_at=NOW, actor="agent:alice",
                    payload={**FILING, "product": "Local Trust MPE"})
    ticket = fold([old])
    assert ticket.product == "Local Trust MPE"
    intake = next(c for c in evaluate(ticket, policy, NOW) if c.sla == "intake")
    assert intake.status is ClockStatus.RUNNING
    assert policy.products.name("Local Trust MPE") == "Local Trust MPE"  # shown as typed
    assert policy.products.name("parapheur") == "Parapheur électronique"


def test_folding_ignores_case_accents_and_punctuation() -> None:
    assert folded("Lycée Descartes (Tours)") == "lycee descartes tours"
    catalogue = Catalogue.of("member", [Entry("lycee-descartes-tours", "Lycée Descartes (Tours)")])
    assert catalogue.resolve("LYCEE DESCARTES, TOURS") == "lycee-descartes-tours"
    with pytest.raises(UnknownName, match="Membre inconnu : « Lycée Decartes » \\(membres proches : Lycée"):
        catalogue.resolve("Lycée Decartes")


MINIMAL = """
[products.parapheur]
name = "Parapheur"
{extra}
[[versions]]
id = "v1"
effective_from = "2020-01-01T00:00:00Z"
timezone = "Europe/Paris"
[versions.excluded_products]
{excluded} = "Éditeur"
[[versions.slas]]
name = "intake"
rule = "elapsed"
duration = "4h"
starts_on = ["filed"]
stops_on = ["acknowledged"]
"""


@pytest.mark.parametrize(("extra", "excluded", "fragment"), [
    ("", '"local-trust-mpe"', "['local-trust-mpe'] not in the [products] catalogue"),
    ('[products.parapheur-2]\nname = "parapheur"', "parapheur", "'parapheur' of 'parapheur-2' also names 'parapheur'"),
    ('[products."Bad Slug"]\nname = "x"', "parapheur", "a slug is lowercase letters"),
    ('[products.x]\nname = "X"\nalias = ["y"]', "parapheur", "unknown key(s) ['alias']"),
])
def test_a_bad_catalogue_is_refused(extra: str, excluded: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(MINIMAL.format(extra=extra, excluded=excluded))
    assert fragment in str(exc.value)


def test_a_policy_without_a_catalogue_takes_any_product() -> None:
    policy = parse_policy(MINIMAL.replace('[products.parapheur]\nname = "Parapheur"', "").format(
        extra="", excluded='"vendor-x"'))
    assert not policy.products
    assert filed(policy, "anything").product == "anything"
