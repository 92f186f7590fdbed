"""Refused tokens are limited per client address; behind a trusted proxy the client is the
address the proxy saw, and nobody else can choose it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from slaledger.web.throttle import FailureLimit, client_address, trusted_networks


def request(peer: str, forwarded: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(remote=peer, headers={"X-Forwarded-For": forwarded} if forwarded else {})


def test_ten_refusals_then_even_a_right_token_waits_for_the_window() -> None:
    now = [1000.0]
    limit = FailureLimit(max_failures=10, window=300, clock=lambda: now[0])
    for _ in range(9):
        limit.failed("203.0.113.7")
    assert limit.retry_after("203.0.113.7") is None
    limit.failed("203.0.113.7")
    assert limit.retry_after("203.0.113.7") == 300
    assert limit.retry_after("203.0.113.8") is None  # another address is not held back
    now[0] += 299.5
    assert limit.retry_after("203.0.113.7") == 1
    now[0] += 0.5
    assert limit.retry_after("203.0.113.7") is None  # the oldest refusal left the window


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy() -> None:
    proxies = trusted_networks("172.30.0.2, 10.0.0.0/8")
    # not a trusted peer: its X-Forwarded-For is whatever it wants, and ignored
    assert client_address(request("198.51.100.9", "1.2.3.4"), proxies) == "198.51.100.9"
    assert client_address(request("198.51.100.9", "1.2.3.4"), ()) == "198.51.100.9"
    # the proxy appends the address it received the request from: that one, not what the client sent
    assert client_address(request("172.30.0.2", "1.2.3.4, 198.51.100.9"), proxies) == "198.51.100.9"
    # a chain of trusted proxies is walked from the right
    assert client_address(request("172.30.0.2", "198.51.100.9, 10.1.2.3"), proxies) == "198.51.100.9"
    assert client_address(request("172.30.0.2"), proxies) == "172.30.0.2"


def test_a_bad_trusted_proxy_setting_is_named() -> None:
    with pytest.raises(ValueError, match="SLALEDGER_TRUSTED_PROXIES: 'proxy' is not"):
        trusted_networks("172.30.0.2,proxy")
    assert trusted_networks("") == ()
