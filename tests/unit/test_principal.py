"""What each role may do, asked of the principal (``service.principal``): the API, the pages
and the metrics server all ask it, so one table here is what every surface enforces."""

from __future__ import annotations

import pytest

from service.principal import ROLES, Principal
from sla.ticket import CommandType


def principal(role: str) -> Principal:
    return Principal("t-1", role, "m-001" if role == "referent" else None, "alice")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", list(CommandType))
def test_who_may_send_what(role: str, command: CommandType) -> None:
    expected = {"agent": True, "admin": True, "auditor": False, "metrics": False,
                "referent": command in (CommandType.FILE, CommandType.CUSTOMER_RESPONSE)}[role]
    assert principal(role).may_send(command) is expected


@pytest.mark.parametrize(("role", "sends", "dates", "scrapes"), [
    ("agent", True, True, True), ("admin", True, True, True), ("referent", True, False, False),
    ("auditor", False, False, True), ("metrics", False, False, True),
])
def test_what_each_role_may_do(role: str, sends: bool, dates: bool, scrapes: bool) -> None:
    who = principal(role)
    assert (who.sends_commands, who.dates_facts, who.reads_metrics) == (sends, dates, scrapes)
