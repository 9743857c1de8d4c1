"""Thread choice: one thread for small models, the free cores for large ones, the user's word
always first."""

from __future__ import annotations

import torch

from urbangeo.model import threads


def test_small_models_run_on_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(500_000) == 1
    assert threads.count_parameters(torch.nn.Linear(10, 5)) == 55
    assert threads.count_parameters(object()) == 0


def test_large_models_use_the_free_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (6.0, 0.0, 0.0))
    assert threads.choose_threads(150_000_000) == 3  # 8 cores, 6 busy, + this process's share
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (20.0, 0.0, 0.0))
    assert threads.choose_threads(150_000_000) == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.choose_threads(150_000_000) == 8


def test_the_users_choice_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(500_000) == 3
    assert threads.choose_threads(500_000, threads=2) == 2
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(torch.nn.Linear(2, 2)) == 3
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
