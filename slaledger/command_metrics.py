"""Each worker's command metrics, on its own ``/metrics``: how long an HTTP command waits for
its outcome, and which outcome it gets, by command type.

The SLA metrics come from SQL in one process (``projections.metrics``); these are
process-local on purpose: they measure this worker's answers as its callers see them, and a
restart resetting them is what ``rate()`` expects of a counter. Never a ticket id as a label.

``MeasuredCommands`` wraps the commands port (``slaledger.web.ports.CommandBus``) in the
composition root, so the HTTP layer is unchanged and measures nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.outcomes import RESULTS, CommandUnavailable, NoOutcome, Outcome
from sla.ticket import Command, CommandType

from .web.ports import CommandBus

# Besides the domain's results: nothing sent (broker down: 503), no outcome in time (504).
UNAVAILABLE, TIMEOUT, ERROR = "unavailable", "timeout", "error"
OUTCOMES = (*sorted(RESULTS), UNAVAILABLE, TIMEOUT)

COMMAND_SECONDS = Histogram(
    "slaledger_command_duration_seconds", "Time from sending a command to its outcome, as the HTTP handler waits",
    ["command"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
COMMANDS = Counter("slaledger_commands", "Commands sent by this worker's HTTP API, by type and outcome",
                   ["command", "outcome"])
# Every type and outcome from 0: increase() cannot see a series' first step from nothing to 1.
for _type in CommandType:
    COMMAND_SECONDS.labels(str(_type))
    for _outcome in OUTCOMES:
        COMMANDS.labels(str(_type), _outcome)


class FenceCount(Protocol):
    @property
    def fenced_writes(self) -> int: ...


class FencedWrites(Collector):
    """``slaledger_fenced_writes_total``: this worker's transactions the brokers refused because
    another worker claimed their partition (``streams.fence``: a zombie's writes). Read from the
    fences at scrape time; more than 0 means this worker was cut off or paused past its session."""

    def __init__(self) -> None:
        self.fences: list[FenceCount] = []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("slaledger_fenced_writes",
                                     "Transactions of this worker refused by the brokers: its partition was claimed "
                                     "by another worker (a zombie's writes)")
        family.add_metric([], sum(fence.fenced_writes for fence in self.fences))
        yield family


FENCED_WRITES = FencedWrites()
REGISTRY.register(FENCED_WRITES)


@dataclass(frozen=True)
class MeasuredCommands:
    """The commands port, measured: the duration of every ``submit`` and its outcome."""

    bus: CommandBus

    @property
    def accepting(self) -> bool:
        return self.bus.accepting

    async def submit(self, command: Command) -> Outcome:
        started, outcome = time.perf_counter(), ERROR
        try:
            result = await self.bus.submit(command)
            outcome = result.result
            return result
        except CommandUnavailable:
            outcome = UNAVAILABLE
            raise
        except NoOutcome:
            outcome = TIMEOUT
            raise
        finally:
            kind = str(command.type)
            COMMAND_SECONDS.labels(kind).observe(time.perf_counter() - started)
            COMMANDS.labels(kind, outcome).inc()
