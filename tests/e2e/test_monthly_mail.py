"""The monthly statement e-mail (issue #16), end to end: tickets projected into PostgreSQL by the
real projection, ``slaledger report schedule --once`` run as a process on the 1st at 06:00,
a local SMTP server (aiosmtpd) on a free port receives the message addressed to the
referent with the PDF attached; its text is read back with pdftotext; a second pass (a
restart) sends nothing; ``report monthly --send`` and bad input behave as a user expects."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from sla.events import EventType
from slaledger.brokers.process import free_port
from tests.conftest import ev, filed, projected, system_tool
from tests.integration.conftest import database  # noqa: F401  (a fresh PostgreSQL database)

pytestmark = pytest.mark.e2e

REFERENT = "dsi@ville-blois.example.org"


class Inbox:
    """What the SMTP server accepted: (envelope recipients, parsed message)."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(raw, policy=policy.default)))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def populate(url: str) -> None:
    """November 2026 for the commune of Blois, through the projector's own code: one intake met,
    one breached (acknowledged late), one incident never acknowledged."""
    events = [
        filed("2026-11-02T09:00:00+01:00", ticket_id="SL-MET", member="commune-de-blois"),
        ev(EventType.ACKNOWLEDGED, "2026-11-02T10:00:00+01:00", "SL-MET"),
        filed("2026-11-03T09:00:00+01:00", ticket_id="SL-LATE", member="commune-de-blois"),
        ev(EventType.ACKNOWLEDGED, "2026-11-03T15:00:00+01:00", "SL-LATE"),
        filed("2026-11-04T09:00:00+01:00", ticket_id="SL-SILENT", member="commune-de-blois", kind="incident"),
    ]
    projected(url, events).dispose()


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slaledger.cli", "report", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def env(tmp_path: Path, database: str, smtp: tuple[Inbox, int]) -> dict[str, str]:  # noqa: F811
    members = tmp_path / "members.toml"
    members.write_text(f'[members.commune-de-blois]\nname = "Commune de Blois"\nreferent = "{REFERENT}"\n',
                       encoding="utf-8")
    populate(database)
    return {**os.environ, "SLALEDGER_DATABASE_URL": database, "SLALEDGER_MEMBERS_FILE": str(members),
            "SLALEDGER_SMTP_HOST": "127.0.0.1", "SLALEDGER_SMTP_PORT": str(smtp[1]),
            "SLALEDGER_SMTP_SECURITY": "none", "SLALEDGER_SMTP_FROM": "slaledger@gip-recia.example.org"}


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    pdftotext = system_tool("pdftotext", package="poppler-utils")
    path = tmp_path / "received.pdf"
    path.write_bytes(pdf)
    out = subprocess.run([pdftotext, str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())


def test_the_schedule_mails_last_months_statement_once(env: dict[str, str], smtp: tuple[Inbox, int],
                                                       tmp_path: Path) -> None:
    inbox, _ = smtp
    before = run(["schedule", "--once", "--now", "2026-12-01T05:59:00+01:00"], env)
    assert before.returncode == 0, before.stderr
    assert "2026-10 commune-de-blois: sent" in before.stdout  # before 06:00 on the 1st: October is the one due
    inbox.messages.clear()

    first = run(["schedule", "--once", "--now", "2026-12-01T06:00:00+01:00"], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "2026-11 commune-de-blois: sent"
    assert len(inbox.messages) == 1
    recipients, message = inbox.messages[0]
    assert recipients == [REFERENT] and message["To"] == REFERENT
    assert message["Subject"] == "Relevé mensuel de conformité — Commune de Blois — novembre 2026"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "2 manquement(s) ce mois-ci" in body.get_content()  # late, and never acknowledged
    attachments = list(message.iter_attachments())
    assert [(a.get_content_type(), a.get_filename()) for a in attachments] == [
        ("application/pdf", "releve-commune-de-blois-2026-11.pdf")]
    text = pdf_text(attachments[0].get_content(), tmp_path)
    assert "Relevé mensuel de conformité" in text and "Commune de Blois" in text and "novembre 2026" in text
    assert "SL-LATE" in text and "échéance dépassée de 2 h" in text  # the breach with its explanation
    assert "aucune tête signée à cette date" in text

    again = run(["schedule", "--once", "--now", "2026-12-01T07:00:00+01:00"], env)  # a restart, an hour later
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "2026-11 commune-de-blois: already sent"
    assert len(inbox.messages) == 1


def test_monthly_send_and_bad_input(env: dict[str, str], smtp: tuple[Inbox, int], tmp_path: Path) -> None:
    inbox, port = smtp
    out = tmp_path / "releve.csv"
    sent = run(["monthly", "--member", "commune-de-blois", "--month", "2026-11", "--format", "csv",
                "-o", str(out), "--send"], env)
    assert sent.returncode == 0, sent.stderr
    assert f"sent to {REFERENT}" in sent.stdout and len(inbox.messages) == 1
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("member,month,sla") and sum(",breached," in r for r in rows) == 2

    for args, reason in [
        (["--member", "nobody", "--month", "2026-11", "--format", "json"], "unknown member 'nobody'"),
        (["--member", "commune-de-blois", "--month", "2026-13", "--format", "json"], "expected YYYY-MM"),
        (["--member", "commune-de-blois", "--month", "2026-11", "--format", "pdf"], "--format pdf needs --output FILE"),
        (["--member", "commune-de-blois", "--month", "2026-11", "--format", "docx"], "invalid choice: 'docx'"),
        (["--member", "commune-de-blois", "--month", "2099-01", "--format", "json"], "has not started yet"),
    ]:
        bad = run(["monthly", *args], env)
        assert bad.returncode == 2 and bad.stderr.startswith("slaledger: error: "), bad.stderr
        assert reason in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    closed = free_port()  # nothing listens there: an environment failure, exit code 1
    down = run(["monthly", "--member", "commune-de-blois", "--month", "2026-11", "--send"],
               {**env, "SLALEDGER_SMTP_PORT": str(closed)})
    # (the last line: WeasyPrint may warn about fonts on stderr before the statement is sent)
    assert down.returncode == 1 and down.stderr.splitlines()[-1].startswith(
        f"slaledger: error: SMTP server 127.0.0.1:{closed}: "), down.stderr
    assert "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1
    assert len(inbox.messages) == 1 and port != closed


def test_a_member_without_a_valid_referent_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    members = tmp_path / "bad.toml"
    members.write_text('[members.commune-de-blois]\nname = "Commune de Blois"\nreferent = "dsi at blois"\n',
                       encoding="utf-8")
    bad = run(["schedule", "--once", "--now", "2026-12-01T06:00:00+01:00"],
              {**env, "SLALEDGER_MEMBERS_FILE": str(members)})
    assert bad.returncode == 2
    assert "members.commune-de-blois.referent: 'dsi at blois' is not an e-mail address" in bad.stderr

