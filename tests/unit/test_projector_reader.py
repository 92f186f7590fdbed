"""The projector's reader process outlives nothing but its projector: it stays while the
projector lives, even when the projector is pid 1 (a container's entry point, as in the
compose file), and it does not stay after it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

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
