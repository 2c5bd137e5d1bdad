"""The training loop and its parts. `train(cfg, model, hooks)` is the one entry point."""
from .hooks import EpochResult, Progress, TrainHooks


def train(*args, **kwargs):
    from .trainer import train as _train  # heavy imports only when training

    return _train(*args, **kwargs)


def plan_run(*args, **kwargs):
    from .trainer import plan_run as _plan

    return _plan(*args, **kwargs)


__all__ = ["train", "plan_run", "TrainHooks", "Progress", "EpochResult"]
