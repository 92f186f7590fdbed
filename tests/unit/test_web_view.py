"""The web view's rendering, without a browser (the browser tests are in tests/e2e/test_web.py)."""

from __future__ import annotations

import dataclasses
import itertools
import re
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from service.principal import Principal
from sla.events import EventType, format_instant
from sla.policy import Policy
from sla.ticket import fold
from sla.view import ticket_view
from slaledger.settings import Settings, load_policy
from slaledger.web.axis import MAX_TICKS, TICK_STEPS, Axis, axis_geometry, story_segments
from slaledger.web.browser import local_next
from slaledger.web.clocks import queue_sort_key
from slaledger.web.render import clock_duration, countdown_text, login_page, queue_row, segments_svg, ticket_page
from slaledger.web.signin import session_cookie
from tests.conftest import PARIS, at, ev, filed

POLICY = load_policy()


def test_countdown_wording_always_shows_seconds() -> None:
    assert clock_duration(5) == "5 s"
    assert clock_duration(65) == "1 min 05 s"
    assert clock_duration(3 * 3600 + 4 * 60 + 5) == "3 h 04 min 05 s"
    assert clock_duration(86400 + 3600) == "1 j 1 h 00 min 00 s"
    assert countdown_text(61) == "reste 1 min 01 s"
    assert countdown_text(-61) == "dépassée depuis 1 min 01 s"


def test_sign_in_goes_back_to_this_site_only() -> None:
    assert local_next("/tickets/SL-1?x=1") == "/tickets/SL-1?x=1"
    for hostile in ("//evil.example/", "https://evil.example/", "/\\evil.example", "", None, "tickets",
                    "/\t/evil.example", "/\n/evil.example", "/\r/evil.example"):  # browsers drop tab/CR/LF
        assert local_next(hostile) == "/"


def test_session_cookie_flags() -> None:
    cookie = session_cookie("a-session-id", secure=False)
    assert cookie.startswith("slaledger_session=a-session-id") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert "Secure" in session_cookie("a-session-id", secure=True)
    assert "Max-Age=0" in session_cookie("", secure=False)


def test_the_cookie_is_secure_when_the_public_url_is_https() -> None:
    """From configuration only: no request header (X-Forwarded-Proto) decides it."""
    assert Settings(public_url="https://sla.gip.example").secure_cookie
    assert not Settings(public_url="http://localhost:8080").secure_cookie
    assert not Settings().secure_cookie


def test_queue_row_marks_states_in_words(policy: Policy) -> None:
    # filed Monday 09:00 in the window: intake due 13:00, at risk from 12:00 (75 %)
    ticket = fold([filed("2026-03-16T09:00:00+01:00", member="<script>alert(1)</script>")])
    now = at("2026-03-16T12:30:00+01:00")
    view = ticket_view(ticket, policy, now)
    html = queue_row(view, now, PARIS)
    assert 'class="row-at_risk"' in html and "À risque" in html and "reste 30 min 00 s" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    late = at("2026-03-16T13:00:01+01:00")
    html = queue_row(ticket_view(ticket, policy, late), late, PARIS)
    assert 'class="row-breached"' in html and "Dépassé" in html and "dépassée depuis 1 s" in html


def test_paused_clock_shows_no_countdown(policy: Policy) -> None:
    ticket = fold([
        filed("2026-03-16T09:00:00+01:00", kind="administrative"),
        ev(EventType.ACKNOWLEDGED, "2026-03-16T09:30:00+01:00"),
        ev(EventType.WAITING_FOR_CUSTOMER, "2026-03-17T10:00:00+01:00"),
    ])
    now = at("2026-03-18T10:00:00+01:00")
    view = ticket_view(ticket, policy, now)
    html = queue_row(view, now, PARIS)
    assert "Suspendu" in html and "délai suspendu : il restera" in html and "data-countdown" not in html
    assert 'class="row-paused"' in html
    assert queue_sort_key(view)[0] == 1  # after every ticket with a running deadline


def test_a_clock_stopped_before_its_window_opened_is_drawn_up_to_the_stop(policy: Policy) -> None:
    # filed and acknowledged on a Sunday: the intake window would only have opened on Monday
    ticket = fold([filed("2026-03-15T10:00:00+01:00"), ev(EventType.ACKNOWLEDGED, "2026-03-15T10:05:00+01:00")])
    now = at("2026-03-15T10:10:00+01:00")
    intake = next(c for c in ticket_view(ticket, policy, now)["clocks"] if c["sla"] == "intake")
    spans = story_segments(intake)
    assert spans == [("outside_hours", at("2026-03-15T10:00:00+01:00"), at("2026-03-15T10:05:00+01:00"))]
    svg = segments_svg(intake, spans, now, PARIS, 0)
    assert svg.count('class="seg seg-outside_hours"') == 1 and "Échéance 16/03 12:00" in svg


def test_pages_escape_what_they_show_and_hold_no_inline_script_or_style(policy: Policy) -> None:
    hostile = '<script>alert("x")</script>'
    filing = filed("2026-03-16T09:00:00+01:00", member=hostile)
    events = [dataclasses.replace(filing, actor="agent:" + hostile),
              ev(EventType.WAITING_FOR_CUSTOMER, "2026-03-16T10:00:00+01:00", reason=hostile)]
    now = at("2026-03-16T12:30:00+01:00")
    view = ticket_view(fold(events), policy, now)
    agent = Principal(token_id="t", role="agent", member=None, label=hostile)
    html = ticket_page(view, events, agent, now, PARIS)
    assert html.count("&lt;script&gt;") == 4  # the member, the session's label, the actor, the reason
    assert '<section class="clock' in html and '<svg class="axis"' in html and '<ol class="timeline">' in html
    login = login_page('/"><script>', "x<y")
    for page in (html, login):
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/web.js" defer>']
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page)  # strict CSP: no inline style or handler
    assert 'value="/&#34;&gt;&lt;script&gt;"' in login and "x&lt;y" in login


def test_an_antedated_fact_is_shown_with_who_dated_it_and_an_answer_as_such(policy: Policy) -> None:
    filing = filed("2026-03-16T09:00:00+01:00", kind="administrative", channel="email")
    events = [filing,
              ev(EventType.ACKNOWLEDGED, "2026-03-16T10:00:00+01:00", recorded="2026-03-16T12:00:00+01:00"),
              ev(EventType.CUSTOMER_INFORMED, "2026-03-16T12:10:00+01:00", message="Voici la réponse", answer=True)]
    now = at("2026-03-16T12:30:00+01:00")
    view = ticket_view(fold(events), policy, now)
    html = ticket_page(view, events, Principal("t", "agent", None, "alice"), now, PARIS)
    flagged = re.findall(r'badge-antedated">antidaté</span> <span class="muted">\(daté par ([^,]+),', html)
    assert flagged == ["test"]  # one fact (the acknowledgement, two hours late), with its author
    assert "réponse à la demande" in html


def test_antedated_facts_are_shown_even_without_the_archive(policy: Policy) -> None:
    events = [filed("2026-03-16T09:00:00+01:00"),
              ev(EventType.ACKNOWLEDGED, "2026-03-16T10:00:00+01:00", recorded="2026-03-16T12:00:00+01:00")]
    now = at("2026-03-16T12:30:00+01:00")
    html = ticket_page(ticket_view(fold(events), policy, now), None, Principal("t", "agent", None, "a"), now, PARIS)
    assert "Chronologie indisponible" in html and "Prise en compte daté par test" in html


# --- the clock's time axis (issue #32 item 8) ------------------------------------------------

WINTER = datetime(2026, 11, 2, tzinfo=PARIS)  # months without a clock change: ticks evenly spaced


def drawn(start: datetime, seconds: float, now: datetime) -> Axis:
    """A clock running from ``start`` to its deadline ``seconds`` later, drawn at ``now``."""
    deadline = start + timedelta(seconds=seconds)
    end = min(now, deadline)
    clock = {"deadline": format_instant(deadline), "stopped_at": None, "status": "running",
             "segments": [{"kind": "running", "start": format_instant(start), "end": format_instant(end)}]}
    axis = axis_geometry(clock, story_segments(clock), now, 0, PARIS)
    assert axis is not None
    return axis


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 100 * 86400 * 10**6), st.integers(60, 60 * 86400), st.floats(0.0, 1.0))
def test_ticks_are_round_and_the_clock_fills_its_axis(offset_us: int, seconds: int, progress: float) -> None:
    start = WINTER + timedelta(microseconds=offset_us)
    axis = drawn(start, seconds, start + timedelta(seconds=seconds * progress))
    ticks = [t.at.astimezone(PARIS) for t in axis.ticks]
    assert 2 <= len(ticks) <= MAX_TICKS + 1 and axis.step in {step for step, _ in TICK_STEPS}
    for tick in ticks:  # round: a whole number of steps after a local midnight
        since_midnight = tick.hour * 3600 + tick.minute * 60 + tick.second
        assert tick.microsecond == 0 and since_midnight % min(axis.step, 86400) == 0, (tick, axis.step)
    if axis.step >= 86400:
        assert all((b.date() - a.date()).days == axis.step // 86400 for a, b in itertools.pairwise(ticks))
    # the clock's own span (start to deadline) fills most of the axis, and its bar is drawn to scale
    assert ticks[0] <= start and ticks[-1] >= start + timedelta(seconds=seconds)
    assert seconds / (ticks[-1] - ticks[0]).total_seconds() > 0.6
    usable = axis.width - 2 * axis.pad
    bar = sum(s.width for s in axis.stretches)
    assert bar >= min(usable * 0.6 * progress, usable * 0.6) - 1.5 or progress < 0.01


def test_the_axis_ticks_of_the_issue_are_round_hours() -> None:
    """Filed at 04:19:37, due four hours later: ticks on the hour, the scale said in words."""
    ticket = fold([filed("2026-11-23T04:19:37+01:00", channel="portal")])
    now = at("2026-11-23T09:10:00+01:00")
    intake = next(c for c in ticket_view(ticket, POLICY, now)["clocks"] if c["sla"] == "intake")
    svg = segments_svg(intake, story_segments(intake), now, PARIS, 0)
    labels = re.findall(r'class="tick-label"[^>]*>([^<]+)<', svg)
    assert labels and all(re.fullmatch(r"\d\d:00|\d\d/\d\d", label) for label in labels), labels
    assert "une graduation toutes les" in svg


def test_the_timeline_comes_before_the_clocks(policy: Policy) -> None:
    events = [filed("2026-11-23T10:00:00+01:00"), ev(EventType.ACKNOWLEDGED, "2026-11-23T10:30:00+01:00")]
    now = at("2026-11-23T11:00:00+01:00")
    html = ticket_page(ticket_view(fold(events), policy, now), events, Principal("t", "agent", None, "a"), now, PARIS)
    assert html.index('id="h-chrono"') < html.index('id="h-delais"') and '<div class="story">' in html


def test_a_reclassification_reads_in_french_with_the_products_name() -> None:
    """#32 items 4–5: « type → Incident ; produit → Parapheur », not « kind → incident ;
    product → parapheur »."""
    from zoneinfo import ZoneInfo

    from sla.events import EventType, new_event
    from slaledger.web.render import event_details
    from tests.conftest import at

    when = at("2026-03-02T10:00:00+01:00")
    event = new_event(EventType.RECLASSIFIED, "SL-1", occurred_at=when, recorded_at=when, actor="agent",
                      payload={"kind": "incident", "product": "parapheur"})
    text = event_details(event, ZoneInfo("Europe/Paris"), {}, (), {"parapheur": "Parapheur électronique"})
    assert text == "type → Incident ; produit → Parapheur électronique"
