"""Shared test setup: offline Hugging Face, loopback Ray, one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def root() -> Path:
    return ROOT


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--extended", action="store_true", help="also run the tests marked extended (~30 min more)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``extended`` (long end-to-end runs: a killed and resumed sweep, a two-node cluster, S3 storage,
    ...) are skipped, and say so, unless ``--extended``: they keep the default run (CI) under 20 minutes."""
    if config.getoption("--extended"):
        return
    skip = pytest.mark.skip(reason="extended: a long end-to-end run, pytest --extended runs it")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)
