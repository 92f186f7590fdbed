"""What both broker launchers share: a free loopback port, a child process that dies with us."""

from __future__ import annotations

import signal
import socket


def free_port() -> int:
    """A port nothing listens on now (the OS's pick on 127.0.0.1); tests and benches use it too."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """In a broker's child process: get SIGTERM when the process that started it dies,
    even by SIGKILL (Linux), so a killed dev mode or test leaves no orphaned broker."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
