"""The training loop and its parts. `train(cfg, model, hooks)` is the one entry point; `plan_run(cfg)`
says what a run would do without a model.

`train` and `plan_run` are the real functions of trainer.py (their signatures intact), loaded on first
use: the hosts import this package for its hooks at start-up, and the trainer brings torch and the
networks with it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hooks import EpochResult, Progress, TrainHooks

if TYPE_CHECKING:
    from .trainer import plan_run, train

__all__ = ["train", "plan_run", "TrainHooks", "Progress", "EpochResult"]


def __getattr__(name: str) -> Any:
    if name in ("train", "plan_run"):
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
