"""The load and fault suite, bounded: clients work tickets while a worker and then the
projector are SIGKILLed and restarted (on Tansu and on Apache Kafka), or, on a three-node
Apache Kafka cluster, while the broker leading the commands and events partitions is
SIGKILLed twice and the whole cluster restarted once; nothing accepted is lost, nothing
applied twice, and every request cut by a fault is retried with its idempotency key and
answered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load_fault.py"


LEADER_KILLED = "SIGKILL broker leading commands/events"


@pytest.mark.parametrize(("mode", "broker", "seconds", "faults"), [
    ("two-workers", "tansu", 16, ["SIGKILL worker", "SIGKILL projector"]),
    ("two-workers", "kafka", 16, ["SIGKILL worker", "SIGKILL projector"]),
    ("dev", "tansu", 16, ["SIGKILL dev process", "SIGKILL dev process"]),  # `dev --broker`: the log survives
    ("dev", "kafka", 16, ["SIGKILL dev process", "SIGKILL dev process"]),
    # three Apache Kafka nodes: the leader killed twice, then the whole cluster stopped and restarted
    ("kafka-ha", "kafka", 70, [LEADER_KILLED, LEADER_KILLED, "stop whole cluster"]),
])
def test_nothing_accepted_is_lost_or_applied_twice_across_kills(tmp_path: Path, mode: str, broker: str,
                                                                 seconds: int, faults: list[str]) -> None:
    figures = tmp_path / "figures.json"
    # The driver runs as a script, as an operator would, and stops by itself.
    result = subprocess.run(
        [sys.executable, str(BENCH), "--mode", mode, "--broker", broker, "--clients", "6", "--seconds", str(seconds),
         "--sla-seconds", "2", "--restart-delay", "1", "--broker-restart-delay", "3", "--json", str(figures),
         "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=seconds + 240)
    # the driver's own error first (a broker's log tail follows it when a broker did not start)
    assert figures.exists(), result.stdout[-2000:] + result.stderr[result.stderr.rfind("Traceback"):][:4000]
    r = json.loads(figures.read_text())
    summary = result.stdout[-3000:]
    assert [f["what"].split(" (")[0] for f in r["faults"]] == faults, summary
    assert all(f["at"] < r["elapsed"] for f in r["faults"]), summary  # every fault hit a working pipeline
    assert r["accepted"] > 30 and r["filed"] > 5, summary  # the run did real work
    assert r["lost"] == 0 and r["duplicates"] == 0, summary
    assert r["verify_archive_count"] == 0 and r["verify_kafka_count"] == 0, summary  # projection = replay
    assert r["state_differs"] == 0 and r["state_unreadable"] == 0, summary  # the workers' state = the log
    assert r["deadlines_breached"] > 0 and r["breach_events"] == r["deadlines_breached"], summary
    assert r["missed_sla_facts"] == 0, summary
    # every request was answered in the end: one cut by a kill is sent again with its
    # idempotency key and answered (as a replay if it had been applied)
    assert r["not_answered"] == 0 and r["applied_unanswered"] == 0, summary
    assert result.returncode == 0 and r["ok"], summary
