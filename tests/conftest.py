"""Shared fixtures and builders for every test layer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from sqlalchemy import Engine, create_engine

from projections.migrate import create_schema
from projections.projection import Incoming, Projection
from sla.events import Event, EventType, encode_event, new_event
from sla.policy import Policy
from slaledger.settings import load_policy
from streams.topics import EVENTS

PARIS = ZoneInfo("Europe/Paris")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (``item.rep_call``): fixtures that hold
    logs (workers, dev processes) print them when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def call_failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is None or report.failed


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """A test that runs the CLI configures structlog (level filter included); the next test
    starts from the defaults, so log-capturing tests see every level."""
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy()


def system_tool(*names: str, package: str) -> str:
    """The path of a system program the test needs (the first of ``names`` found). Locally a
    missing one skips the test with the package to install; in CI (``CI=true``, set by
    .ci/run, which installs them) it fails it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{names[0]} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def end_group(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM to the process's group; SIGKILL if it has not ended within ``timeout`` seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def at(text: str) -> datetime:
    """An aware instant from ISO 8601 (with offset)."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value


def ev(event_type: EventType, when: datetime | str, ticket_id: str = "T-1", *, recorded: datetime | str | None = None,
       **payload: Any) -> Event:
    """Build an event; ``recorded`` defaults to the business time."""
    occurred = at(when) if isinstance(when, str) else when
    rec = at(recorded) if isinstance(recorded, str) else (recorded or occurred)
    return new_event(event_type, ticket_id, occurred_at=occurred, recorded_at=rec, actor="test",
                     payload=payload, event_id=uuid.uuid4())


def filed(when: datetime | str, *, kind: str = "assistance", channel: str = "portal", product: str = "solaere",
          member: str = "m-001", ticket_id: str = "T-1", **extra: Any) -> Event:
    return ev(EventType.TICKET_FILED, when, ticket_id, kind=kind, channel=channel, product=product,
              member=member, subject="Demande", **extra)


def projected(url: str, events: list[Event], policy: Policy | None = None) -> Engine:
    """The database at ``url``, its schema created and ``events`` projected by the projector's own
    code as the worker writes them: keyed by ticket, offsets 0… of the events topic's partition 0."""
    engine = create_engine(url)
    create_schema(engine)
    with engine.begin() as conn:
        Projection(policy or load_policy()).apply_batch(
            conn, [Incoming(EVENTS, 0, i, encode_event(e), e.ticket_id.encode()) for i, e in enumerate(events)])
    return engine
