"""Tiny models shared by the network tests (built once per session: they take a second or two)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def sd1_unet():
    return tiny_models.sd1_unet()


@pytest.fixture(scope="session")
def sdxl_unet():
    return tiny_models.sdxl_unet()


@pytest.fixture(scope="session")
def clip_te():
    return tiny_models.clip_text_model()
