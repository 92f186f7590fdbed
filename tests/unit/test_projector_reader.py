"""The projector's reader process outlives nothing but its projector: it stays while the
projector lives, even when the projector is pid 1 (a container's entry point, as in the
compose file), and it does not stay after it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from projections import projector
from projections.projection import Incoming

# The projector forks its reader the way ``consume`` does; the reader says whether it is alive.
SCRIPT = textwrap.dedent("""
    import multiprocessing, os
    from projections.projector import _die_with_parent

    def reader(parent, sender):
        _die_with_parent(parent)
        sender.send("alive")

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=reader, args=(os.getpid(), sender))
    child.start()
    child.join(30)
    print(os.getpid(), receiver.recv() if receiver.poll(1) else f"exited {child.exitcode}")
""")


def test_the_reader_stays_with_a_living_projector() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split()[1] == "alive", out


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare (root)")
def test_the_reader_stays_with_a_projector_that_is_pid_1() -> None:
    """In a new pid namespace the projector is pid 1, as a container's entry point is: its
    reader's parent is 1 and must not be taken for a dead parent."""
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", SCRIPT],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip("no permission to create a pid namespace")
    assert out.stdout.split() == ["1", "alive"], out


def test_a_reader_that_hands_over_nothing_while_records_wait_is_started_anew(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """After a whole cluster's restart kafka-python's reader was seen to get nothing more
    while the log grew: the projector starts a new reader from where the last one was,
    once records are said to wait (and not while none do)."""
    starts = tmp_path / "starts"

    def stuck_read(bootstrap: str, start: dict[tuple[str, int], int], **_: object) -> Iterator[list[Incoming]]:
        with starts.open("a") as out:  # the reader runs in a forked child: it says where it starts
            out.write(json.dumps(sorted((f"{t}:{p}", o) for (t, p), o in start.items())) + "\n")
        if len(starts.read_text().splitlines()) == 1:
            yield [Incoming("events", 0, 5, b"{}")]
        while True:
            time.sleep(0.05)
            yield []

    monkeypatch.setattr(projector, "read", stuck_read)
    monkeypatch.setattr(projector, "QUIET_LOOK", 0.5)
    waiting = {"now": False}
    batches = projector.consume("unused:9092", {("events", 0): 0}, follow=True, in_child=True,
                                waiting=lambda: waiting["now"])
    got = [next(batches) for _ in range(2)]
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # nothing waits: the same reader goes on
        next(batches)
    assert len(starts.read_text().splitlines()) == 1
    waiting["now"] = True
    deadline = time.monotonic() + 10
    while len(starts.read_text().splitlines()) < 2 and time.monotonic() < deadline:
        next(batches)
    batches.close()
    assert [r.offset for batch in got for r in batch] == [5]
    assert [json.loads(line) for line in starts.read_text().splitlines()] == [[["events:0", 0]], [["events:0", 6]]]


def test_time_the_projector_spends_writing_is_not_taken_for_a_quiet_reader(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The projector writes a batch while the reader is idle (its loop waits for the write
    between two empty batches): however long that write, the reader was not quiet."""
    starts = tmp_path / "starts"

    def idle_read(bootstrap: str, start: dict[tuple[str, int], int], **_: object) -> Iterator[list[Incoming]]:
        with starts.open("a") as out:
            out.write("started\n")
        while True:
            time.sleep(0.05)
            yield []

    monkeypatch.setattr(projector, "read", idle_read)
    monkeypatch.setattr(projector, "QUIET_LOOK", 0.5)
    batches = projector.consume("unused:9092", {("events", 0): 0}, follow=True, in_child=True,
                                waiting=lambda: True)  # records always said to wait
    for _ in range(6):  # each batch held past QUIET_LOOK, as a long write holds the loop
        next(batches)
        time.sleep(0.6)
    batches.close()
    assert starts.read_text().splitlines() == ["started"]
