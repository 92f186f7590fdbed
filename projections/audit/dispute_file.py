"""The dispute file: the replay written as a machine-readable document (stable schema
``slaledger.dispute-file/1``, checked offline by ``projections.dispute_check``), with each
event's inclusion proof and the policy's readings of Article 4 in French.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

from sla import french
from sla.events import EventType, format_instant
from sla.policy import PolicyVersion
from sla.readings import pause_reading
from sla.view import antedated

from ..archive_hash import digest as archive_digest
from ..dispute_check import FILE_SCHEMA, clock_doc
from .replay import AuditResult, SlaSummary, clocks
from .sources import LogRecord


def dispute_file(result: AuditResult) -> dict[str, Any]:
    """The machine-readable dispute file (stable schema ``slaledger.dispute-file/1``)."""
    # the instant written in the file (to the second): the offline check re-folds at it
    now = result.filters.as_of or result.generated_at.replace(microsecond=0)
    tickets = []
    summary: dict[str, SlaSummary] = defaultdict(SlaSummary)
    for sla, closed in result.closed_summary.items():
        summary[sla] = SlaSummary(closed.met, closed.breached, closed.retracted, closed.excluded, closed.open,
                                  list(closed.breaches))
    for ticket_id in sorted(result.tickets):
        audit = result.tickets[ticket_id]
        then = clocks(audit.known_then, result.policy, now)
        today = clocks(audit.full_log, result.policy, now) if result.filters.as_of else []
        known = audit.known_then
        assert known is not None
        # from the whole log: an --as-of view still flags a fact dated back into its past
        flagged = {a["event_id"]: a for a in antedated(audit.full_log or known, result.policy)}
        for clock in then:
            summary[clock.sla].add(ticket_id, known.member, clock)
        tickets.append({
            "ticket_id": ticket_id,
            "member": known.member, "kind": known.kind, "channel": known.channel, "product": known.product,
            "subject": known.subject,
            "filed_at": format_instant(known.filed_at) if known.filed_at else None,
            "timeline": [
                {
                    "event_id": str(e.event_id), "type": str(e.type),
                    "occurred_at": format_instant(e.occurred_at), "recorded_at": format_instant(e.recorded_at),
                    "actor": e.actor, "source": r.source,
                    "hash": r.hash or archive_digest(r.raw),
                    "known_at_as_of": result.filters.as_of is None or e.recorded_at <= result.filters.as_of,
                    # dated by its author more than the policy allows without notice before it
                    # was recorded (« antidaté »): who did it is the actor
                    "antedated": str(e.event_id) in flagged,
                    # an inform marked as the answer to the request (it stops the administrative week)
                    "answer": e.type is EventType.CUSTOMER_INFORMED and bool(e.payload.get("answer")),
                    **_proof(result.evidence, str(e.event_id), r),
                }
                for e, r in audit.timeline
            ],
            "clocks": [clock_doc(c) for c in then],
            "full_log_view": [clock_doc(c) for c in today] if result.filters.as_of else None,
            # the ticket's entry in the head's map of histories: the timeline is its whole history
            "history_proof": (result.evidence or {}).get("histories", {}).get(ticket_id),
        })
    per_sla = {}
    titles = {d.name: d.title for v in result.policy.versions for d in v.slas}
    for sla, b in sorted(summary.items()):
        decided = b.met + b.breached + b.retracted
        per_sla[sla] = {"title": titles.get(sla, sla),
                        "met": b.met, "breached": b.breached, "retracted": b.retracted, "excluded": b.excluded,
                        "open": b.open, "breaches": sorted(b.breaches, key=lambda x: x["ticket"]),
                        "compliance_percent": round(100 * (b.met + b.retracted) / decided, 2) if decided else None}
    f = result.filters
    return {
        "schema": FILE_SCHEMA,
        "generated_at": format_instant(result.generated_at.replace(microsecond=0)),
        "source": result.source,
        "filters": {"ticket": f.ticket, "member": f.member,
                    "from": format_instant(f.filed_from) if f.filed_from else None,
                    "to": format_instant(f.filed_to) if f.filed_to else None,
                    "as_of": format_instant(f.as_of) if f.as_of else None},
        # the signed tree head and, per event above, its leaf and audit path (None: no tree read)
        "evidence": ({k: v for k, v in result.evidence.items() if k not in ("proofs", "histories")}
                     if result.evidence else None),
        "integrity": {"ok": result.ok, "verified": result.verified, "chain_head": result.chain_head,
                      "events_read": result.events_read,
                      "resent_records": result.resent_records,
                      "findings": [x.to_dict() for x in result.findings]},
        "summary": per_sla,
        # Closed tickets of a whole-log replay count in the summary only (see ``replay``).
        "closed_tickets_in_summary_only": result.closed_summarized,
        "tickets": tickets,
        # how the policy read Article 4 (quoted in the HTML and PDF), and its time zone
        "timezone": result.policy.versions[-1].tz.key,
        # each version's text, whose SHA-256 the head signs: the verifier re-folds with it
        "policy_versions": [{"id": v.id, "effective_from": format_instant(v.effective_from),
                             "readings": policy_readings(v), "text": v.text} for v in result.policy.versions],
    }


def _proof(evidence: dict[str, Any] | None, event_id: str, record: LogRecord) -> dict[str, Any]:
    """An event's inclusion proof in the file: the exact archived bytes (the leaf is their
    hash), its leaf index and audit path to the file's signed head (None: not covered)."""
    if evidence is None:
        return {}
    proof = evidence["proofs"].get(event_id)
    return {"envelope_base64": base64.b64encode(record.raw).decode(),
            "leaf_index": proof["leaf_index"] if proof else record.leaf_index,
            "inclusion_path": proof["inclusion_path"] if proof else None}


def policy_readings(version: PolicyVersion) -> list[str]:
    """The choices a policy version makes where Article 4 leaves them open, in French."""
    out = []
    for calendar in version.calendars.values():
        holidays = calendar.holidays
        days = (f"jours fériés listés dans la politique pour {holidays.first_year}–{holidays.last_year} "
                f"(lundi de Pentecôte {'travaillé' if holidays.whit_monday_worked else 'férié'})"
                if holidays.days else "sans jours fériés")
        out.append(f"Plage {french.window(calendar)} : {french.READING[calendar.reading]} ; "
                   f"{days}.")
    for sla in version.slas:
        stops = ", ".join(french.SIGNAL.get(s, s) for s in sorted(sla.stops_on))
        out.append(f"{french.sla_title(sla.title, sla.contractual)} : le délai s'arrête {stops} ; "
                   f"{pause_reading(sla)}.")
    titles = {sla.name: sla.title for sla in version.slas}
    for product, exclusion in version.excluded_products.items():
        scope = ("tous" if exclusion.slas is None
                 else ", ".join(f"« {titles.get(name, name)} »" for name in sorted(exclusion.slas)))
        kinds = (" ; demandes concernées : " + ", ".join(french.KIND.get(k, k) for k in sorted(exclusion.kinds))
                 if exclusion.kinds is not None else "")
        out.append(f"Produit {product} : {exclusion.reason.rstrip('.')} — engagements concernés : {scope}{kinds}.")
    out.append(f"Une date d'événement peut précéder son enregistrement de {french.span(version.max_backdate)} au plus "
               f"(agents et administrateurs ; {french.span(version.connector_max_backdate)} pour le connecteur iTop, "
               "qui reprend les dates d'iTop ; jamais pour un référent) ; au-delà de "
               f"{french.duration(version.antedated_after.total_seconds())}, le fait est signalé « antidaté » avec "
               "son auteur.")
    return out


def stable_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True)

