"""Every benchmark still imports against the code it measures (a renamed function
must not leave a bench that only fails when someone runs it)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHES = sorted(p.stem for p in (Path(__file__).parents[2] / "bench").glob("*.py"))


@pytest.mark.parametrize("name", BENCHES)
def test_bench_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(getattr(module, "main", None)) or name in ("nab_score", "sim_site")
