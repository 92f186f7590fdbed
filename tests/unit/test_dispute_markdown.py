"""The Markdown dispute file keeps what somebody typed as text: a subject, a product or an
actor label cannot add a heading, a link, an image, raw HTML or emphasis to the document."""

from __future__ import annotations

from typing import Any

from hypothesis import given, reject, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import LogRecord
from projections.report import to_markdown
from sla.events import EventDecodeError, EventType, encode_event, new_event
from slaledger.settings import load_policy
from tests.conftest import at

POLICY = load_policy()
ACTIVE = {"link_open", "image", "html_inline", "html_block", "em_open", "strong_open", "code_inline", "s_open"}
TYPED = st.text(st.sampled_from(list("#*_[]()<>!|~&`\\{}-+.:/ \n\r\tabcé1")) | st.characters(), min_size=1,
                max_size=40)


def markdown_of(subject: str, product: str, actor: str) -> str:
    t0 = at("2026-03-02T09:00:00+01:00")
    try:
        filed = new_event(EventType.TICKET_FILED, "T-1", occurred_at=t0, recorded_at=t0, actor=actor,
                          payload={"kind": "assistance", "channel": "portal", "product": product,
                                   "member": "m-001", "subject": subject})
        record = LogRecord(encode_event(filed), {"topic": "t", "partition": 0, "offset": 0})
    except (EventDecodeError, UnicodeEncodeError):
        reject()  # what the log refuses (a control character, a lone surrogate) never reaches a dispute file
    result = replay(iter([record]), POLICY, Filters(ticket="T-1"), source="topic")
    return to_markdown(dispute_file(result))


def structure(md: str) -> list[tuple[str, Any]]:
    """The document's blocks and inline markup: what a typed value must not change."""
    out: list[tuple[str, Any]] = []
    for token in MarkdownIt("commonmark").parse(md):
        out.append((token.type, token.tag))
        out += [(child.type, child.tag) for child in token.children or [] if child.type in ACTIVE]
    return out


@settings(max_examples=150, deadline=None)
@given(TYPED, TYPED, TYPED)
def test_typed_values_add_no_markdown(subject: str, product: str, actor: str) -> None:
    assert structure(markdown_of(subject, product, actor)) == structure(markdown_of("Demande", "solaere", "test"))


def test_an_injected_heading_and_link_stay_text() -> None:
    md = markdown_of("Panne\n## Verdict : respecté <img src=x onerror=alert(1)> [preuve](http://evil)",
                     "solaere", "agent:alice")
    assert "\n## Verdict" not in md
    assert "<img" not in md.replace("\\<img", "")
    html = MarkdownIt("commonmark").render(md)
    assert "<img" not in html and "<a href" not in html and "Verdict : respecté" in html
