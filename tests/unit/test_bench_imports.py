"""Every benchmark still imports: a module that moved (the service layer, the audit split) must
not leave a bench that fails only when somebody runs it — mypy and import-linter read the
packages, not ``bench/``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_bench_module_imports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name)
