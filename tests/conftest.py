# Shared test plumbing: the parity fixtures that travel with the tests, and ../shared's real photos (never in the
# repository), whose tests skip with a reason when it is absent (a fresh clone).
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """`../shared` beside the checkout (CI and developer machines), or $GUIDE_SHARED."""
    return Path(os.environ.get("GUIDE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    data = shared_root() / "data"
    if not data.is_dir():
        pytest.skip(f"test photos not found at {data}: real people's photos stay out of the repository; "
                    "put ../shared beside the checkout or set GUIDE_SHARED to run")
    return data
