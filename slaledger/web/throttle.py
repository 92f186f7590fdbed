"""Failed sign-ins and failed bearer tokens, limited per client address.

After ``MAX_FAILURES`` refused tokens from one address within ``WINDOW`` seconds, that
address gets 429 with ``Retry-After`` (even for a right token) until the oldest failure is
older than the window: guessing is slowed to a crawl, and a right token found by luck does
not work meanwhile. Each worker counts its own (in memory): behind a proxy that spreads
requests over N workers, an address gets N times the budget, which keeps guessing a 256-bit
token hopeless.

The client address is the TCP peer, unless the peer is a trusted proxy
(``SLALEDGER_TRUSTED_PROXIES``, addresses or networks): then it is the rightmost address of
``X-Forwarded-For`` that is not a trusted proxy (Caddy appends the address it received the
request from). Without the setting behind a proxy, every client shares the proxy's address.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_FAILURES = 10
WINDOW = 300.0
MAX_ADDRESSES = 10_000  # a flood of addresses cannot grow the table without bound


def trusted_networks(setting: str) -> tuple[Network, ...]:
    """``SLALEDGER_TRUSTED_PROXIES``: comma-separated addresses or networks (ValueError names
    a bad one)."""
    networks = []
    for item in filter(None, (part.strip() for part in setting.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"SLALEDGER_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return tuple(networks)


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: Any, trusted: tuple[Network, ...]) -> str:
    """Who sent ``request``, as far as this server can tell (see the module's docstring)."""
    address = request.remote or "-"
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    while hops and _trusted(address, trusted):
        address = hops.pop()
    return address[:64]


class FailureLimit:
    """Refused tokens per address over a sliding window (one event loop uses it: no lock)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window, self.clock = max_failures, window, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        while times and times[0] <= now - self.window:
            times.popleft()
        if times is not None and not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str) -> None:
        now = self.clock()
        if address not in self._failures and len(self._failures) >= MAX_ADDRESSES:
            for known in list(self._failures):
                self._recent(known, now)
            if len(self._failures) >= MAX_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
        times = self._failures.setdefault(address, deque(maxlen=self.max_failures))
        times.append(now)
