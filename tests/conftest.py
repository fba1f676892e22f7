"""Shared fixtures: the real-data folder ``../shared/data`` and throw-away stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from settlement.store import Store

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FAIRSHARE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (needs ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in a real DuckDB file under ``tmp_path``."""
    s = Store.open(tmp_path / "test.duckdb")
    try:
        yield s
    finally:
        s.close()
