from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline real datasets beside the project (../shared/data)."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpacked dataset copies go to a per-session cache, never into ../shared."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("LOCALEARN_CACHE_DIR", str(cache))
