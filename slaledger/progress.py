"""A progress bar on stderr for long replays; nothing at all when stderr is not a terminal
(logs and pipes stay clean)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, unit: str = "événements", *, stream: TextIO | None = None,
                 width: int = 30, enabled: bool | None = None) -> None:
        self.total, self.unit, self.width = max(total, 0), unit, width
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.count = 0

    def render(self, count: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{count / elapsed:,.0f}/s".replace(",", " ")
        if self.total:
            share = min(count / self.total, 1.0)
            filled = int(share * self.width)
            bar = "█" * filled + "░" * (self.width - filled)
            return f"\r{bar} {share:4.0%}  {count:,}/{self.total:,} {self.unit}  {rate}".replace(",", " ")
        return f"\r{count:,} {self.unit}  {rate}".replace(",", " ")

    def __call__(self, count: int) -> None:
        self.count = count
        if self.enabled:
            self.stream.write(self.render(count))
            self.stream.flush()

    def close(self, count: int | None = None) -> None:
        if self.enabled:
            self.stream.write(self.render(self.count if count is None else count) + "\n")
            self.stream.flush()
