"""Sending a monthly statement by e-mail: stdlib ``smtplib`` and ``email.message``.

At the edge on purpose: the statement (``projections.monthly``) knows nothing of SMTP, and
this module nothing of SLAs. Failures are ``OSError``s (``smtplib.SMTPException`` is one,
so is a refused connection), which the CLI reports on one line; a configuration that
cannot work (no host, no sender, a password sent in clear) is a ``MailError`` at start.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from .members import MembersError, check_address
from .settings import Settings

SECURITY = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class MailError(ValueError):
    """An SMTP configuration that cannot send; the message names the variable to fix."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str
    sender: str
    user: str = ""
    password: str = ""
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        """Validated SMTP settings; the password read from ``SLALEDGER_SMTP_PASSWORD_FILE`` (a
        Compose secret) when set."""
        if not settings.smtp_host:
            raise MailError("SLALEDGER_SMTP_HOST is not set: no SMTP server to send through")
        security = settings.smtp_security.strip().lower()
        if security not in SECURITY:
            raise MailError(f"SLALEDGER_SMTP_SECURITY: {settings.smtp_security!r} is not one of {', '.join(SECURITY)}")
        port = settings.smtp_port or DEFAULT_PORTS[security]
        if not 0 < port <= 65535:
            raise MailError(f"SLALEDGER_SMTP_PORT: {port} is not a TCP port")
        try:
            sender = check_address(settings.smtp_from, "SLALEDGER_SMTP_FROM")
        except MembersError as exc:
            raise MailError(str(exc)) from None
        password = settings.smtp_password
        if settings.smtp_password_file:
            if password:
                raise MailError("SLALEDGER_SMTP_PASSWORD and SLALEDGER_SMTP_PASSWORD_FILE are both set: keep one")
            try:
                password = Path(settings.smtp_password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise MailError(f"SLALEDGER_SMTP_PASSWORD_FILE: {exc.strerror or exc}") from None
        if password and not settings.smtp_user:
            raise MailError("an SMTP password is set without SLALEDGER_SMTP_USER")
        if settings.smtp_user and security == "none":
            raise MailError("SMTP authentication over an unencrypted connection: set SLALEDGER_SMTP_SECURITY "
                            "to starttls or ssl")
        return cls(settings.smtp_host, port, security, sender, settings.smtp_user, password, settings.smtp_timeout)


def statement_message(*, sender: str, recipient: str, subject: str, body: str, pdf: bytes, filename: str,
                      message_id: str, date: Any) -> EmailMessage:
    """A French text body and the statement as a PDF attachment; ``message_id`` is recorded by
    the caller with the sending, so a referent's copy can be matched to the record."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Content-Language"] = "fr"
    message.set_content(body)
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    return message


def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Hand the message to the SMTP server; returns once it has accepted it for every recipient."""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if config.security == "ssl":
        smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
    else:
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with smtp:
        if config.security == "starttls":
            smtp.starttls(context=context)
        if config.user:
            smtp.login(config.user, config.password)
        refused = smtp.send_message(message)
    if refused:  # some recipients refused, others accepted: not sent as asked
        raise smtplib.SMTPRecipientsRefused(refused)
