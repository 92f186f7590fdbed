"""The web view: the queue and each ticket's SLA story, as server-rendered HTML.

Grafana is the support team's cockpit, but it cannot tell one ticket's story, referents
have no Grafana account, and a newcomer running ``slaledger dev`` should see the product
rather than JSON. So the worker's own web server (same process and port as the API)
serves a few pages, built from the API's own data paths: ``authenticate`` for the caller,
``find_tickets`` for the queue, ``visible_ticket`` behind ``table_route`` for a ticket and
``ticket_view`` for its shape. The pages therefore cannot show what the API would refuse.

No build step: HTML from string templates with ``html.escape``, one stylesheet and one
small script under ``slaledger/web/static/`` (served here, so a strict Content-Security-Policy
holds). Without the script the pages still work; with it, countdowns tick every second
and the queue refreshes every few seconds without a full reload.

Sign-in posts the same token as the API; it is kept in an HttpOnly, SameSite=Strict
cookie, which only reads accept (pages, the queue fragment, the dispute-file link).
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import cache
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import faust
import structlog
from faust.web import Request, Response, View

from projections.queries import ticket_events
from projections.report import TYPE_FR
from projections.tokens import Principal
from sla import french
from sla.display import shown_state
from sla.display import worst_state as sla_worst_state
from sla.events import KINDS, Event, EventType, parse_instant
from sla.ticket import Status
from sla.view import ticket_view

from .access import SESSION_COOKIE, BadRequest, authenticator, find_tickets, session_token, visible_ticket
from .ports import Ports

log = structlog.get_logger(__name__)


OPEN_STATUSES = (Status.OPEN.value, Status.IN_PROGRESS.value, Status.WAITING_FOR_CUSTOMER.value)
QUEUE_LIMIT = 300  # rows shown; the count says how many matched
REFRESH_SECONDS = 5
DISPUTE_FORMATS = {"json": ("application/json; charset=utf-8", "json"), "md": ("text/markdown; charset=utf-8", "md"),
                   "html": ("text/html; charset=utf-8", "html"), "pdf": ("application/pdf", "pdf")}
STATIC = {"web.css": "text/css; charset=utf-8", "web.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

KIND_FR = {"assistance": "Assistance", "incident": "Incident", "administrative": "Demande administrative",
           "go_live": "Mise en production"}
CHANNEL_FR = {"portal": "Portail", "phone": "Téléphone", "email": "Courriel"}
STATUS_FR = {"open": "Ouvert", "in_progress": "En cours de traitement",
             "waiting_for_customer": "En attente du demandeur", "resolved": "Résolu", "closed": "Clos"}
# A clock's state as shown: its status, with "at risk" split out of "running".
STATE_FR = {"breached": "Dépassé", "at_risk": "À risque", "running": "Dans les délais", "paused": "Suspendu",
            "pending": "Non démarré", "met": "Respecté", "retracted": "Manquement retiré",
            "excluded": "Hors engagement"}
STATE_SYMBOL = {"breached": "✖", "at_risk": "⚠", "running": "▶", "paused": "‖", "pending": "…", "met": "✓",
                "retracted": "↺", "excluded": "–"}
FILTER_STATES = ("breached", "at_risk", "running", "paused", "pending")
SEGMENT_FR = {"running": "Décompte", "paused": "Suspendu (attente du demandeur)",
              "outside_hours": "Hors plage horaire"}
ROLE_LABEL = {"agent": "Agent", "referent": "Référent", "auditor": "Auditeur", "admin": "Administrateur"}
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_-]")


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def local_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):  # browsers drop tab/CR/LF: "/\t/x" is "//x"
        return "/"
    return value


# --- formatting ----------------------------------------------------------------------------

def instant(value: str | None, tz: ZoneInfo) -> str:
    return french.instant(parse_instant(value, "instant"), tz) if value else "—"


def clock_duration(seconds: float) -> str:
    """« 2 j 3 h 04 min 05 s »: seconds always shown, so a countdown visibly moves
    (``slaledger/web/static/web.js`` formats the same way)."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} j {hours} h {minutes:02d} min {secs:02d} s"
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def countdown_text(remaining: float) -> str:
    return f"reste {clock_duration(remaining)}" if remaining >= 0 else f"dépassée depuis {clock_duration(-remaining)}"


def clock_state(clock: Mapping[str, Any]) -> str:
    return shown_state(str(clock["status"]), at_risk=bool(clock["at_risk"]))


def paused_now(clock: Mapping[str, Any]) -> bool:
    segments = clock["segments"]
    return bool(segments) and segments[-1]["kind"] == "paused" and segments[-1]["end"] is None


def counting(clock: Mapping[str, Any]) -> bool:
    """Whether the clock's current deadline is still ahead of a running count (a countdown)."""
    return (clock["deadline"] is not None and clock["stopped_at"] is None and not paused_now(clock)
            and clock["status"] in ("running", "breached"))


def badge(state: str) -> str:
    return (f'<span class="badge badge-{esc(state)}"><span aria-hidden="true">{STATE_SYMBOL.get(state, "")}</span> '
            f"{esc(STATE_FR.get(state, state))}</span>")


def countdown(clock: Mapping[str, Any], now: datetime) -> str:
    """A ``<time>`` the script keeps current; the server renders the same text first."""
    if counting(clock):
        deadline = parse_instant(clock["deadline"], "deadline")
        text = countdown_text((deadline - now).total_seconds())
        return f'<time class="countdown" datetime="{esc(clock["deadline"])}" data-countdown>{esc(text)}</time>'
    if clock["status"] == "paused" or (paused_now(clock) and clock["status"] == "breached"):
        left = clock["remaining_seconds"]
        rest = f" : il restera {clock_duration(left)} à la reprise" if left and left > 0 else ""
        return f'<span class="countdown paused-note">délai suspendu{esc(rest)}</span>'
    return ""


def worst_state(clocks: Iterable[Mapping[str, Any]]) -> str | None:
    return sla_worst_state(clock_state(c) for c in clocks)


# --- page frame ----------------------------------------------------------------------------

def page(title: str, body: str, who: Principal | None, *, server_now: datetime | None = None,
         head: str = "") -> str:
    session = ""
    if who is not None:
        whom = esc(who.label) + (f" ({esc(who.member)})" if who.member else "")
        session = (f'<div class="session"><span>{esc(ROLE_LABEL.get(who.role, who.role))} : {whom}</span>'
                   '<form method="post" action="/logout"><button type="submit">Se déconnecter</button></form></div>')
    now_attr = f' data-server-now="{esc(server_now.isoformat())}"' if server_now else ""
    return (
        '<!doctype html>\n<html lang="fr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} — slaledger</title>"
        '<link rel="stylesheet" href="/static/web.css"><script src="/static/web.js" defer></script>'
        f"{head}</head>"
        f"<body{now_attr}>"
        '<a class="skip" href="#contenu">Aller au contenu</a>'
        '<header class="top"><p class="brand"><a href="/">slaledger</a> '
        '<span class="tagline">engagements de service (Article 4)</span></p>'
        f"{session}</header>"
        f'<main id="contenu">{body}</main>'
        "</body></html>\n"
    )


def html_response(view: View, body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return view.html(body, status=status, headers={**SECURITY_HEADERS, **(headers or {})})


def redirect(view: View, location: str, cookie: str | None = None) -> Response:
    headers = {**SECURITY_HEADERS, "Location": location}
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return view.text("", status=303, headers=headers)


def session_cookie(token: str, *, secure: bool) -> str:
    """HttpOnly (no script reads it), SameSite=Strict (no other site sends it), whole site."""
    jar: SimpleCookie = SimpleCookie()
    jar[SESSION_COOKIE] = token
    morsel = jar[SESSION_COOKIE]
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    morsel["path"] = "/"
    if secure:
        morsel["secure"] = True
    if not token:
        morsel["max-age"] = 0
        morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    return morsel.OutputString()


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("X-Forwarded-Proto", "") == "https"


# --- the queue -------------------------------------------------------------------------------

def queue_filters(query: Mapping[str, str], who: Principal) -> dict[str, str]:
    """The filters understood by the queue; anything else is ignored (a page never 422s)."""
    member = query.get("member", "").strip()[:128]
    kind = query.get("kind", "")
    state = query.get("sla", "")
    return {
        "member": (who.member or "") if who.role == "referent" else member,
        "kind": kind if kind in KINDS else "",
        "sla": state if state in FILTER_STATES else "",
    }


def queue_sort_key(view: Mapping[str, Any]) -> tuple[int, str]:
    """Nearest deadline first; then tickets whose clocks are all paused; then the rest."""
    deadlines = [c["deadline"] for c in view["clocks"] if counting(c)]
    if deadlines:
        return 0, min(parse_instant(d, "deadline").isoformat() for d in deadlines)
    if any(paused_now(c) for c in view["clocks"]):
        return 1, view["filed_at"] or ""
    return 2, view["filed_at"] or ""


def queue_row(view: Mapping[str, Any], now: datetime, tz: ZoneInfo) -> str:
    shown = [c for c in view["clocks"] if clock_state(c) in ("breached", "at_risk", "running", "paused")]
    shown.sort(key=lambda c: (not counting(c), c["deadline"] or ""))
    worst = worst_state(shown)
    href = "/tickets/" + quote(view["id"], safe="")
    if shown:
        items = "".join(
            f'<li class="clock-line state-{esc(clock_state(c))}">{badge(clock_state(c))} '
            f'<span class="sla-title">{esc(c["title"])}</span> '
            f"{countdown(c, now)}"
            + (f' <span class="deadline">(échéance {esc(instant(c["deadline"], tz))})</span>'
               if c["deadline"] and counting(c) else "")
            + "</li>"
            for c in shown
        )
        clocks = f'<ul class="clock-lines">{items}</ul>'
    else:
        clocks = '<p class="muted">Aucun délai en cours.</p>'
    return (
        f'<tr class="row-{esc(worst or "none")}" data-ticket="{esc(view["id"])}">'
        f'<th scope="row"><a href="{esc(href)}">{esc(view["id"])}</a></th>'
        f'<td>{esc(view["subject"])}</td>'
        f'<td>{esc(view["member"])}</td>'
        f'<td>{esc(KIND_FR.get(view["kind"], view["kind"]))}</td>'
        f'<td>{esc(STATUS_FR.get(view["status"], view["status"]))}</td>'
        f"<td>{clocks}</td>"
        "</tr>"
    )


def queue_table(views: list[dict[str, Any]], total: int, now: datetime, tz: ZoneInfo) -> str:
    """The part of the queue page the script swaps every few seconds."""
    counts = {s: sum(1 for v in views if worst_state(v["clocks"]) == s) for s in ("breached", "at_risk", "paused")}
    summary = (f"{total} ticket{'s' if total > 1 else ''} ouvert{'s' if total > 1 else ''} : "
               f"{counts['breached']} dépassé(s), {counts['at_risk']} à risque, {counts['paused']} suspendu(s)")
    if total > len(views):
        summary += f" ; les {len(views)} plus urgents sont affichés"
    status = (f'<p id="queue-status" class="queue-status" role="status">{esc(summary)}. '
              f'<span class="updated">Mis à jour à {esc(now.astimezone(tz).strftime("%H:%M:%S"))}.</span></p>')
    if not views:
        return status + '<p class="empty">Aucun ticket ouvert ne correspond à ces filtres.</p>'
    rows = "".join(queue_row(v, now, tz) for v in views)
    return (
        status
        + '<table class="queue"><caption>Tickets ouverts, échéance la plus proche en premier</caption>'
        '<thead><tr><th scope="col">Ticket</th><th scope="col">Objet</th><th scope="col">Membre</th>'
        '<th scope="col">Type</th><th scope="col">Statut</th><th scope="col">Délais en cours</th></tr></thead>'
        f'<tbody id="queue-rows">{rows}</tbody></table>'
    )


def select(name: str, label: str, options: list[tuple[str, str]], current: str) -> str:
    opts = "".join(
        f'<option value="{esc(v)}"{" selected" if v == current else ""}>{esc(text)}</option>' for v, text in options)
    return (f'<div class="field"><label for="f-{name}">{esc(label)}</label>'
            f'<select id="f-{name}" name="{name}">{opts}</select></div>')


def filters_form(filters: dict[str, str], who: Principal, members: list[str]) -> str:
    if who.role == "referent":
        member = f'<div class="field"><span class="label">Membre</span> <strong>{esc(who.member)}</strong></div>'
    else:
        choices = sorted(set(members) | ({filters["member"]} if filters["member"] else set()))
        member = select("member", "Membre", [("", "Tous les membres")] + [(m, m) for m in choices], filters["member"])
    kind = select("kind", "Type de demande", [("", "Tous les types")] + [(k, KIND_FR[k]) for k in KINDS],
                  filters["kind"])
    state = select("sla", "État des délais", [("", "Tous les états")] + [(s, STATE_FR[s]) for s in FILTER_STATES],
                   filters["sla"])
    return ('<form id="filters" class="filters" method="get" action="/" role="search" aria-label="Filtrer la file">'
            f'{member}{kind}{state}<div class="field"><button type="submit">Filtrer</button></div></form>')


# --- the ticket page ---------------------------------------------------------------------------

def _short(value: datetime, tz: ZoneInfo) -> str:
    local = value.astimezone(tz)
    return f"{local.day:02d}/{local.month:02d} {local.hour:02d}:{local.minute:02d}"


Span = tuple[str, datetime, datetime | None]


def story_segments(clock: Mapping[str, Any]) -> list[Span]:
    """The clock's segments (contiguous, each cycle cut at its stop by ``sla.clock``) as spans."""
    return [(s["kind"], parse_instant(s["start"], "start"), parse_instant(s["end"], "end") if s["end"] else None)
            for s in clock["segments"]]


def segments_svg(clock: Mapping[str, Any], spans: list[Span], now: datetime, tz: ZoneInfo, index: int) -> str:
    """The clock's segments on a time axis: patterns (not colour alone), a deadline and a
    "now" marker with text, a tooltip per segment; the table after it says the same."""
    if not spans:
        return ""
    start = spans[0][1]
    deadline = parse_instant(clock["deadline"], "deadline") if clock["deadline"] else None
    horizon = max([end or max(now, lo) for _, lo, end in spans] + ([deadline] if deadline else []))
    if any(end is None for _, _, end in spans):
        horizon = max(horizon, now)
    span = max((horizon - start).total_seconds(), 1.0)
    width, pad = 1000.0, 12.0

    def x(t: datetime) -> float:
        return pad + (t - start).total_seconds() / span * (width - 2 * pad)

    parts = []
    for kind, lo, end in spans:
        hi = end or max(now, lo)
        label = f"{SEGMENT_FR.get(kind, kind)} : du {french.instant(lo, tz)} " + (
            f"au {french.instant(end, tz)}" if end else "à maintenant (en cours)")
        # What lies after "now" is the calendar's forecast (e.g. outside hours until Monday
        # 08:00): drawn faded, and said so in the tooltip.
        pieces = [(a, b, f) for a, b, f in ((lo, min(hi, now), False), (max(lo, now), hi, True)) if b > a]
        if not pieces:  # an instant: an open stretch that starts now or later
            pieces = [(lo, lo, lo > now)]
        for a, b, future in pieces:
            note = " (à venir)" if future else ""
            parts.append(f'<rect class="seg seg-{esc(kind)}{" future" if future else ""}" x="{x(a):.1f}" y="30" '
                         f'width="{max(x(b) - x(a), 1.5):.1f}" height="28" fill="url(#pat-{esc(kind)})">'
                         f"<title>{esc(label + note)}</title></rect>")
    if deadline is not None and counting(clock) and deadline > now:
        parts.append(f'<rect class="seg rest future" x="{x(now):.1f}" y="30" width="{x(deadline) - x(now):.1f}" '
                     'height="28" fill="none"><title>Reste à courir jusqu\'à l\'échéance (prévision)</title></rect>')
    if deadline is not None:
        dx = x(deadline)
        anchor = "end" if dx > width * 0.8 else "start" if dx < width * 0.2 else "middle"
        parts.append(f'<line class="mark-deadline" x1="{dx:.1f}" x2="{dx:.1f}" y1="20" y2="66"/>'
                     f'<text class="mark-label" x="{dx:.1f}" y="15" text-anchor="{anchor}">Échéance '
                     f"{esc(_short(deadline, tz))}</text>")
    if start <= now <= horizon:
        nx = x(now)
        anchor = "end" if nx > width * 0.8 else "start" if nx < width * 0.2 else "middle"
        parts.append(f'<line class="mark-now" x1="{nx:.1f}" x2="{nx:.1f}" y1="26" y2="72"/>'
                     f'<text class="mark-label" x="{nx:.1f}" y="86" text-anchor="{anchor}">Maintenant</text>')
    ticks = []
    for i in range(5):
        t = start + (horizon - start) * (i / 4)
        tx = x(t)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        ticks.append(f'<line class="tick" x1="{tx:.1f}" x2="{tx:.1f}" y1="58" y2="64"/>'
                     f'<text class="tick-label" x="{tx:.1f}" y="108" text-anchor="{anchor}">'
                     f"{esc(_short(t, tz))}</text>")
    title_id, desc_id = f"axe-{index}-titre", f"axe-{index}-desc"
    desc = " ; ".join(
        f"{SEGMENT_FR.get(kind, kind).lower()} du {french.instant(lo, tz)} "
        + (f"au {french.instant(end, tz)}" if end else "jusqu'à maintenant")
        for kind, lo, end in spans)
    return (f'<svg class="axis" viewBox="0 0 {width:.0f} 116" role="img" aria-labelledby="{title_id} {desc_id}">'
            f'<title id="{title_id}">Segments du délai « {esc(clock["title"])} » sur l\'axe du temps</title>'
            f'<desc id="{desc_id}">{esc(desc)}</desc>'
            f'<line class="baseline" x1="{pad}" x2="{width - pad}" y1="58" y2="58"/>'
            f"{''.join(parts)}{''.join(ticks)}</svg>")


PATTERNS = (
    '<svg class="defs" aria-hidden="true" focusable="false" width="0" height="0"><defs>'
    '<pattern id="pat-running" width="8" height="8" patternUnits="userSpaceOnUse">'
    '<rect width="8" height="8" fill="#1e3a8a"/></pattern>'
    '<pattern id="pat-paused" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="8" height="8" fill="#fde68a"/><rect width="3" height="8" fill="#78350f"/></pattern>'
    '<pattern id="pat-outside_hours" width="8" height="8" patternUnits="userSpaceOnUse">'
    '<rect width="8" height="8" fill="#e5e7eb"/><circle cx="4" cy="4" r="1.6" fill="#374151"/></pattern>'
    "</defs></svg>"
)

LEGEND = (
    '<ul class="legend" aria-label="Légende de l\'axe du temps">'
    + "".join(f'<li><svg width="28" height="14" aria-hidden="true" focusable="false"><rect width="28" height="14" '
              f'fill="url(#pat-{k})" class="seg"/></svg> {esc(v)}</li>' for k, v in SEGMENT_FR.items())
    + '<li><span class="legend-future" aria-hidden="true"></span> Partie pâle : à venir (prévision)</li>'
    '<li><span class="legend-deadline" aria-hidden="true"></span> Échéance</li>'
    '<li><span class="legend-now" aria-hidden="true"></span> Maintenant</li></ul>'
)


def clock_section(clock: Mapping[str, Any], now: datetime, tz: ZoneInfo, index: int) -> str:
    state = clock_state(clock)
    kind = "engagement contractuel" if clock["contractual"] else "objectif interne"
    hid = f"delai-{index}"
    facts = [f"<dt>Échéance</dt><dd>{esc(instant(clock['deadline'], tz))} {countdown(clock, now)}</dd>"
             if clock["deadline"] else "",
             f"<dt>Règle</dt><dd>{esc(clock['rule'])}</dd>",
             f"<dt>Politique</dt><dd>{esc(clock['policy_version'])}</dd>"]
    if clock["breached_deadlines"]:
        facts.append("<dt>Échéances dépassées</dt><dd>"
                     + ", ".join(esc(instant(d, tz)) for d in clock["breached_deadlines"]) + "</dd>")
    if clock["retracted_deadlines"]:
        facts.append("<dt>Manquements retirés</dt><dd>"
                     + ", ".join(esc(instant(d, tz)) for d in clock["retracted_deadlines"]) + "</dd>")
    def upcoming(value: datetime) -> str:
        return " (à venir)" if value > now else ""

    spans = story_segments(clock)
    if spans:
        rows = "".join(
            f'<tr><th scope="row">{esc(SEGMENT_FR.get(kind, kind))}</th>'
            f"<td>{esc(french.instant(lo, tz))}{upcoming(lo)}</td>"
            f'<td>{esc(french.instant(hi, tz)) + upcoming(hi) if hi else "en cours"}</td>'
            "</tr>" for kind, lo, hi in spans)
        story = (f'<figure class="axis-figure">{segments_svg(clock, spans, now, tz, index)}'
                 f"<figcaption>{LEGEND}</figcaption></figure>"
                 '<table class="segments"><caption>Segments du délai</caption><thead><tr>'
                 '<th scope="col">Segment</th><th scope="col">Début</th><th scope="col">Fin</th></tr></thead>'
                 f"<tbody>{rows}</tbody></table>")
    else:
        story = '<p class="muted">Délai non démarré : aucun segment.</p>'
    return (
        f'<section class="clock state-{esc(state)}" aria-labelledby="{hid}" data-sla="{esc(clock["sla"])}">'
        f'<h3 id="{hid}">{esc(clock["title"])} <span class="muted">— {kind}</span></h3>'
        f'<p class="verdict">Verdict : {badge(state)}</p>'
        f'<dl class="clock-facts">{"".join(facts)}</dl>'
        f'<p class="explanation">{esc(clock["explanation"])}</p>'
        f"{story}</section>"
    )


def event_details(event: Event, tz: ZoneInfo) -> str:
    p = event.payload
    bits = []
    if event.type in (EventType.SLA_WARNING_RAISED, EventType.SLA_BREACHED, EventType.SLA_BREACH_RETRACTED):
        bits.append(f"délai {p.get('sla')}, échéance du {french.instant(p['deadline'], tz)}"
                    if isinstance(p.get("deadline"), datetime) else f"délai {p.get('sla')}")
    if isinstance(p.get("restoration_eta"), datetime):
        bits.append(f"rétablissement prévu le {french.instant(p['restoration_eta'], tz)}")
    for key in ("message", "reason", "note", "resolution"):
        if p.get(key):
            bits.append(str(p[key]))
    if event.type is EventType.RECLASSIFIED:
        bits.extend(f"{k} → {p[k]}" for k in ("kind", "product") if p.get(k))
    return " ; ".join(bits)


def timeline(events: list[Event] | None, tz: ZoneInfo) -> str:
    if events is None:
        return '<p class="muted">Chronologie indisponible : ce serveur n\'a pas accès à l\'archive des événements.</p>'
    if not events:
        return '<p class="muted">Aucun événement archivé pour l\'instant (l\'archive suit le journal de près).</p>'
    items = []
    for e in sorted(events, key=lambda e: e.occurred_at):
        late = abs((e.recorded_at - e.occurred_at).total_seconds()) >= 60
        recorded = (f' <span class="muted">(enregistré le {esc(french.instant(e.recorded_at, tz))})</span>'
                    if late else "")
        details = event_details(e, tz)
        items.append(
            f'<li class="event event-{esc(e.type.value)}"><time datetime="{esc(e.occurred_at.isoformat())}">'
            f"{esc(french.instant(e.occurred_at, tz))}</time> — <strong>{esc(TYPE_FR.get(e.type.value, e.type.value))}"
            f'</strong> par <span class="actor">{esc(e.actor)}</span>{recorded}'
            + (f'<br><span class="details">{esc(details)}</span>' if details else "") + "</li>")
    return '<ol class="timeline">' + "".join(items) + "</ol>"


def ticket_body(view: Mapping[str, Any], events: list[Event] | None, who: Principal, now: datetime,
                tz: ZoneInfo) -> str:
    tid = view["id"]
    facts = [("Membre", view["member"]), ("Type", KIND_FR.get(view["kind"], view["kind"])),
             ("Canal", CHANNEL_FR.get(view["channel"], view["channel"])), ("Produit", view["product"]),
             ("Statut", STATUS_FR.get(view["status"], view["status"])), ("Déposé le", instant(view["filed_at"], tz))]
    for key, label in (("acknowledged_at", "Pris en compte le"), ("restoration_eta", "Rétablissement prévu le"),
                       ("resolved_at", "Résolu le"), ("closed_at", "Clos le")):
        if view[key]:
            facts.append((label, instant(view[key], tz)))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    download = ""
    if who.staff:
        base = "/api/tickets/" + quote(tid, safe="") + "/dispute-file?format="
        links = " · ".join(f'<a href="{esc(base + fmt)}" download>{label}</a>'
                           for fmt, label in (("pdf", "PDF"), ("html", "HTML"), ("json", "JSON")))
        download = (f'<p class="download"><span>Télécharger le dossier de contestation de ce ticket :</span> {links}'
                    '<br><span class="muted">Rejoué depuis l\'archive, avec vérification de la chaîne '
                    "d'empreintes.</span></p>")
    clocks = "".join(clock_section(c, now, tz, i) for i, c in enumerate(view["clocks"])) or (
        '<p class="muted">Aucun engagement ne s\'applique à ce ticket.</p>')
    return (
        '<p class="back"><a href="/">← Retour à la file</a></p>'
        f'<h1>Ticket {esc(tid)} — {esc(view["subject"])}</h1>'
        f'<dl class="ticket-facts">{dl}</dl>{download}'
        f'{PATTERNS}<section aria-labelledby="h-delais"><h2 id="h-delais">Engagements de service</h2>{clocks}</section>'
        f'<section aria-labelledby="h-chrono"><h2 id="h-chrono">Chronologie</h2>{timeline(events, tz)}</section>'
        f'<p class="muted as-of">État calculé le {esc(french.instant(now, tz))}.</p>'
    )


def login_body(next_path: str, message: str | None) -> str:
    alert = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    return (
        "<h1>Connexion</h1>"
        "<p>Saisissez le jeton d'accès qui vous a été remis : le même que pour l'API "
        "(<code>slaledger token create</code> ; en mode <code>slaledger dev</code>, le jeton agent affiché au "
        "démarrage).</p>"
        f"{alert}"
        '<form class="login" method="post" action="/login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<div class="field"><label for="token">Jeton d\'accès</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required '
        'aria-describedby="token-aide" spellcheck="false"></div>'
        '<p id="token-aide" class="muted">Il commence par « slt_ ». Il est conservé dans un cookie de session '
        "protégé, effacé à la déconnexion.</p>"
        '<div class="field"><button type="submit">Se connecter</button></div></form>'
    )


@cache
def static_asset(name: str) -> bytes:
    return (resources.files("slaledger.web") / "static" / name).read_bytes()


# --- routes --------------------------------------------------------------------------------------

def register_pages(app: faust.App, route_table: Any, ports: Ports) -> None:
    """Attach the web pages to the worker's Faust web server (same port as the API)."""
    authenticate = authenticator(ports)
    """Register the web view's pages on the worker's app (called by ``register_views``)."""
    tz = ports.policy.versions[0].tz

    def now() -> datetime:
        return datetime.now(tz=tz)

    async def caller(request: Request) -> Principal | None:
        try:
            return await authenticate(request, cookie=True)
        except BadRequest:
            return None

    def to_login(view: View, request: Request) -> Response:
        target = local_next(request.rel_url.path_qs)
        if request.headers.get("Sec-Fetch-Site") == "cross-site" and not session_token(request):
            # A link from elsewhere (an alert, a mail): the SameSite=Strict cookie was held
            # back. Going on from this page is a same-site navigation, which carries it.
            body = f'<h1>Redirection</h1><p><a href="{esc(target)}">Continuer vers la page demandée</a></p>'
            return html_response(view, page("Redirection", body, None,
                                            head=f'<meta http-equiv="refresh" content="0;url={esc(target)}">'))
        return redirect(view, "/login?" + urlencode({"next": target}))

    def same_origin(request: Request) -> bool:
        """A form post from this site: SameSite keeps the cookie from other sites, this
        keeps them from signing a browser in or out behind its user's back."""
        origin = request.headers.get("Origin")
        return origin is None or origin.split("://", 1)[-1] == request.headers.get("Host", "")

    async def queue_views(who: Principal, filters: dict[str, str], at: datetime) -> tuple[list[dict[str, Any]], int]:
        found = await find_tickets(ports, who, at, statuses=OPEN_STATUSES, member=filters["member"] or None,
                                   sla_status=filters["sla"] or None)
        views = [ticket_view(t, ports.policy, at) for t in found if not filters["kind"] or t.kind == filters["kind"]]
        views.sort(key=queue_sort_key)
        return views[:QUEUE_LIMIT], len(views)

    @app.page("/")
    class QueuePage(View):
        async def get(self, request: Request) -> Response:
            who = await caller(request)
            if who is None:
                return to_login(self, request)
            at = now()
            filters = queue_filters(request.query, who)
            views, total = await queue_views(who, filters, at)
            members: list[str] = []
            if who.role != "referent":
                members = sorted({t.member for t in await find_tickets(ports, who, at, statuses=OPEN_STATUSES)
                                  if t.member})
            fragment = "/fragments/queue?" + urlencode({k: v for k, v in filters.items() if v})
            body = (
                "<h1>File des tickets ouverts</h1>"
                "<p class=\"intro\">Échéance la plus proche en premier. Les comptes à rebours avancent en direct ; "
                f"la file se met à jour toutes les {REFRESH_SECONDS} secondes.</p>"
                f"{filters_form(filters, who, members)}"
                f'<div id="queue" data-fragment="{esc(fragment)}" data-refresh="{REFRESH_SECONDS}">'
                f"{queue_table(views, total, at, tz)}</div>"
            )
            return html_response(self, page("File des tickets", body, who, server_now=at))

    @app.page("/fragments/queue")
    class QueueFragment(View):
        async def get(self, request: Request) -> Response:
            who = await caller(request)
            if who is None:
                return html_response(self, '<p role="alert">Session expirée : reconnectez-vous.</p>', status=401)
            at = now()
            filters = queue_filters(request.query, who)
            views, total = await queue_views(who, filters, at)
            return html_response(self, queue_table(views, total, at, tz))

    @app.page("/tickets/{ticket_id}")
    class TicketPage(View):
        async def get(self, request: Request, ticket_id: str) -> Response:
            # Sign-in first, here: a redirect would not survive the hop to another worker.
            if await caller(request) is None:
                return to_login(self, request)
            response = await self.routed(request)
            # Faust rebuilds a page served by the worker owning the ticket without its headers.
            response.headers.update(SECURITY_HEADERS)
            return response

        @app.table_route(table=route_table, match_info="ticket_id")  # type: ignore[arg-type]
        async def routed(self, request: Request) -> Response:
            ticket_id = request.match_info["ticket_id"]
            who = await caller(request)
            if who is None:
                return to_login(self, request)
            ticket = visible_ticket(ports, who, ticket_id)
            if ticket is None:
                body = (f"<h1>Ticket introuvable</h1><p>Aucun ticket {esc(ticket_id)} ne vous est accessible.</p>"
                        '<p><a href="/">← Retour à la file</a></p>')
                return html_response(self, page("Ticket introuvable", body, who), status=404)
            at = now()
            view = ticket_view(ticket, ports.policy, at)
            events: list[Event] | None = None
            engine = ports.archive
            if engine is not None:
                events = await asyncio.get_running_loop().run_in_executor(None, ticket_events, engine, ticket_id)
            body = ticket_body(view, events, who, at, tz)
            return html_response(self, page(f"Ticket {ticket_id}", body, who, server_now=at))

    @app.page("/login")
    class Login(View):
        async def get(self, request: Request) -> Response:
            target = local_next(request.query.get("next"))
            message = None
            if ports.auth is None:  # authentication turned off: nothing to sign in to
                return redirect(self, target)
            if session_token(request):
                if await caller(request) is not None:
                    return redirect(self, target)
                message = "Votre jeton n'est plus valable (révoqué ?) : saisissez-en un autre."
            body = login_body(target, message)
            headers = {"Set-Cookie": session_cookie("", secure=is_https(request))} if message else {}
            return html_response(self, page("Connexion", body, None), headers=headers)

        async def post(self, request: Request) -> Response:
            if not same_origin(request):
                return html_response(self, page("Connexion", "<h1>Requête refusée</h1>", None), status=403)
            form = await request.post()
            token = str(form.get("token", "")).strip()
            target = local_next(str(form.get("next", "/")))
            if ports.auth is None:
                return redirect(self, target)
            principal = None
            if token and len(token) <= 256:
                principal = await asyncio.get_running_loop().run_in_executor(None, ports.auth.authenticate,
                                                                             token)
            if principal is None:
                log.info("web sign-in refused")
                body = login_body(target, "Jeton inconnu ou révoqué.")
                return html_response(self, page("Connexion", body, None), status=401)
            log.info("web sign-in", role=principal.role, label=principal.label)
            return redirect(self, target, session_cookie(token, secure=is_https(request)))

    @app.page("/logout")
    class Logout(View):
        async def post(self, request: Request) -> Response:
            if not same_origin(request):
                return html_response(self, page("Déconnexion", "<h1>Requête refusée</h1>", None), status=403)
            return redirect(self, "/login", session_cookie("", secure=is_https(request)))

    @app.page("/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            content_type = STATIC.get(name)
            if content_type is None:
                return self.json({"error": f"no static file {name!r}"}, status=404)
            return self.bytes(static_asset(name), headers={
                "Content-Type": content_type, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @app.page("/api/tickets/{ticket_id}/dispute-file")
    class DisputeFile(View):
        """One ticket's dispute file, replayed from the SQL archive like ``slaledger audit
        replay --source archive --ticket``: the whole chain is verified, so it reads the
        whole archive (in a thread)."""

        async def get(self, request: Request, ticket_id: str) -> Response:
            try:
                who = await authenticate(request, cookie=True)
            except BadRequest as exc:
                return self.json({"error": exc.message}, status=exc.status)
            if not who.staff:
                return self.json({"error": "the dispute file is for the support team and auditors"}, status=403)
            fmt = request.query.get("format", "json")
            if fmt not in DISPUTE_FORMATS:
                return self.json({"error": f"format must be one of {', '.join(DISPUTE_FORMATS)}", "field": "format"},
                                 status=422)
            engine = ports.archive
            if engine is None:
                return self.json({"error": "no event archive on this worker (SLALEDGER_DATABASE_URL)"}, status=404)
            rendered = await asyncio.get_running_loop().run_in_executor(None, render_dispute_file, engine,
                                                                         ports.policy, ticket_id, fmt)
            if rendered is None:
                return self.json({"error": f"ticket {ticket_id} not found in the archive"}, status=404)
            content, ok = rendered
            content_type, ext = DISPUTE_FORMATS[fmt]
            filename = f"dossier-{_SAFE_FILENAME.sub('_', ticket_id)[:64]}.{ext}"
            log.info("dispute file served", ticket_id=ticket_id, format=fmt, actor=who.actor, integrity_ok=ok)
            return self.bytes(content, headers={
                "Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"',
                "X-Slaledger-Integrity": "ok" if ok else "failed", "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff"})


def render_dispute_file(engine: Any, policy: Any, ticket_id: str, fmt: str) -> tuple[bytes, bool] | None:
    """(file, integrity ok) or None when the archive has no such ticket."""
    from projections.audit import Filters, archive_records, dispute_file, replay, stable_json
    from projections.report import to_html, to_markdown, to_pdf

    result = replay(archive_records(engine), policy, Filters(ticket=ticket_id), source="archive", engine=engine)
    if ticket_id not in result.tickets:
        return None
    doc = dispute_file(result)
    if fmt == "pdf":
        return to_pdf(doc), result.ok
    text = {"json": stable_json, "md": to_markdown, "html": to_html}[fmt](doc)
    return text.encode(), result.ok
