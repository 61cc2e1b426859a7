"""Shared pytest setup: GPU tests skip cleanly without CUDA, network tests never run offline."""

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # The default run deselects slow/network/gpu (pyproject addopts). When someone selects them
    # explicitly (`pytest -m gpu`), they still skip with a reason instead of failing on this machine.
    no_cuda = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    offline = pytest.mark.skip(reason="needs internet; set MINIMOST_NETWORK_TESTS=1 to run")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "network" in item.keywords and os.environ.get("MINIMOST_NETWORK_TESTS") != "1":
            item.add_marker(offline)
