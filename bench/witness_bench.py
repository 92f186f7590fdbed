"""The witness round trip (#26): one checkpoint submitted by the projector's own code
(``WitnessClient.submit``: consistency proof read from the tree, HTTP POST add-checkpoint,
the cosignature verified) to a real ``slaledger witness serve`` process on loopback, the
archive growing by ``--batch`` events between two checkpoints. Prints the median and p95 in
milliseconds; no assertions.

    .venv/bin/python bench/witness_bench.py [--rounds 200] [--batch 50] [--database URL]

Default database: a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine

from projections import tree
from projections.checkpoint import VerifierKey
from projections.heads import VKEY_FILE, create_key_pair, read_key_file, sign_head
from projections.migrate import create_schema
from projections.witness import Witness
from projections.witnessing import WitnessClient
from slaledger.settings import load_policy

ORIGIN = "bench.example/slaledger"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine = create_engine(args.database or f"sqlite:///{folder / 'bench.sqlite'}")
        create_schema(engine)
        create_key_pair(folder / "log", ORIGIN)
        create_key_pair(folder / "witness")
        key = read_key_file(folder / "log" / "signing-key")
        vkey = Witness(":memory:", "bench.example/w", read_key_file(folder / "witness" / "signing-key"), []).vkey()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        witness = subprocess.Popen([sys.executable, "-m", "slaledger", "witness", "serve", "--key",
                                    str(folder / "witness" / "signing-key"), "--name", "bench.example/w",
                                    "--log-key", str(folder / "log" / VKEY_FILE), "--state",
                                    str(folder / "witness.sqlite"), "--port", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
                time.sleep(0.1)
            client = WitnessClient(f"http://127.0.0.1:{port}", VerifierKey.parse(vkey))
            times, leaf = [], 0
            for _ in range(args.rounds + 1):
                with engine.begin() as conn:
                    tree.append(conn, [f"event {leaf + i}".encode() for i in range(args.batch)])
                leaf += args.batch
                head = sign_head(engine, key, load_policy(), origin=ORIGIN)
                start = time.perf_counter()
                client.submit(engine, head)
                times.append(time.perf_counter() - start)
                client.cosigned_size = head.tree_size
            times = sorted(times[1:])  # the first one (old 0) is not a round trip with a proof
        finally:
            witness.terminate()
            witness.wait(timeout=10)
    ms = [t * 1000 for t in times]
    print(f"witness round trip ({args.rounds} checkpoints, +{args.batch} events each, tree up to {leaf} leaves, "
          f"{engine.dialect.name}): median {statistics.median(ms):.2f} ms, p95 {ms[int(0.95 * len(ms)) - 1]:.2f} ms, "
          f"max {ms[-1]:.2f} ms")


if __name__ == "__main__":
    main()
