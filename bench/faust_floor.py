"""The ceiling Faust itself sets on this machine: a Faust agent that does nothing with the
records it is given, in batches of the ticket agent's size (``take_events``), on the same
topic (the commands) and with the same broker settings. (The ticket agent itself reads its
partitions directly, without this per-record path: ``streams.app``.) Run by ``pipeline_bench.py`` in the same run as the
worker, so the worker's rate can be read against it. Writes ``RATE CPU`` to DATADIR/figure
(Faust redirects standard output to its log).

    .venv/bin/python bench/faust_floor.py BOOTSTRAP TOTAL DATADIR [embedded|kafka]

The Tansu workarounds are applied as the worker applies them: in embedded mode only.

Faust hands every record to its agent through a per-record path (``wait_first`` on the
callback and the flow-control event, a queue, an ``Event``); that path, not the broker,
is what a no-op agent measures: it runs one core at 100 %.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import faust
from faust.worker import Worker

from streams.reader import BATCH_SIZE
from streams.tansu import patch_faust_fetch_wait, patch_faust_highwaters
from streams.topics import COMMANDS

BATCH_WITHIN = 0.02  # seconds: the latency a lone record pays for batching


def main() -> None:
    bootstrap, total, datadir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if (sys.argv[4] if len(sys.argv) > 4 else "embedded") == "embedded":
        patch_faust_highwaters(bootstrap)
        patch_faust_fetch_wait()
    app = faust.App("slaledger-bench-faust-floor", broker=f"kafka://{bootstrap}", datadir=datadir,
                    web_enabled=False, topic_partitions=4, topic_allow_declare=False,
                    broker_session_timeout=4, broker_heartbeat_interval=0.5, broker_rebalance_timeout=2,
                    broker_commit_interval=1, processing_guarantee="at_least_once")
    source = app.topic(COMMANDS, partitions=4, key_serializer="raw", value_serializer="raw")
    seen = {"records": 0, "t0": 0.0, "cpu0": 0.0}

    @app.agent(source, name="noop_agent")
    async def noop_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            if not seen["records"]:
                seen["t0"], seen["cpu0"] = time.perf_counter(), time.process_time()
            seen["records"] += len(batch)
            if seen["records"] >= total:
                elapsed = time.perf_counter() - seen["t0"]
                cpu = (time.process_time() - seen["cpu0"]) / elapsed
                Path(datadir, "figure").write_text(f"{seen['records'] / elapsed:.0f} {cpu:.2f}")
                os._exit(0)

    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
