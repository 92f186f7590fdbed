"""The dispute file in French: Markdown, HTML and PDF renderings of ``audit.dispute_file``."""

from __future__ import annotations

import html
from typing import Any

from sla import french


def _source(src: dict[str, Any]) -> str:
    if "archive_seq" in src:
        return f"archive n° {src['archive_seq']}"
    return f"{src['topic']} p{src['partition']} o{src['offset']}"


def lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (style, text) lines; every format is rendered from these."""
    out: list[tuple[str, str]] = [("h1", "Dossier de contestation — engagements de service (Article 4)")]
    integrity = doc["integrity"]
    if integrity["ok"] and integrity.get("verified", True):
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
        scope.append(f"membre {f['member']}")
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
            out.append(("li2", f"manquement : ticket {b['ticket']} (membre {b['member']}), échéance {b['deadline']}"))

    if doc.get("closed_tickets_in_summary_only"):
        out.append(("p", f"{doc['closed_tickets_in_summary_only']} demande(s) close(s) figurent dans la synthèse "
                         "ci-dessus sans détail ; rejouer avec --ticket ou --member pour leur chronologie."))
    for ticket in doc["tickets"]:
        out.append(("h2", f"Ticket {ticket['ticket_id']} — {ticket['subject']}"))
        out.append(("p", f"Membre {ticket['member']}, type {ticket['kind']}, canal {ticket['channel']}, "
                         f"produit {ticket['product']}, déposé le {ticket['filed_at']}."))
        out.append(("h3", "Chronologie"))
        for e in ticket["timeline"]:
            late = "" if e["known_at_as_of"] else " [enregistré après la date d'examen]"
            if e.get("antedated"):
                late += f" [ANTIDATÉ par {e['actor']} : daté du {e['occurred_at']}, enregistré le {e['recorded_at']}]"
            out.append(("li", f"{e['occurred_at']} — {french.EVENT_TYPE.get(e['type'], e['type'])} par {e['actor']} "
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
        if ticket["full_log_view"] is not None:
            out.append(("h3", "Le même moment selon le journal complet aujourd'hui"))
            for c in ticket["full_log_view"]:
                out.append(("li", f"{c['title']} : {c['verdict_fr']} — {c['explanation']}"))
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    prefix = {"h1": "# ", "h2": "\n## ", "h3": "\n### ", "h4": "\n#### ", "li": "- ", "li2": "  - ",
              "alert": "\n> **", "alert-item": "> - ", "ok": "\n**", "p": "\n"}
    suffix = {"alert": "**", "ok": "**"}
    return "\n".join(prefix[s] + text + suffix.get(s, "") for s, text in lines(doc)) + "\n"


def to_html(doc: dict[str, Any]) -> str:
    body = []
    in_list = False
    for style, text in lines(doc):
        item = style in ("li", "li2", "alert-item")
        if item and not in_list:
            body.append("<ul>")
        if not item and in_list:
            body.append("</ul>")
        in_list = item
        t = html.escape(text)
        body.append({
            "h1": f"<h1>{t}</h1>", "h2": f"<h2>{t}</h2>", "h3": f"<h3>{t}</h3>", "h4": f"<h4>{t}</h4>",
            "p": f"<p>{t}</p>", "ok": f'<p class="ok">{t}</p>', "alert": f'<p class="alert" role="alert">{t}</p>',
            "li": f"<li>{t}</li>", "li2": f'<li class="sub">{t}</li>', "alert-item": f'<li class="alert">{t}</li>',
        }[style])
    if in_list:
        body.append("</ul>")
    css = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#111}"
           ".alert{background:#fde7e7;border:2px solid #a00;padding:.5rem;font-weight:bold}"
           ".ok{background:#e7f5e7;border:1px solid #070;padding:.5rem}li.sub{margin-left:1.5rem}")
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Dossier de contestation</title>'
            f"<style>{css}</style></head><body>{''.join(body)}</body></html>\n")


def to_pdf(doc: dict[str, Any]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    sizes = {"h1": 15, "h2": 13, "h3": 11.5, "h4": 10.5}
    for style, text in lines(doc):
        safe = _latin1(text)
        if style in sizes:
            pdf.set_font("Helvetica", "B", sizes[style])
            pdf.ln(2)
            pdf.multi_cell(0, 7, safe, new_x="LMARGIN", new_y="NEXT")
        elif style in ("alert", "alert-item"):
            pdf.set_font("Helvetica", "B", 10)
            pdf.set_text_color(160, 0, 0)
            pdf.multi_cell(0, 5, safe, new_x="LMARGIN", new_y="NEXT")
            pdf.set_text_color(0, 0, 0)
        else:
            pdf.set_font("Helvetica", "", 9)
            indent = {"li": "- ", "li2": "    - "}.get(style, "")
            pdf.multi_cell(0, 4.8, _latin1(indent) + safe, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _latin1(text: str) -> str:
    """The PDF core fonts speak Latin-1: typographic signs outside it are transliterated."""
    table = str.maketrans({"—": "-", "–": "-", "…": "...", "’": "'", "œ": "oe", "Œ": "OE", "\u202f": " "})
    return text.translate(table).encode("latin-1", "replace").decode("latin-1")
