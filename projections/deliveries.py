"""What monthly statements were e-mailed (table ``monthly_statements_sent``).

The scheduler records a statement once the SMTP server has accepted it; a restart reads
this table and skips what is there. A crash between the server's acceptance and the commit
would send that one statement again on restart: the only window where a member can get it
twice, chosen over the reverse risk of a statement never sent. The Message-ID and the PDF's
SHA-256 are kept to answer « which document did you send me? ».
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from .models import STATEMENTS_SENT


def was_sent(engine: Engine, member: str, month: str) -> bool:
    with engine.connect() as conn:
        return conn.scalar(select(STATEMENTS_SENT.c.member).where(
            STATEMENTS_SENT.c.member == member, STATEMENTS_SENT.c.month == month)) is not None


def record_sent(engine: Engine, *, member: str, month: str, recipient: str, message_id: str, pdf_sha256: str,
                sent_at: datetime) -> None:
    """Record (or, for a statement sent again by hand, replace) the sending of a month."""
    with engine.begin() as conn:
        conn.execute(delete(STATEMENTS_SENT).where(STATEMENTS_SENT.c.member == member,
                                                   STATEMENTS_SENT.c.month == month))
        conn.execute(insert(STATEMENTS_SENT).values(member=member, month=month, recipient=recipient,
                                                    message_id=message_id, pdf_sha256=pdf_sha256, sent_at=sent_at))


def sent(engine: Engine, member: str | None = None) -> list[dict[str, Any]]:
    """Every recorded sending (of one member), oldest month first."""
    query = select(STATEMENTS_SENT).order_by(STATEMENTS_SENT.c.month, STATEMENTS_SENT.c.member)
    if member is not None:
        query = query.where(STATEMENTS_SENT.c.member == member)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
