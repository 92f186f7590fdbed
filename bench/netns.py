"""Network namespaces on a bridge, for the partition suite (``load_fault.py --faults``).

Each process whose links a fault cuts (a broker, a worker, the projector) runs in a network
namespace of its own, with one address on a private bridge (``10.77.<n>.0/24``, ``<n>``
free on this machine); the host keeps ``.1`` on the bridge and reaches every member there.
A cut is a blackhole route inside the member's namespace (``ip route add blackhole ADDR``):
its packets to ADDR are dropped, its established connections hang as in a real partition,
nothing else changes; the heal deletes the route. Traffic only ever goes to loopback and
the addresses made here.

PostgreSQL listens on the host's loopback: ``PortForward`` gives it an address on the bridge
(a TCP relay in a thread), so a namespace reaches it at ``host_address`` and a blackhole
route to that address cuts a member from PostgreSQL alone.

Needs root and ``ip netns``; ``available()`` says why not. Names carry this process's id
(``sl<pid>…``): ``Sandbox`` first removes those of processes that no longer exist (a run
that crashed), ``close()`` removes its own, and ``remove`` those of a given run (the test's
``finally``, after a bench it had to kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

PREFIX = "sl"
SUBNET = "10.77"


def ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["netns", "exec", namespace, "ip"] if namespace else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def available() -> str | None:
    """None when network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "the partition suite needs root (network namespaces, a bridge)"
    if shutil.which("ip") is None:
        return "the partition suite needs iproute2 (`ip`)"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = ip("netns", "add", probe, check=False)
    ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    return None


@dataclass(frozen=True)
class Member:
    name: str  # what it is (node1, worker-a, projector)
    namespace: str
    address: str

    @property
    def prefix(self) -> list[str]:
        """Run a command inside this member's namespace."""
        return ["ip", "netns", "exec", self.namespace]


class Sandbox:
    """A bridge and its members' namespaces, removed by ``close()``."""

    def __init__(self) -> None:
        remove_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.subnet = f"{SUBNET}.{free_subnet_octet()}"
        self.host_address = f"{self.subnet}.1"
        self.members: dict[str, Member] = {}
        self.cuts: set[tuple[str, str]] = set()
        ip("link", "add", self.bridge, "type", "bridge")
        try:
            ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add(self, name: str) -> Member:
        """A namespace with one address on the bridge (and its own loopback up)."""
        index = len(self.members) + 2
        member = Member(name, f"{self.tag}{name}", f"{self.subnet}.{index}")
        veth = f"{self.tag}v{index}"
        self.members[name] = member
        ip("netns", "add", member.namespace)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", member.namespace)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("addr", "add", f"{member.address}/24", "dev", "eth0", namespace=member.namespace)
        ip("link", "set", "eth0", "up", namespace=member.namespace)
        ip("link", "set", "lo", "up", namespace=member.namespace)
        return member

    def cut(self, member: Member, address: str) -> None:
        """Drop every packet ``member`` sends to ``address`` (its connections hang)."""
        ip("route", "add", "blackhole", f"{address}/32", namespace=member.namespace)
        self.cuts.add((member.namespace, address))
        log.info("link cut", member=member.name, to=address)

    def heal(self, member: Member, address: str) -> None:
        ip("route", "del", "blackhole", f"{address}/32", namespace=member.namespace, check=False)
        self.cuts.discard((member.namespace, address))
        log.info("link healed", member=member.name, to=address)

    def close(self) -> None:
        for index, member in enumerate(self.members.values(), start=2):
            ip("netns", "del", member.namespace, check=False)
            ip("link", "del", f"{self.tag}v{index}", check=False)  # gone with it, unless a process lingers
        ip("link", "del", self.bridge, check=False)
        self.members.clear()


def free_subnet_octet() -> int:
    taken = {int(m) for m in re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", ip("-o", "addr").stdout)}
    return next(n for n in range(1, 255) if n not in taken)


def remove_stale() -> None:
    """Namespaces and bridges of an earlier run whose process is gone (a crash)."""
    remove(lambda pid: not os.path.exists(f"/proc/{pid}"))


def remove(owned: Callable[[int], bool]) -> None:
    """Our namespaces and links (``sl<pid>…``) whose ``pid`` is ``owned``."""
    def ours(name: str) -> bool:
        match = re.match(rf"{PREFIX}(\d+)", name)
        return bool(match) and owned(int(match.group(1)))

    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if ours(name):
            ip("netns", "del", name, check=False)
    for name in re.findall(r"^\d+: ([^:@\s]+)", ip("-o", "link", "show").stdout, re.M):
        if ours(name):
            ip("link", "del", name, check=False)


class PortForward:
    """A TCP relay from ``listen`` (an address on the bridge) to ``target`` on loopback, in a
    thread of its own: the bench's event loop may block (its checks are synchronous) while
    the workers and the projector keep their database connections."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="pg-forward", daemon=True)
        self.thread.start()
        ready.wait(10)
        if self.server is None:
            raise RuntimeError(f"cannot listen on {listen[0]}:{listen[1]}")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        with contextlib.suppress(OSError):
            self.server = self.loop.run_until_complete(asyncio.start_server(self._relay, *self.listen))
        ready.set()
        if self.server is not None:
            self.loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def close(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
