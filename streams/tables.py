"""Faust's table manager without its fixed wait at start.

Faust's ``TableManager.on_start`` sleeps one second before it finalizes the tables and starts
their recovery, so that tables declared late (by agents imported after the app starts) are
still registered. The worker declares both its tables in ``Pipeline.__init__``, before the
app starts, so that second was a plain second of every start and restart (#31: the time to
ready at a million open tickets). Selected with ``faust.App(..., TableManager=...)``.
"""

from __future__ import annotations

from faust.tables import TableManager


class DeclaredTables(TableManager):
    """Tables all declared before the app starts: their recovery starts at once."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
