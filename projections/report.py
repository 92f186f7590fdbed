"""The dispute file in French: Markdown, HTML and PDF renderings of ``audit.dispute_file``.

HTML from a Jinja2 template (``templates/dispute.html``, autoescaped); the PDF is that same
HTML printed by WeasyPrint, so what a member reads on screen and on paper is one document.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context, select_autoescape

from sla import french
from sla.events import parse_instant


def _source(src: dict[str, Any]) -> str:
    if "archive_seq" in src:
        return f"archive n° {src['archive_seq']}"
    return f"{src['topic']} p{src['partition']} o{src['offset']}"


# What can act inside a Markdown line (emphasis, code, links, images, raw HTML, entities,
# tables, strike-through, a heading's closing #s); CommonMark lets a backslash escape each. A
# typed value never starts a line (control characters are folded), so « - », « + », « 1. » stay.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~&#{}])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def typed(value: Any) -> str:
    """A value somebody typed (subject, member, product, actor), made inert in Markdown: no
    heading, link, image, raw HTML or emphasis of theirs, and no line break that would start a
    block of the document's own (« ## Verdict : respecté » typed in a subject stays text)."""
    return _MD_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(value)))


def lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The Markdown report as (style, text) lines (HTML and PDF come from the template); what
    somebody typed goes through ``typed``."""
    out: list[tuple[str, str]] = [("h1", "Dossier de contestation — engagements de service (Article 4)")]
    integrity = doc["integrity"]
    evidence = doc.get("evidence")
    if integrity["ok"] and integrity.get("verified", True) and evidence is not None:
        out.append(("ok", f"Intégrité vérifiée : {integrity['events_read']} événements lus, aucune anomalie ; "
                          "chaque événement du dossier est prouvé dans l'arbre de Merkle de l'archive "
                          "(preuves d'inclusion et tête d'arbre signée ci-dessous)."))
    elif integrity["ok"] and integrity.get("verified", True):
        out.append(("ok", f"Intégrité vérifiée : {integrity['events_read']} événements lus, aucune anomalie. "
                          f"Empreinte de tête de chaîne : {integrity['chain_head'] or '—'}"))
    elif integrity["ok"]:
        out.append(("alert", f"INTÉGRITÉ NON VÉRIFIÉE : {integrity['events_read']} événements lus dans le topic "
                             "sans l'archive de référence (base de données non fournie) ; seule l'absence "
                             "de copies divergentes d'un même événement a été contrôlée. Pour un dossier "
                             "opposable, rejouer l'archive (--source archive) ou fournir la base."))
    else:
        out.append(("alert", f"ATTENTION — INTÉGRITÉ NON VÉRIFIÉE : {len(integrity['findings'])} anomalie(s) "
                             "dans le journal des événements. Les conclusions ci-dessous ne peuvent être "
                             "opposées en l'état."))
        for finding in integrity["findings"]:
            out.append(("alert-item", finding["message"]))
    if integrity.get("resent_records"):
        out.append(("p", f"{integrity['resent_records']} enregistrement(s) du topic sont des copies identiques "
                         "d'un événement déjà lu, aux horodatages près (réémission « au moins une fois » "
                         "après un incident) : seule la première copie compte ; signalés ici."))
    f = doc["filters"]
    scope = [f"source : {doc['source']}"]
    if f["ticket"]:
        scope.append(f"ticket {f['ticket']}")
    if f["member"]:
        scope.append(f"membre {typed(f['member'])}")
    if f["from"] or f["to"]:
        scope.append(f"demandes déposées du {f['from'] or '…'} au {f['to'] or '…'}")
    if f["as_of"]:
        scope.append(f"état des connaissances au {f['as_of']}")
    out.append(("p", "Périmètre : " + " ; ".join(scope) + f". Édité le {doc['generated_at']}."))

    out.append(("h2", "Synthèse par engagement"))
    if not doc["summary"]:
        out.append(("p", "Aucune demande dans le périmètre."))
    for sla, s in doc["summary"].items():
        rate = "—" if s["compliance_percent"] is None else f"{s['compliance_percent']} %"
        out.append(("li", f"{sla} : {s['met']} respecté(s), {s['breached']} manquement(s), {s['retracted']} "
                          f"manquement(s) retiré(s), {s['excluded']} hors engagement, {s['open']} en cours ; "
                          f"taux de respect {rate}"))
        for b in s["breaches"]:
            out.append(("li2", f"manquement : ticket {b['ticket']} (membre {typed(b['member'])}), "
                               f"échéance {b['deadline']}"))

    if doc.get("closed_tickets_in_summary_only"):
        out.append(("p", f"{doc['closed_tickets_in_summary_only']} demande(s) close(s) figurent dans la synthèse "
                         "ci-dessus sans détail ; rejouer avec --ticket ou --member pour leur chronologie."))
    for ticket in doc["tickets"]:
        out.append(("h2", f"Ticket {ticket['ticket_id']} — {typed(ticket['subject'])}"))
        out.append(("p", f"Membre {typed(ticket['member'])}, type {ticket['kind']}, "
                         f"canal {ticket['channel']}, produit {typed(ticket['product'])}, "
                         f"déposé le {ticket['filed_at']}."))
        out.append(("h3", "Chronologie"))
        for e in ticket["timeline"]:
            late = "" if e["known_at_as_of"] else " [enregistré après la date d'examen]"
            if e.get("antedated"):
                late += (f" [ANTIDATÉ par {typed(e['actor'])} : daté du {e['occurred_at']}, "
                         f"enregistré le {e['recorded_at']}]")
            out.append(("li", f"{e['occurred_at']} — {french.EVENT_TYPE.get(e['type'], e['type'])} "
                              f"par {typed(e['actor'])} "
                              f"(enregistré le {e['recorded_at']} ; {_source(e['source'])} ; "
                              f"empreinte {e['hash'][:16]}…){late}"))
        out.append(("h3", "Engagements et verdicts"))
        for c in ticket["clocks"]:
            kind = "engagement contractuel" if c["contractual"] else "objectif interne"
            out.append(("h4", f"{c['title']} ({kind}) : {c['verdict_fr'].upper()}"))
            out.append(("p", f"Règle : {c['rule']} — politique {c['policy_version']}. {c['clause']}"))
            if c.get("reading"):
                out.append(("p", f"Lecture des jours : {c['reading']}."))
            out.append(("p", c["explanation"]))
            for seg in c["segments"]:
                label = {"running": "décompte", "paused": "suspendu", "outside_hours": "hors plage"}[seg["kind"]]
                out.append(("li2", f"{label} du {seg['start']} au {seg['end'] or '…'}"))
        if evidence is not None:
            out.append(("h3", "Preuves d'inclusion"))
            for e in ticket["timeline"]:
                path = e.get("inclusion_path")
                out.append(("li", f"{e['event_id']} : feuille n° {e.get('leaf_index')}, "
                                  + (f"chemin d'audit de {len(path)} empreinte(s)" if path is not None
                                     else "non couvert par la tête d'arbre signée")))
        if ticket["full_log_view"] is not None:
            out.append(("h3", "Le même moment selon le journal complet aujourd'hui"))
            for c in ticket["full_log_view"]:
                out.append(("li", f"{c['title']} : {c['verdict_fr']} — {c['explanation']}"))
    if evidence is not None:
        out.extend(head_lines(evidence))
    return out


def head_lines(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """The signed tree head a dispute file's proofs lead to, in French."""
    out: list[tuple[str, str]] = [("h2", "Tête d'arbre signée")]
    head = evidence.get("head")
    if head is None:
        out.append(("alert", "AUCUNE TÊTE D'ARBRE SIGNÉE : l'exploitant n'a pas configuré de clé de signature ; "
                             "les événements ne peuvent être vérifiés hors de sa base."))
        return out
    out.append(("p", f"Tête n° {head['head_id']} signée le {head['timestamp']} : {head['tree_size']} événements, "
                     f"racine {head['root_hash']}, politiques "
                     f"{', '.join(v['id'] for v in head['policy_versions'])}."))
    out.append(("p", f"Clé publique (empreinte SHA-256) : {head['key_id']} ; signature Ed25519 : "
                     f"{head['signature']}"))
    out.append(("p", "Vérification indépendante : slaledger audit check-file dossier.json --public-key cle.pub, "
                     "ou le script docs/verify_dispute_file.py (Python, cryptography et les sources sla/ et "
                     "projections/ de slaledger) : chaque événement prouvé, l'historique complet du ticket, "
                     "l'en-tête et les verdicts recalculés avec la politique citée."))
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    prefix = {"h1": "# ", "h2": "\n## ", "h3": "\n### ", "h4": "\n#### ", "li": "- ", "li2": "  - ",
              "alert": "\n> **", "alert-item": "> - ", "ok": "\n**", "p": "\n"}
    suffix = {"alert": "**", "ok": "**"}
    return "\n".join(prefix[s] + text + suffix.get(s, "") for s, text in lines(doc)) + "\n"


TITLE = "Dossier de contestation — engagements de service"


@pass_context
def _local(context: Any, value: str | None) -> str:
    """An instant of the file (UTC ISO 8601) in the policy's local time, with its offset."""
    if not value:
        return "—"
    instant = parse_instant(value, "time")
    tz = ZoneInfo(context["doc"].get("timezone", "Europe/Paris"))
    offset = instant.astimezone(tz).strftime("%z")
    return f"{french.instant(instant, tz)} (UTC{offset[:3]}:{offset[3:]})"


_env = Environment(loader=PackageLoader("projections", "templates"), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(local=_local, source=_source)
_env.globals.update(KIND=french.KIND, CHANNEL=french.CHANNEL, EVENT_TYPE=french.EVENT_TYPE, SEGMENT=french.SEGMENT)


def to_html(doc: dict[str, Any]) -> str:
    """The dispute file as HTML: what the web view serves and what the PDF prints."""
    return _env.get_template("dispute.html").render(doc=doc, title=TITLE)


def to_pdf(doc: dict[str, Any]) -> bytes:
    """The same HTML printed by WeasyPrint: full Unicode, embedded fonts, « page N / M »."""
    return print_pdf(to_html(doc))


def render(template: str, **context: Any) -> str:
    """Another document of ``templates/`` (the monthly statement) with the same environment:
    same autoescaping, same ``local`` filter (reads ``doc.timezone``) and labels."""
    return _env.get_template(template).render(**context)


def print_pdf(html: str) -> bytes:
    """HTML printed by WeasyPrint (imported here only: it loads Pango)."""
    from weasyprint import HTML

    return bytes(HTML(string=html).write_pdf())
