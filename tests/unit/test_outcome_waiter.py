"""A fenced partition turns its waiting callers away (#30 item 3): each gets
``OwnerChanged`` (HTTP 503, retry with the key: it may be applied), the callers of other partitions wait on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from service.outcomes import OwnerChanged
from streams.outcomes import OutcomeWaiter


def test_abandon_answers_the_callers_of_the_fenced_partition_only() -> None:
    async def scenario() -> None:
        waiter = OutcomeWaiter(SimpleNamespace(bootstrap="", embedded=False, partitions=4))  # type: ignore[arg-type]
        fenced = [waiter.expect("c-1", 1), waiter.expect("c-1", 1)]  # a retry while the first waits
        other = waiter.expect("c-2", 2)
        unknown = waiter.expect("c-3")  # sent without its partition: never turned away
        assert waiter.abandon(1, "partition 1 fenced") == 2
        for future in fenced:
            with pytest.raises(OwnerChanged, match="partition 1 fenced"):
                await future
        assert not other.done() and not unknown.done()
        waiter.forget("c-2", other)
        assert waiter.abandon(2, "again") == 0  # a forgotten caller is not answered twice

    asyncio.run(scenario())
