"""Shared test settings: deterministic, single-threaded torch (fast and reproducible on 2 cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    torch.set_num_threads(1)
