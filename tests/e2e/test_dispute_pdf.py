"""The dispute file looks like a legal document: the PDF is the ticket page's dispute HTML
printed (WeasyPrint), with every time in local time and its offset (UTC in the annex), full
Unicode, embedded fonts, « page N / M », a title, the date of issue, the policy's readings
quoted and the integrity result. Checked as a person would: its pages are rendered to PNG
(kept in ``test-artifacts/``) and its text read back."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from projections.archive_hash import GENESIS_HASH, chain_hash
from projections.audit.dispute_file import dispute_file
from projections.audit.replay import Filters, replay
from projections.audit.sources import LogRecord
from projections.report import to_html, to_pdf
from sla.events import EventType, encode_event, new_event
from slaledger.settings import load_policy
from tests.conftest import at, system_tool

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(os.environ.get("SLALEDGER_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def records() -> list[LogRecord]:
    """A ticket filed on the Friday before Easter Monday, breached, acknowledged late by an agent
    who dated the acknowledgement two hours back."""
    filed_at = at("2026-04-03T17:00:00+02:00")
    deadline = at("2026-04-07T12:00:00+02:00")
    events = [
        new_event(EventType.TICKET_FILED, "SL-PDF", occurred_at=filed_at, recorded_at=filed_at, actor="referent:blois",
                  payload={"kind": "assistance", "channel": "portal", "member": "commune-de-blois", "product": "ent",
                           "subject": "Cœur de l'ENT inaccessible — « œuvre » n° 2 ≥ 1 €"}, event_id=uuid.uuid4()),
        new_event(EventType.SLA_BREACHED, "SL-PDF", occurred_at=deadline, recorded_at=deadline + timedelta(seconds=1),
                  actor="slaledger/sla-clock", payload={"sla": "intake", "deadline": deadline,
                                                        "policy_version": "convention-2026.1",
                                                        "explanation": "Rien n'était enregistré à l'échéance."},
                  event_id=uuid.uuid4()),
        new_event(EventType.ACKNOWLEDGED, "SL-PDF", occurred_at=deadline + timedelta(hours=1),
                  recorded_at=deadline + timedelta(hours=3), actor="agent:alice", event_id=uuid.uuid4()),
    ]
    out, prev = [], GENESIS_HASH
    for seq, event in enumerate(events, start=1):
        raw = encode_event(event)
        out.append(LogRecord(raw, {"archive_seq": seq}, prev, chain_hash(prev, raw)))
        prev = out[-1].hash or ""
    return out


def test_the_pdf_reads_as_a_legal_document(tmp_path: Path) -> None:
    pdftoppm = system_tool("pdftoppm", package="poppler-utils")
    pdftotext = system_tool("pdftotext", package="poppler-utils")
    doc = dispute_file(replay(iter(records()), load_policy(), Filters(),
                              source="archive"))
    html = to_html(doc)
    pdf = tmp_path / "dossier.pdf"
    pdf.write_bytes(to_pdf(doc))
    text = subprocess.run([pdftotext, str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    text = " ".join(text.split())  # as read, whatever the line breaks

    pages = int(re.search(r"page 1 / (\d+)", text).group(1))  # type: ignore[union-attr]
    assert pages >= 2 and f"page {pages} / {pages}" in text
    assert "Dossier de contestation — engagements de service" in text and "Édité le" in text
    assert "Cœur de l'ENT inaccessible — « œuvre » n° 2 ≥ 1 €" in text  # full Unicode, nothing squeezed
    assert "vendredi 3 avril 2026 à 17:00 (UTC+02:00)" in text  # local time with its offset
    assert "2026-04-03T15:00Z" in text  # UTC in the annex, to the minute like every time a person reads
    assert not re.search(r"\d\d:\d\d:\d\d[.,]\d", text)  # no microseconds (issue #32)
    assert "« jour ouvrable suivant » lu comme jour ouvré" in text  # the policy's readings quoted
    assert "lundi de Pentecôte férié" in text and "Version convention-2026.2" in text
    assert "Intégrité vérifiée" in text
    assert "ANTIDATÉ par agent:alice" in text
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "DejaVu" in fonts and all(line.split()[-5] == "yes" for line in fonts.splitlines()[2:])  # embedded
    # the same HTML as the web view serves
    assert "ANTIDATÉ par agent:alice" in html and 'lang="fr"' in html

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = ARTIFACTS / "dispute-file"
    for old in ARTIFACTS.glob("dispute-file-*.png"):
        old.unlink()
    subprocess.run([pdftoppm, "-png", "-r", "80", str(pdf), str(prefix)], check=True)
    rendered = sorted(ARTIFACTS.glob("dispute-file-*.png"))
    assert len(rendered) == pages and all(p.stat().st_size > 10_000 for p in rendered)
