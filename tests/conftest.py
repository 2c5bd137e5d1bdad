"""Shared fixtures. Tests never download anything: models are built in code, seeded."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def kernel():
    """lib_lora.kernels.cpu_attention with its kernel loaded; skipped only where no C compiler exists."""
    from lib_lora.kernels import build, cpu_attention

    ready, why = cpu_attention.available()
    if not ready:
        if build.find_compiler() is None:
            pytest.skip(f"no C compiler here: {why}")
        pytest.fail(f"a compiler exists but the kernel is unavailable: {why}")
    return cpu_attention
