"""The dispute file in French: Markdown, HTML and PDF renderings of ``audit.dispute_file``.

HTML from a Jinja2 template (``templates/dispute.html``, autoescaped); the PDF is that same
HTML printed by WeasyPrint, so what a member reads on screen and on paper is one document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


def local(value: str | None, tz: ZoneInfo, beside: Iterable[str | None] = ()) -> str:
    """An instant of a file (UTC ISO 8601) in the policy's local time with its offset, to the
    minute unless it would read the same as an instant of ``beside`` (``french.precision``)."""
    if not value:
        return "—"
    instant = parse_instant(value, "time")
    offset = instant.astimezone(tz).strftime("%z")
    others = [parse_instant(b, "time") for b in beside if b]
    return f"{french.instant(instant, tz, beside=others)} (UTC{offset[:3]}:{offset[3:]})"


def judged(ticket: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A ticket's deadlines, and the moments its verdicts compare with them (its events):
    each written beside the others, so an action 30 s late never reads the deadline's minute."""
    deadlines = [d for c in ticket["clocks"] for d in (c["deadline"], *c.get("breached_deadlines", ()),
                                                       *c.get("retracted_deadlines", ())) if d]
    return deadlines, [e["occurred_at"] for e in ticket["timeline"]]


def lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The Markdown report as (style, text) lines (HTML and PDF come from the template); what
    somebody typed goes through ``typed``."""
    tz = ZoneInfo(doc.get("timezone", "Europe/Paris"))
    out: list[tuple[str, str]] = [("h1", "Dossier de contestation — engagements de service (Article 4)")]
    integrity = doc["integrity"]
    evidence = doc.get("evidence")
    if integrity["ok"] and integrity.get("verified", True) and evidence is not None:
        out.append(("ok", proven_sentence(doc)))
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
        scope.append(f"demandes déposées du {local(f['from'], tz) if f['from'] else '…'} "
                     f"au {local(f['to'], tz) if f['to'] else '…'}")
    if f["as_of"]:
        scope.append(f"état des connaissances au {local(f['as_of'], tz)}")
    out.append(("p", "Périmètre : " + " ; ".join(scope) + f". Édité le {local(doc['generated_at'], tz)}."))

    out.append(("h2", "Synthèse par engagement"))
    if not doc["summary"]:
        out.append(("p", "Aucune demande dans le périmètre."))
    for sla, s in doc["summary"].items():
        rate = french.percent(s["compliance_percent"])
        out.append(("li", f"{s.get('title', sla)} : {s['met']} respecté(s), {s['breached']} manquement(s), "
                          f"{s['retracted']} manquement(s) retiré(s), {s['excluded']} hors engagement, "
                          f"{s['open']} en cours ; taux de respect {rate}"))
        for b in s["breaches"]:
            out.append(("li2", f"manquement : ticket {b['ticket']} (membre {typed(b['member'])}), "
                               f"échéance {local(b['deadline'], tz)}"))

    if doc.get("closed_tickets_in_summary_only"):
        out.append(("p", f"{doc['closed_tickets_in_summary_only']} demande(s) close(s) figurent dans la synthèse "
                         "ci-dessus sans détail ; rejouer avec --ticket ou --member pour leur chronologie."))
    for ticket in doc["tickets"]:
        deadlines, _ = judged(ticket)
        out.append(("h2", f"Ticket {ticket['ticket_id']} — {typed(ticket['subject'])}"))
        out.append(("p", f"Membre {typed(ticket['member'])}, type {french.KIND.get(ticket['kind'], ticket['kind'])}, "
                         f"canal {french.CHANNEL.get(ticket['channel'], ticket['channel'])}, "
                         f"produit {typed(ticket['product'])}, déposé le {local(ticket['filed_at'], tz, deadlines)}."))
        out.append(("h3", "Chronologie"))
        for e in ticket["timeline"]:
            late = "" if e["known_at_as_of"] else " [enregistré après la date d'examen]"
            if e.get("antedated"):
                late += (f" [ANTIDATÉ par {typed(e['actor'])} : daté du {local(e['occurred_at'], tz, deadlines)}, "
                         f"enregistré le {local(e['recorded_at'], tz, deadlines)}]")
            out.append(("li", f"{local(e['occurred_at'], tz, deadlines)} — "
                              f"{french.EVENT_TYPE.get(e['type'], e['type'])} par {typed(e['actor'])} "
                              f"(enregistré le {local(e['recorded_at'], tz, deadlines)} ; {_source(e['source'])} ; "
                              f"empreinte {e['hash'][:16]}…){late}"))
        out.append(("h3", "Engagements et verdicts"))
        for c in ticket["clocks"]:
            out.append(("h4", f"{french.sla_title(c['title'], c['contractual'])} : {c['verdict_fr'].upper()}"))
            out.append(("p", f"Règle : {c['rule']} — politique {c['policy_version']}. {c['clause']}"))
            if c.get("reading"):
                out.append(("p", f"Lecture des jours : {c['reading']}."))
            out.append(("p", c["explanation"]))
            for seg in c["segments"]:
                label = french.SEGMENT.get(seg["kind"], seg["kind"]).lower()
                end = local(seg["end"], tz, deadlines) if seg["end"] else "…"
                out.append(("li2", f"{label} du {local(seg['start'], tz, deadlines)} au {end}"))
        if evidence is not None:
            out.append(("h3", "Preuves d'inclusion"))
            for e in ticket["timeline"]:
                path = e.get("inclusion_path")
                out.append(("li", f"{e['event_id']} : feuille n° {e.get('leaf_index')}, "
                                  + (f"chemin d'audit de {len(path)} empreinte(s)" if path is not None
                                     else NOT_YET_SIGNED)))
        if ticket["full_log_view"] is not None:
            out.append(("h3", "Le même moment selon le journal complet aujourd'hui"))
            for c in ticket["full_log_view"]:
                out.append(("li", f"{c['title']} : {c['verdict_fr']} — {c['explanation']}"))
    if evidence is not None:
        out.extend(head_lines(evidence, tz))
    return out


NOT_YET_SIGNED = "pas encore signé (enregistré après la tête signée du dossier)"


def proven_sentence(doc: dict[str, Any]) -> str:
    """Page 1's integrity sentence for a file carrying inclusion proofs (Markdown, HTML and
    PDF). It says what the proof section shows: events recorded after the file's signed head
    have no proof yet, which is said plainly and is no anomaly — the projector signs a new head
    within seconds of new events (``SLALEDGER_HEAD_INTERVAL``), and a file downloaded again
    then proves them. Without a head (no signing key), nothing is proven offline."""
    integrity, head = doc["integrity"], (doc.get("evidence") or {}).get("head")
    read = f"Intégrité vérifiée : {integrity['events_read']} événements lus, aucune anomalie ; "
    shown = [e for t in doc["tickets"] for e in t["timeline"]]
    pending = sum(1 for e in shown if e.get("inclusion_path") is None)
    if head is None:
        return read + ("aucune tête d'arbre signée ne prouve les événements hors de la base de l'exploitant "
                       "(voir « Tête d'arbre signée »).")
    if not pending:
        return read + ("chaque événement du dossier est prouvé dans l'arbre de Merkle de l'archive "
                       "(annexes « Tête d'arbre signée » et « Preuves d'inclusion »).")
    proven = len(shown) - pending
    latest = ("le plus récent n'est pas encore signé, car enregistré" if pending == 1
              else f"les {pending} plus récents ne sont pas encore signés, car enregistrés")
    return read + (f"{proven} des {len(shown)} événements du dossier sont prouvés par la tête signée "
                   f"n° {head['head_id']} ; {latest} après elle. "
                   "L'exploitant signe une nouvelle tête quelques secondes après chaque événement : "
                   "téléchargez le dossier à nouveau pour qu'ils y soient prouvés.")


def head_lines(evidence: dict[str, Any], tz: ZoneInfo) -> list[tuple[str, str]]:
    """The signed tree head a dispute file's proofs lead to, in French."""
    out: list[tuple[str, str]] = [("h2", "Tête d'arbre signée")]
    head = evidence.get("head")
    if head is None:
        out.append(("alert", "AUCUNE TÊTE D'ARBRE SIGNÉE : l'exploitant n'a pas configuré de clé de signature ; "
                             "les événements ne peuvent être vérifiés hors de sa base."))
        return out
    out.append(("p", f"Tête n° {head['head_id']} signée le {local(head['timestamp'], tz)} : "
                     f"{head['tree_size']} événements, "
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
def _local(context: Any, value: str | None, beside: Iterable[str | None] = ()) -> str:
    """``local`` in the document's time zone (``doc.timezone``)."""
    return local(value, ZoneInfo(context["doc"].get("timezone", "Europe/Paris")), beside)


def utc(value: str | None, beside: Iterable[str | None] = ()) -> str:
    """An instant of the file in UTC (the annex), at ``local``'s precision."""
    if not value:
        return "—"
    others = [parse_instant(b, "time") for b in beside if b]
    return french.stamp(parse_instant(value, "time"), ZoneInfo("UTC"), beside=others)


_env = Environment(loader=PackageLoader("projections", "templates"), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(local=_local, utc=utc, source=_source)
_env.globals.update(judged=judged, percent=french.percent, sla_title=french.sla_title,
                    proven_sentence=proven_sentence, NOT_YET_SIGNED=NOT_YET_SIGNED, KIND=french.KIND,
                    CHANNEL=french.CHANNEL, EVENT_TYPE=french.EVENT_TYPE, SEGMENT=french.SEGMENT)


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
