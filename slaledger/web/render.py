"""The web view's HTML: Jinja2 templates (``slaledger/web/templates/``) with autoescape.

Every value reaches the markup through a template, where autoescape escapes it: nothing
here escapes by hand. This module holds what the templates cannot say simply: the French
wording tables, the formatting of instants and countdowns (the same wording as
``slaledger/web/static/web.js``) and of events; a clock's reading is ``clocks.py``, the
segments axis' geometry ``axis.py``. The views (``pages.py``) call the ``*_page`` functions
and ``queue_table``.

Markup rules the script and the browser tests rely on: ``time[data-countdown]`` carries
the deadline in ``datetime``, ``#queue`` holds the fragment (``data-fragment``,
``data-refresh``) and ``#filters`` the form; no inline script or style (strict CSP).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

from sla import french
from sla.events import KINDS, Event, EventType, parse_instant

from . import actions
from .axis import Span, axis_geometry, story_segments, tick_label
from .clocks import clock_state, counting, current_clocks, suspended, time_left, worst_state
from .ports import Principal

STATE_SYMBOL = {"breached": "✖", "at_risk": "⚠", "running": "▶", "paused": "‖", "pending": "…", "met": "✓",
                "retracted": "↺", "excluded": "–"}
FILTER_STATES = ("breached", "at_risk", "running", "paused", "pending")
ROLE_LABEL = {"agent": "Agent", "referent": "Référent", "auditor": "Auditeur", "admin": "Administrateur"}

# --- formatting --------------------------------------------------------------------------------

def instant(value: str | datetime | None, tz: ZoneInfo, beside: Iterable[str | datetime | None] = ()) -> str:
    """« vendredi 13 mars 2026 à 17:00 » from an ISO 8601 string or an aware datetime; « — » for
    none. To the minute, finer only where it would read the same as an instant of ``beside``
    (see ``french.precision``)."""
    if not value:
        return "—"
    return french.instant(_aware(value), tz, beside=[_aware(b) for b in beside if b])


def _aware(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else parse_instant(value, "instant")


def judged(view: Mapping[str, Any], events: Sequence[Event] | None) -> tuple[list[str], list[Any]]:
    """A ticket page's deadlines, and the moments its verdicts compare with them (stops,
    facts, events): a page writes each of them beside the others, so an acknowledgement 30 s
    after a 13:00 deadline never reads « 13:00 » beside « Dépassé »."""
    deadlines = [d for c in view["clocks"] for d in (c["deadline"], *c["breached_deadlines"],
                                                     *c["retracted_deadlines"]) if d]
    moments: list[Any] = [c["stopped_at"] for c in view["clocks"]]
    moments += [view.get(key) for key in ("acknowledged_at", "resolved_at", "closed_at")]
    moments += [e.occurred_at for e in events or ()]
    return deadlines, [m for m in moments if m]


def short(value: datetime, tz: ZoneInfo) -> str:
    """« 16/03 12:00 »: the axis' deadline label (the facts above it give the exact time)."""
    local = value.astimezone(tz)
    return f"{local.day:02d}/{local.month:02d} {local.hour:02d}:{local.minute:02d}"


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
    """Past the deadline, the overrun rounds up: never « dépassée depuis 0 s » beside a breach."""
    if remaining >= 0:
        return f"reste {clock_duration(remaining)}"
    return f"dépassée depuis {clock_duration(math.ceil(-remaining))}"


def path_segment(value: str) -> str:
    """A value as one segment of a URL path (« / » included)."""
    return quote(value, safe="")


def pixels(value: float) -> str:
    """An SVG coordinate, to a tenth."""
    return f"{value:.1f}"


# --- events ------------------------------------------------------------------------------------

def event_details(event: Event, tz: ZoneInfo, titles: Mapping[str, str], moments: Sequence[Any] = (),
                  products: Mapping[str, str] | None = None) -> str:
    """What a timeline line adds to the event's type; an SLA named by its title (``titles``:
    the page's clocks), never by its id; a deadline written as the clock writes it (beside the
    page's ``moments``, see ``judged``)."""
    p = event.payload
    bits = []
    if event.type in (EventType.SLA_WARNING_RAISED, EventType.SLA_BREACHED, EventType.SLA_BREACH_RETRACTED):
        sla = titles.get(str(p.get("sla")), str(p.get("sla")))
        bits.append(f"« {sla} », échéance du {instant(p['deadline'], tz, moments)}"
                    if isinstance(p.get("deadline"), datetime) else f"« {sla} »")
    if event.type is EventType.CUSTOMER_INFORMED and p.get("answer"):
        bits.append("réponse à la demande")
    if isinstance(p.get("restoration_eta"), datetime):
        bits.append(f"rétablissement prévu le {french.instant(p['restoration_eta'], tz)}")
    for key in ("message", "reason", "note", "resolution"):
        if p.get(key):
            bits.append(str(p[key]))
    if event.type is EventType.RECLASSIFIED:
        if p.get("kind"):
            bits.append(f"type → {french.KIND.get(str(p['kind']), str(p['kind']))}")
        if p.get("product"):  # the catalogue's name of the ticket's product (``products``), else as stored
            bits.append(f"produit → {(products or {}).get(str(p['product']), str(p['product']))}")
    return " ; ".join(bits)


def recorded_late(event: Event) -> bool:
    """Typed in a minute or more after it happened (the timeline then says when)."""
    return abs((event.recorded_at - event.occurred_at).total_seconds()) >= 60


# --- the templates -----------------------------------------------------------------------------

env = Environment(
    loader=PackageLoader("slaledger.web", "templates"),
    autoescape=True,  # every template is HTML
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,  # an included fragment ends its line
)
env.filters.update(instant=instant, short=short, tick_label=tick_label, clock_duration=clock_duration,
                   countdown_text=countdown_text, pixels=pixels, path_segment=path_segment)
env.globals.update(
    KIND_FR=french.KIND, CHANNEL_FR=french.CHANNEL, STATUS_FR=french.STATUS, STATE_FR=french.STATE,
    STATE_SYMBOL=STATE_SYMBOL,
    SEGMENT_FR=french.SEGMENT, ROLE_LABEL=ROLE_LABEL, TYPE_FR=french.EVENT_TYPE,
    KIND_CHOICES=[(k, french.KIND[k]) for k in KINDS], STATE_CHOICES=[(s, french.STATE[s]) for s in FILTER_STATES],
    clock_state=clock_state, counting=counting, suspended=suspended, time_left=time_left, worst_state=worst_state,
    current_clocks=current_clocks, percent=french.percent, sla_title=french.sla_title,
    story_segments=story_segments, axis_geometry=axis_geometry,
    event_details=event_details, recorded_late=recorded_late, new_form_key=actions.new_form_key,
)


def _render(name: str, **context: Any) -> str:
    return env.get_template(name).render(**context)


def _page(name: str, *, who: Principal | None = None, server_now: datetime | None = None, **context: Any) -> str:
    """A whole page: ``name`` extends ``base.html`` (the frame: head, banner, session, main)."""
    return _render(name, who=who, server_now=server_now, **context)


# --- fragments (also what the unit tests look at) ----------------------------------------------

def queue_counts(views: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many tickets are at each of the states the queue's summary names (by their worst clock)."""
    worst = [worst_state(v["clocks"]) for v in views]
    return {s: worst.count(s) for s in ("breached", "at_risk", "paused")}


def queue_table(views: Sequence[Mapping[str, Any]], total: int, now: datetime, tz: ZoneInfo) -> str:
    """The part of the queue page the script swaps every few seconds."""
    return _render("queue_table.html", views=views, total=total, counts=queue_counts(views), now=now, tz=tz)


def queue_row(view: Mapping[str, Any], now: datetime, tz: ZoneInfo) -> str:
    return _render("queue_row.html", view=view, now=now, tz=tz)


def segments_svg(clock: Mapping[str, Any], spans: Sequence[Span], now: datetime, tz: ZoneInfo, index: int) -> str:
    """The clock's segments on a time axis: patterns (not colour alone), a deadline and a
    "now" marker with text, a tooltip per segment; the table after it says the same."""
    geometry = axis_geometry(clock, spans, now, index, tz)
    return _render("axis.html", clock=clock, spans=spans, axis=geometry, tz=tz)


def session_expired() -> str:
    """What the queue fragment answers once the session is gone (the script then goes to sign-in)."""
    return _render("session_expired.html")


# --- pages -------------------------------------------------------------------------------------

def queue_page(who: Principal, filters: Mapping[str, str], members: Mapping[str, str],
               views: Sequence[Mapping[str, Any]], total: int, now: datetime, tz: ZoneInfo, *,
               fragment: str, refresh: int) -> str:
    """The queue: filters (``members``: id → the name shown), then the table the script
    refreshes from ``fragment``."""
    names = {**({filters["member"]: filters["member"]} if filters["member"] else {}), **members}
    choices = sorted(names.items(), key=lambda item: (item[1].casefold(), item[0]))
    return _page("queue.html", who=who, server_now=now, filters=filters, member_choices=choices,
                 views=views, total=total, counts=queue_counts(views), now=now, tz=tz, fragment=fragment,
                 refresh=refresh, may_file=actions.may_file(who))


def ticket_page(view: Mapping[str, Any], events: Sequence[Event] | None, who: Principal, now: datetime,
                tz: ZoneInfo, *, token: str = "", refusal: Mapping[str, Any] | None = None,
                done: str | None = None) -> str:
    """One ticket's SLA story: facts, the caller's actions (``refusal``: the last one refused,
    with what was typed), each clock (verdict, axis, segments), the timeline."""
    forms = actions.forms_for(who, str(view["status"]), str(view["kind"]))
    deadlines, moments = judged(view, events)
    return _page("ticket.html", who=who, server_now=now, view=view, events=events, now=now, tz=tz, forms=forms,
                 token=token, refusal=refusal, done=done, deadlines=deadlines, moments=moments,
                 sla_titles={c["sla"]: c["title"] for c in view["clocks"]},
                 product_names={view["product"]: view.get("product_name") or view["product"]})


def new_ticket_page(who: Principal, *, token: str, values: Mapping[str, Any] | None = None,
                    refusal: str | None = None, form_key: str | None = None,
                    suggestions: Mapping[str, Sequence[str]] | None = None) -> str:
    """The filing form; after a refusal, with what was typed and the same idempotency key.
    ``suggestions``: the names the member and product inputs propose (a typo is refused)."""
    return _page("new_ticket.html", who=who, fields=actions.filing_fields(who), token=token, values=values or {},
                 refusal=refusal, form_key=form_key, suggestions=suggestions or {})


def action_refused_page(who: Principal, ticket_id: str, refusal: Mapping[str, Any]) -> str:
    """A refused action when this worker does not hold the ticket's page: the message and
    what was typed, to copy back."""
    return _page("action_refused.html", who=who, ticket_id=ticket_id, refusal=refusal)


def ticket_not_found_page(ticket_id: str, who: Principal) -> str:
    return _page("ticket_not_found.html", who=who, ticket_id=ticket_id)


def ticket_taken_back_page(ticket_id: str, who: Principal) -> str:
    """The ticket's partition is being taken back by this worker: a moment, not "not found"."""
    return _page("ticket_taken_back.html", who=who, ticket_id=ticket_id)


def login_page(next_path: str, message: str | None) -> str:
    return _page("login.html", next_path=next_path, message=message)


def refused_page(title: str) -> str:
    """A form post from another site, refused."""
    return _page("refused.html", title=title)


def redirect_page(target: str) -> str:
    """A same-site hop to ``target`` (it then carries the SameSite=Strict cookie)."""
    return _page("redirect.html", target=target)
