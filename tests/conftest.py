# Shared test plumbing: where ../shared lives, and skips with a reason when it is absent (a fresh clone).
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """`../shared` beside the checkout (CI and developer machines), or $GUIDE_SHARED."""
    return Path(os.environ.get("GUIDE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not (root / "fixtures").is_dir():
        pytest.skip(f"parity fixtures not found at {root} (a fresh clone without ../shared); set GUIDE_SHARED to run")
    return root


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures"


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    if not (shared_dir / "data").is_dir():
        pytest.skip(f"test photos not found at {shared_dir / 'data'}")
    return shared_dir / "data"
