"""Access: bearer tokens, roles, referent scoping — against a worker, PostgreSQL and the broker."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from projections.migrate import create_schema
from projections.projector import run_projector
from sla.events import decode_event
from slaledger.cli import main
from slaledger.settings import load_policy
from streams.kafka_tools import read_topic
from streams.topics import EVENTS
from tests.integration.conftest import Broker, Worker, api

pytestmark = pytest.mark.integration


def token(capsys: pytest.CaptureFixture[str], database: str, *args: str) -> str:
    assert main(["token", "create", "--database", database, *args]) == 0
    match = re.search(r"secret \(shown once\): (\S+)", capsys.readouterr().out)
    assert match
    return match.group(1)


def filing(member: str) -> dict[str, str]:
    return {"kind": "assistance", "channel": "portal", "member": member, "product": "ent", "subject": "Accès"}


def test_roles_and_referent_scoping(broker: Broker, database: str, workers: list[Worker], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_engine(database)
    create_schema(engine)
    agent = token(capsys, database, "--role", "agent", "--label", "alice")
    blois = token(capsys, database, "--role", "referent", "--member", "commune-de-blois")
    tours = token(capsys, database, "--role", "referent", "--member", "commune-de-tours")
    auditor = token(capsys, database, "--role", "auditor", "--label", "cabinet")
    assert main(["token", "create", "--database", database, "--role", "referent"]) == 2  # needs --member

    worker = Worker(broker, tmp_path, extra_env={"SLALEDGER_AUTH": "on", "SLALEDGER_DATABASE_URL": database})
    workers.append(worker.start())
    url = f"{worker.url}/api/tickets"

    # 401 with a JSON body: missing, malformed, unknown
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
        status, body = api("GET", url, headers=headers)
        assert status == 401 and body["error"], (headers, body)
    assert api("GET", f"{worker.url}/healthz")[0] == 200  # probes stay open

    # a referent files for their own member only, and the event records who did it
    status, body = api("POST", url, filing("commune-de-blois"), token=blois)
    assert status == 201, body
    mine = body["ticket"]["id"]
    status, body = api("POST", url, filing("commune-de-tours"), token=blois)
    assert status == 403 and body["field"] == "member"
    status, body = api("POST", url, filing("commune-de-tours"), token=tours)
    theirs = body["ticket"]["id"]

    # another member's ticket does not exist for a referent, whatever they try
    assert api("GET", f"{url}/{theirs}", token=blois)[0] == 404
    status, body = api("POST", f"{url}/{theirs}/customer-response", {"elements_complete": True}, token=blois)
    assert status == 404 and "n'existe pas" in body["error"]
    assert api("GET", f"{url}/{mine}", token=blois)[0] == 200
    assert api("POST", f"{url}/{mine}/customer-response", {"elements_complete": True}, token=blois)[0] == 200

    # wrong role: 403 with a JSON body
    status, body = api("POST", f"{url}/{mine}/acknowledge", {}, token=blois)
    assert status == 403 and body["error"]
    status, body = api("POST", f"{url}/{mine}/acknowledge", {}, token=auditor)
    assert status == 403 and "aucune commande" in body["error"]
    assert api("GET", f"{worker.url}/metrics", token=blois)[0] == 403
    assert api("GET", f"{worker.url}/metrics", token=auditor)[0] == 200
    assert api("GET", f"{url}/{theirs}", token=auditor)[0] == 200
    status, body = api("POST", f"{url}/{theirs}/acknowledge", {}, token=agent)
    assert status == 200

    # lists are filtered for a referent (read model from SQL)
    run_projector(engine, broker.bootstrap, load_policy(), follow=False)
    listed = {t["id"] for t in api("GET", url, token=blois)[1]["items"]}
    assert listed == {mine}
    assert api("GET", f"{url}?member=commune-de-tours", token=blois)[1]["total"] == 0
    assert {mine, theirs} <= {t["id"] for t in api("GET", url, token=agent)[1]["items"]}

    actors = {decode_event(r.value).actor for r in read_topic(broker.bootstrap, EVENTS)}
    assert {"referent:commune-de-blois", "referent:commune-de-tours", "agent:alice"} <= actors

    # revocation: 401 within the cache lifetime (5 s)
    assert main(["token", "revoke", "--database", database, blois]) == 0
    time.sleep(5.5)
    assert api("GET", url, token=blois)[0] == 401
    assert main(["token", "revoke", "--database", database, blois]) == 2  # already revoked


def test_worker_refuses_to_start_without_token_database(broker: Broker, tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path, extra_env={"SLALEDGER_AUTH": "on"})
    with pytest.raises(RuntimeError, match="SLALEDGER_DATABASE_URL"):
        worker.start()


def test_who_may_date_a_fact(broker: Broker, database: str, workers: list[Worker], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """The recording time is the server's; a referent's facts carry their reception time (a
    backdated filing would be born breached: 422); an agent may date an acknowledgement
    within the policy's limit, and the fact is flagged « antidaté » with who dated it."""
    from datetime import UTC, datetime, timedelta

    from projections.audit.dispute_file import dispute_file
    from projections.audit.replay import Filters, replay
    from projections.audit.sources import archive_records

    engine = create_engine(database)
    create_schema(engine)
    agent = token(capsys, database, "--role", "agent", "--label", "alice")
    blois = token(capsys, database, "--role", "referent", "--member", "commune-de-blois")
    worker = Worker(broker, tmp_path, extra_env={"SLALEDGER_AUTH": "on", "SLALEDGER_DATABASE_URL": database})
    workers.append(worker.start())
    url = f"{worker.url}/api/tickets"
    week_ago = (datetime.now(UTC) - timedelta(days=7)).isoformat()

    status, body = api("POST", url, {**filing("commune-de-blois"), "received_at": week_ago}, token=blois)
    assert status == 422 and body["field"] == "received_at" and "référent" in body["error"], body
    status, body = api("POST", url, filing("commune-de-blois"), token=blois)
    assert status == 201
    tid = body["ticket"]["id"]
    status, body = api("POST", f"{url}/{tid}/customer-response",
                       {"elements_complete": True, "occurred_at": week_ago}, token=blois)
    assert status == 422 and body["field"] == "occurred_at"

    # a phone call taken two hours ago and acknowledged an hour ago, typed in now by an agent:
    # accepted, and both facts flagged with who dated them
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    status, body = api("POST", url, {**filing("commune-de-blois"), "channel": "phone", "received_at": two_hours_ago},
                       token=agent)
    assert status == 201, body
    tid = body["ticket"]["id"]
    status, body = api("POST", f"{url}/{tid}/acknowledge", {"occurred_at": an_hour_ago}, token=agent)
    assert status == 200, body
    flags = body["ticket"]["antedated"]
    assert [(f["type"], f["by"]) for f in flags] == [("ticket_filed", "agent:alice"), ("acknowledged", "agent:alice")]
    assert flags[1]["seconds_before_recording"] > 3500
    assert api("GET", f"{url}/{tid}", token=agent)[1]["antedated"] == flags
    # beyond the policy's limit (30 days), even an agent cannot date a fact
    status, body = api("POST", url, {**filing("commune-de-blois"),
                                     "received_at": (datetime.now(UTC) - timedelta(days=31)).isoformat()}, token=agent)
    assert status == 422 and "30 jours" in body["error"], body

    run_projector(engine, broker.bootstrap, load_policy(), follow=False)
    doc = dispute_file(replay(archive_records(engine), load_policy(), Filters(ticket=tid), source="archive",
                              engine=engine))
    (ticket,) = doc["tickets"]
    assert [(e["type"], e["actor"]) for e in ticket["timeline"] if e["antedated"]] == [
        ("ticket_filed", "agent:alice"), ("acknowledged", "agent:alice")]
