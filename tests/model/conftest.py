"""Fixtures shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.model.synthetic import make_run


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads oversubscribe it (5x
    slower); results are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A run of 24 regions with one street-view image each, made once per test module."""
    return make_run(tmp_path_factory.mktemp("run") / "run", n=24)
