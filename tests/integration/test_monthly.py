"""The monthly statement (issue #16) read from a real PostgreSQL projection, filled by the
projector's own code (``Projection.apply_batch``) with a realistic November 2026 for two
members: the counts, the breaches and their explanations, the month boundaries, and the
agreement with the archive and with the dispute file."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from projections import monthly
from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import archive_records
from projections.deliveries import record_sent, sent, was_sent
from projections.models import HEADS
from projections.projection import Incoming, Projection
from projections.queries import ticket_events
from sla.events import Event, EventType, encode_event
from sla.policy import Policy
from sla.ticket import fold
from streams.topics import EVENTS
from tests.conftest import at, ev, filed, projected

pytestmark = pytest.mark.integration
BLOIS, LYCEE = "commune-de-blois", "lycee-descartes"
ISSUED = at("2026-12-01T06:00:00+01:00")


def november() -> list[Event]:
    """What happened, in log order (a late acknowledgement typed in after the breach fact)."""
    breach_at = at("2026-11-16T13:00:00+01:00")
    return [
        # intake met on Monday 2 November
        filed("2026-11-02T09:00:00+01:00", ticket_id="B-OK", member=BLOIS),
        ev(EventType.ACKNOWLEDGED, "2026-11-02T10:00:00+01:00", "B-OK"),
        ev(EventType.RESOLVED, "2026-11-02T16:00:00+01:00", "B-OK", resolution="Mot de passe réinitialisé"),
        ev(EventType.CLOSED, "2026-11-03T09:00:00+01:00", "B-OK"),
        # filed Friday 30 October after hours: due Monday 2 November 12:00, acknowledged on Tuesday
        filed("2026-10-30T17:00:00+01:00", ticket_id="B-LATE", member=BLOIS),
        ev(EventType.ACKNOWLEDGED, "2026-11-03T09:00:00+01:00", "B-LATE"),
        # an administrative request by phone, answered after its week: breached on 2 November
        filed("2026-10-26T10:00:00+01:00", ticket_id="B-ADMIN", member=BLOIS, kind="administrative",
              channel="phone"),
        ev(EventType.ACKNOWLEDGED, "2026-10-26T11:00:00+01:00", "B-ADMIN"),
        ev(EventType.CUSTOMER_INFORMED, "2026-11-04T10:00:00+01:00", "B-ADMIN", message="Réponse", answer=True),
        # a go-live with its elements on 20 October, paused 11 days waiting for the member,
        # done on 28 November: met in November
        filed("2026-10-20T10:00:00+02:00", ticket_id="B-GOLIVE", member=BLOIS, kind="go_live", channel="email",
              elements_complete=True),
        ev(EventType.ACKNOWLEDGED, "2026-10-20T11:00:00+02:00", "B-GOLIVE"),
        ev(EventType.WAITING_FOR_CUSTOMER, "2026-10-25T10:00:00+01:00", "B-GOLIVE", reason="Certificat attendu"),
        ev(EventType.CUSTOMER_RESPONDED, "2026-11-05T10:00:00+01:00", "B-GOLIVE", elements_complete=True,
           message="Certificat fourni"),
        ev(EventType.RESOLVED, "2026-11-28T10:00:00+01:00", "B-GOLIVE", resolution="En production"),
        # an incident handled by the book
        filed("2026-11-09T09:00:00+01:00", ticket_id="B-INC", member=BLOIS, kind="incident"),
        ev(EventType.ACKNOWLEDGED, "2026-11-09T09:30:00+01:00", "B-INC"),
        ev(EventType.CUSTOMER_INFORMED, "2026-11-09T11:00:00+01:00", "B-INC", message="Rétablissement prévu",
           restoration_eta=at("2026-11-09T15:00:00+01:00")),
        ev(EventType.RESOLVED, "2026-11-09T14:00:00+01:00", "B-INC", resolution="Rétabli"),
        # the public-procurement platform: outside the commitments under convention-2026.1
        filed("2026-11-12T09:00:00+01:00", ticket_id="B-MPE", member=BLOIS, product="local-trust-mpe"),
        # a breach declared at 13:00, then an acknowledgement made at 12:00 typed in at 14:00
        filed("2026-11-16T09:00:00+01:00", ticket_id="B-RETRACT", member=BLOIS),
        ev(EventType.SLA_BREACHED, breach_at, "B-RETRACT", sla="intake", deadline=breach_at,
           policy_version="convention-2026.1", explanation="Rien n'était enregistré à l'échéance."),
        ev(EventType.ACKNOWLEDGED, "2026-11-16T12:00:00+01:00", "B-RETRACT", recorded="2026-11-16T14:00:00+01:00"),
        # filed on the last afternoon, due at 19:00 and acknowledged on 1 December: November's breach
        filed("2026-11-30T15:00:00+01:00", ticket_id="B-LAST", member=BLOIS),
        ev(EventType.ACKNOWLEDGED, "2026-12-01T09:00:00+01:00", "B-LAST"),
        # an administrative request still within its week at the month's end: December's
        filed("2026-11-27T10:00:00+01:00", ticket_id="B-OPEN", member=BLOIS, kind="administrative",
              channel="phone"),
        # another member's breach: never in Blois' statement
        filed("2026-11-03T09:00:00+01:00", ticket_id="L-LATE", member=LYCEE),
    ]


@pytest.fixture
def engine(database: str):  # type: ignore[no-untyped-def]
    engine = projected(database, november(), monthly_policy())
    yield engine
    engine.dispose()


def monthly_policy() -> Policy:
    from slaledger.settings import load_policy

    return load_policy()


def test_the_statement_from_postgresql(engine, policy: Policy) -> None:  # type: ignore[no-untyped-def]
    doc = monthly.build(engine, policy, monthly.Month(2026, 11), member=BLOIS, member_name="Commune de Blois",
                        generated_at=ISSUED)
    verdicts = {(c["ticket_id"], c["sla"]): c["verdict"] for c in doc["clocks"]}
    assert verdicts == {
        ("B-OK", "intake"): "met",
        ("B-LATE", "intake"): "breached",
        ("B-ADMIN", "administrative_answer"): "breached",
        ("B-GOLIVE", "go_live"): "met",
        ("B-INC", "intake"): "met",
        ("B-INC", "incident_eta"): "met",
        ("B-INC", "incident_update"): "met",
        ("B-MPE", "intake"): "excluded",
        ("B-RETRACT", "intake"): "retracted",
        ("B-LAST", "intake"): "breached",
    }
    summary = {s["sla"]: s for s in doc["summary"]}
    assert (summary["intake"]["met"], summary["intake"]["breached"], summary["intake"]["retracted"],
            summary["intake"]["excluded"], summary["intake"]["rate"]) == (2, 2, 1, 1, 0.5)
    assert summary["administrative_answer"]["rate"] == 0.0 and summary["go_live"]["rate"] == 1.0
    assert doc["open_at_end"] == 1  # B-OPEN, due in December
    assert not doc["provisional"] and doc["head"] is None
    breaches = {(b["ticket_id"], b["sla"]): b for b in doc["breaches"]}
    assert breaches[("B-LAST", "intake")]["decided_at"] == "2026-11-30T18:00:00Z"  # 19:00 in Paris
    assert "échéance dépassée de 14 h" in breaches[("B-LAST", "intake")]["explanation"]
    assert all(not c["ticket_id"].startswith("L-") for c in doc["clocks"])

    # the same statement folded from the archive's events (the projection agrees with the log)
    tickets = [fold(ticket_events(engine, t.ticket_id)) for t in monthly.member_tickets(engine, BLOIS, ISSUED)]
    assert monthly.statement(tickets, policy, monthly.Month(2026, 11), member=BLOIS, member_name="Commune de Blois",
                             generated_at=ISSUED, head=None) == doc

    # each breach explained in the very words of the dispute file
    dispute = dispute_file(replay(archive_records(engine), policy, Filters(member=BLOIS), source="archive",
                                  engine=engine))
    assert dispute["integrity"]["ok"]
    explained = {(t["ticket_id"], c["sla"]): c["explanation"] for t in dispute["tickets"] for c in t["clocks"]}
    for key, breach in breaches.items():
        assert breach["explanation"] == explained[key], key

    october = monthly.build(engine, policy, monthly.Month(2026, 10), member=BLOIS, member_name="Commune de Blois",
                            generated_at=ISSUED)
    assert {(c["ticket_id"], c["verdict"]) for c in october["clocks"]} == set()  # nothing was decided in October
    december = monthly.build(engine, policy, monthly.Month(2026, 12), member=BLOIS, member_name="Commune de Blois",
                             generated_at=ISSUED + timedelta(days=10))
    assert ("B-OPEN", "administrative_answer", "breached") in {
        (c["ticket_id"], c["sla"], c["verdict"]) for c in december["clocks"]}


def test_the_pdf_reads_the_statement(engine, policy: Policy) -> None:  # type: ignore[no-untyped-def]
    doc = monthly.build(engine, policy, monthly.Month(2026, 11), member=BLOIS, member_name="Commune de Blois",
                        generated_at=ISSUED, head={"tree_size": 26, "root_hash": "ab" * 32,
                                                   "timestamp": "2026-11-30T23:00:00Z", "signature": "c2ln",
                                                   "key_id": "gip-2026"})
    html = monthly.to_html(doc)
    assert "Relevé mensuel de conformité" in html and "novembre 2026" in html and 'lang="fr"' in html
    assert "Tête d'arbre signée à la fin du mois" in html and "gip-2026" in html
    assert "Empreinte de la clé publique" in html
    assert "50,0 %" in html  # intake: 2 met of 4 judged
    assert monthly.to_pdf(doc).startswith(b"%PDF-")


def test_what_was_sent_is_recorded(engine) -> None:  # type: ignore[no-untyped-def]
    assert not was_sent(engine, BLOIS, "2026-11")
    for digest in ("0" * 64, "1" * 64):  # a statement sent again by hand replaces the record
        record_sent(engine, member=BLOIS, month="2026-11", recipient="dsi@blois.fr", message_id="<m@x>",
                    pdf_sha256=digest, sent_at=ISSUED)
    assert was_sent(engine, BLOIS, "2026-11") and not was_sent(engine, LYCEE, "2026-11")
    assert [(r["member"], r["month"], r["pdf_sha256"]) for r in sent(engine)] == [(BLOIS, "2026-11", "1" * 64)]


def test_the_statement_carries_the_head_that_covers_the_month(engine, policy: Policy) -> None:  # type: ignore[no-untyped-def]
    """The first head signed after the month's end covers the whole month; it verifies with
    the operator's public key, and an earlier one is used only when none came after."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from projections.heads import SignedHead, sign_head
    from projections.tree import tree_size

    key = Ed25519PrivateKey.generate()
    end = monthly.Month(2026, 11).bounds(policy.versions[-1].tz)[1]
    before = sign_head(engine, key, policy, now=end - timedelta(hours=5))
    assert monthly.monthly_head(engine, end) == before.to_dict()  # none after: the last before
    after = sign_head(engine, key, policy, now=end + timedelta(hours=6))
    sign_head(engine, key, policy, now=end + timedelta(days=2))
    head = monthly.monthly_head(engine, end)
    assert head == after.to_dict()
    with engine.connect() as conn:
        assert head["tree_size"] == tree_size(conn)
    assert SignedHead.from_dict(head).verify(key.public_key())
    doc = monthly.build(engine, policy, monthly.Month(2026, 11), member=BLOIS, member_name="Commune de Blois",
                        generated_at=ISSUED, head=head)
    assert doc["head"]["root_hash"] == after.to_dict()["root_hash"]


def test_a_head_signed_before_the_month_ends_says_what_it_leaves_out(engine, policy: Policy) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from projections.heads import sign_head
    from slaledger.members import Member
    from slaledger.report_cli import email_body, produce

    end = monthly.Month(2026, 11).bounds(policy.versions[-1].tz)[1]
    sign_head(engine, Ed25519PrivateKey.generate(), policy, now=end - timedelta(hours=1))
    doc = produce(engine, policy, Member(BLOIS, "Commune de Blois", ""), monthly.Month(2026, 11), ISSUED)
    assert doc["head"] is not None and doc["head_uncovered"] == 0  # nothing archived after it: it seals the month
    with engine.begin() as conn:  # a head that missed the month's last events
        conn.execute(HEADS.update().values(tree_size=HEADS.c.tree_size - 2))
    doc = produce(engine, policy, Member(BLOIS, "Commune de Blois", ""), monthly.Month(2026, 11), ISSUED)
    assert doc["head_uncovered"] == 2
    assert "ne couvre pas ses 2 dernier(s) événement(s)" in monthly.to_html(doc)
    assert "ne couvre pas les 2 dernier(s)" in email_body(doc)


def test_a_members_statements_form_a_chain_checked_offline(engine, policy: Policy, tmp_path,  # type: ignore[no-untyped-def]
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Each statement carries its month's checkpoint and the consistency proof from the
    previous month's; ``audit check-statements`` checks the chain with the key alone."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from projections.heads import public_pem, sign_head
    from slaledger.cli import main
    from slaledger.members import Member
    from slaledger.report_cli import produce

    key = Ed25519PrivateKey.generate()
    tz = policy.versions[-1].tz
    october, november_ = monthly.Month(2026, 10), monthly.Month(2026, 11)
    first = sign_head(engine, key, policy, now=october.bounds(tz)[1] + timedelta(hours=1))
    with engine.begin() as conn:  # December's first events, archived after October's head
        later = [filed("2026-12-02T09:00:00+01:00", ticket_id=f"B-DEC-{i}", member=BLOIS) for i in range(3)]
        Projection(monthly_policy()).apply_batch(conn, [Incoming(EVENTS, 0, 1000 + i, encode_event(e))
                                                        for i, e in enumerate(later)])
    second = sign_head(engine, key, policy, now=november_.bounds(tz)[1] + timedelta(hours=1))
    assert second.tree_size == first.tree_size + 3
    member = Member(BLOIS, "Commune de Blois", "")
    docs = {m: produce(engine, policy, member, m, ISSUED + timedelta(days=2)) for m in (october, november_)}
    link = docs[november_]["previous"]
    assert link["month"] == "2026-10" and link["head"] == docs[october]["head"] == first.to_dict()
    assert docs[november_]["head"] == second.to_dict() and len(link["consistency_proof"]) >= 1
    assert "Lien avec le relevé de 2026-10" in monthly.to_html(docs[november_])
    files = []
    for m, doc in docs.items():
        files.append(tmp_path / f"{m}.json")
        files[-1].write_text(monthly.to_json(doc), encoding="utf-8")
    (tmp_path / "gip.pub").write_bytes(public_pem(key.public_key()))
    check = ["audit", "check-statements", "--public-key", str(tmp_path / "gip.pub")]
    capsys.readouterr()
    assert main([*check, *map(str, files)]) == 0
    assert capsys.readouterr().out.startswith("OK : 2 relevé(s)")
    assert main([*check, *map(str, files[::-1])]) == 1  # out of order
    assert "relevé manquant ou dans le désordre" in capsys.readouterr().out
    rewritten = json.loads(files[1].read_text(encoding="utf-8"))
    rewritten["previous"]["consistency_proof"][0] = "ab" * 32
    files[1].write_text(json.dumps(rewritten), encoding="utf-8")
    assert main([*check, *map(str, files)]) == 1
    assert "ne prolonge pas celui du mois précédent" in capsys.readouterr().out
    files[1].write_text("{", encoding="utf-8")
    assert main([*check, *map(str, files)]) == 2
    assert capsys.readouterr().err.startswith("slaledger: error: ")
