"""Fixtures for the training tests (helpers in training_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training_fixtures import write_dataset


# One thread: on a shared 2-core machine two OpenMP threads spin against other processes and
# the tiny model's small ops run several times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model():
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1

    return DiffusersModel(build_tiny_sd1(seed=0), name="tiny")


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")

