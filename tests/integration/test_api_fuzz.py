"""Fuzz the HTTP API from its own OpenAPI document (schemathesis) on a worker with
authentication on: with a valid token every request reaches its handler, and gets no 5xx;
no event is written by a rejected request; without a token every route but the probes is
401 (and no 5xx either)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine

from projections.migrate import create_schema
from projections.tokens import create_token
from sla.events import decode_event
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.web.openapi import openapi_document
from streams.kafka_tools import read_topic
from streams.topics import EVENTS, create_topics
from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document())
ACCEPTED: list[str] = []
CLIENTS: list[str] = []
PROBES = {"/healthz", "/readyz"}


@pytest.fixture(scope="module")
def fuzz_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, str]]:
    """A worker with authentication on, and an agent's token (it may do everything the API does)."""
    workdir = tmp_path_factory.mktemp("fuzz")
    database = f"sqlite:///{workdir / 'slaledger.db'}"
    engine = create_engine(database)
    create_schema(engine)
    _, agent = create_token(engine, "agent", label="fuzz")
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        create_topics(broker.bootstrap, 4)
        # The fuzzer makes up tokens in its negative cases; each case with the right token comes
        # from a client address of its own (through a "proxy"), so none is held back by them.
        worker = Worker(broker, Path(workdir), extra_env={"SLALEDGER_AUTH": "on", "SLALEDGER_DATABASE_URL": database,
                                                          "SLALEDGER_TRUSTED_PROXIES": "127.0.0.1"}).start()
        try:
            yield worker, agent
            # every command event in the log answers an accepted (2xx) request, and only those
            commands = [e for e in map(lambda r: decode_event(r.value), read_topic(broker.bootstrap, EVENTS))
                        if not e.type.value.startswith("sla_")]
            assert len({e.event_id for e in commands}) == len(ACCEPTED)
        finally:
            import signal

            worker.stop(signal.SIGKILL)


def refused(case: schemathesis.Case, status: int) -> bool:
    """What a request without a token gets: 401 (429 once the fuzzer's made-up tokens were
    refused too often), or 405 for a method the route does not have
    (schemathesis tries others); the probes answer anyone."""
    if case.path in PROBES:
        return True
    return status in (401, 429) or (status == 405 and case.method.upper() != case.operation.method.upper())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case, fuzz_worker: tuple[Worker, str]) -> None:
    worker, agent = fuzz_worker
    client = f"10.{len(CLIENTS) // 65536 % 256}.{len(CLIENTS) // 256 % 256}.{len(CLIENTS) % 256}"
    CLIENTS.append(client)
    response = case.call(base_url=worker.url, timeout=30,
                         headers={"Authorization": f"Bearer {agent}", "X-Forwarded-For": client})
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
    if response.request.headers.get("Authorization") == f"Bearer {agent}":
        assert response.status_code not in (401, 429), response.text[:300]  # the handler was reached
    else:  # a negative case: schemathesis left the required Authorization header out
        assert refused(case, response.status_code), (case.method, case.formatted_path, response.text[:300])
    if case.method == "POST" and response.status_code in (200, 201):
        ACCEPTED.append(case.formatted_path)
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), (response.status_code, response.text[:300])
        assert json.loads(response.text)["error"], response.text


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_token_no_answer(case: schemathesis.Case, fuzz_worker: tuple[Worker, str]) -> None:
    worker, _ = fuzz_worker
    response = case.call(base_url=worker.url, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
    assert refused(case, response.status_code), (case.method, case.formatted_path, response.status_code,
                                                 response.text[:300])
