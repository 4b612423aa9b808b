"""Shared test settings: quiet TensorFlow, a private cache, a fixed seed, and the ``large`` marker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# The demo dataset and default stores are cached per test process, never in the user's ~/.cache.
if "YOLOL_TF_CACHE" not in os.environ:
    os.environ["YOLOL_TF_CACHE"] = tempfile.mkdtemp(prefix="yolol-tf-test-cache-")
    atexit.register(shutil.rmtree, os.environ["YOLOL_TF_CACHE"], True)

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-large", action="store_true", help="also run tests marked large (slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
