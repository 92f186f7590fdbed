"""The worker's command metrics (slaledger.command_metrics), driven through the real API: each
command's wait for its outcome lands in the latency histogram, and its outcome in the counter,
under its type."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Broker, Worker, api

pytestmark = pytest.mark.integration


def samples(worker: Worker) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = api("GET", f"{worker.url}/metrics")
    assert status == 200, body
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics[(name, frozenset(labels.items()))]


# The metrics do not depend on the broker: one is enough.
@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_commands_are_timed_and_counted_by_type_and_outcome(broker: Broker, workers: list[Worker],
                                                            tmp_path: Path) -> None:
    worker = Worker(broker, tmp_path)
    workers.append(worker.start())
    before = samples(worker)
    assert value(before, "slaledger_commands_total", command="acknowledge", outcome="conflict") == 0  # from 0

    status, body = api("POST", f"{worker.url}/api/tickets", {
        "kind": "incident", "channel": "portal", "member": "commune-de-blois", "product": "parapheur",
        "subject": "Parapheur inaccessible"})
    assert status == 201, body
    ticket = body["ticket"]["id"]
    assert api("POST", f"{worker.url}/api/tickets/{ticket}/acknowledge", {})[0] == 200
    assert api("POST", f"{worker.url}/api/tickets/{ticket}/acknowledge", {})[0] == 409
    assert api("POST", f"{worker.url}/api/tickets/SL-2345678923/resolve", {})[0] == 404

    after = samples(worker)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("slaledger_commands_total", command="file", outcome="created") == 1
    assert moved("slaledger_commands_total", command="acknowledge", outcome="accepted") == 1
    assert moved("slaledger_commands_total", command="acknowledge", outcome="conflict") == 1
    assert moved("slaledger_commands_total", command="resolve", outcome="not_found") == 1
    assert moved("slaledger_commands_total", command="close", outcome="accepted") == 0
    assert moved("slaledger_command_duration_seconds_count", command="file") == 1
    assert moved("slaledger_command_duration_seconds_count", command="acknowledge") == 2
    assert moved("slaledger_command_duration_seconds_count", command="resolve") == 1
    # The time a command waited for its outcome: more than nothing, less than the timeout.
    assert 0 < moved("slaledger_command_duration_seconds_sum", command="file") < 10
    assert moved("slaledger_command_duration_seconds_bucket", command="file", le="30.0") == 1
