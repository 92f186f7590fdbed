"""Fuzz the HTTP API from its own OpenAPI document (schemathesis): no 5xx, and no event
written by a rejected request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sla.events import decode_event
from slaledger.web.api import openapi_document
from streams.embedded import EmbeddedBroker
from streams.kafka_tools import read_topic
from streams.topics import EVENTS, create_topics
from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document())
ACCEPTED: list[str] = []


@pytest.fixture(scope="module")
def fuzz_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    workdir = tmp_path_factory.mktemp("fuzz")
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        create_topics(broker.bootstrap, 4)
        worker = Worker(broker, Path(workdir)).start()
        try:
            yield worker
            # every command event in the log answers an accepted (2xx) request, and only those
            commands = [e for e in map(lambda r: decode_event(r.value), read_topic(broker.bootstrap, EVENTS))
                        if not e.type.value.startswith("sla_")]
            assert len({e.event_id for e in commands}) == len(ACCEPTED)
        finally:
            import signal

            worker.stop(signal.SIGKILL)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case, fuzz_worker: Worker) -> None:
    response = case.call(base_url=fuzz_worker.url, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
    if case.method == "POST" and response.status_code in (200, 201):
        ACCEPTED.append(case.formatted_path)
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), (response.status_code, response.text[:300])
        assert json.loads(response.text)["error"], response.text
