"""How the training loop talks to the outside: reports out, commands in.

The loop calls these hooks and never prints or polls a UI itself. The CLI prints
through them, the WebUI maps them onto `shared.state` (progress bar, interrupt,
skip) and the tab's live chart. A hook that raises is logged and ignored: a
broken progress display must never kill a run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Progress:
    step: int                 # optimizer steps done (1-based after the first)
    total_steps: int
    epoch: int                # current epoch, 1-based
    total_epochs: int
    loss: float               # smoothed training loss
    lr: float                 # UNet learning rate now
    it_per_s: float
    eta_s: float


@dataclass
class EpochResult:
    epoch: int
    path: str | None          # file written this epoch, or None when not a save epoch
    mean_loss: float
    validation_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TrainHooks:
    """No-op defaults; subclass and override what you need."""

    def on_plan(self, plan: Any) -> None: ...
    def on_status(self, text: str) -> None: ...
    def on_progress(self, progress: Progress) -> None: ...
    def on_epoch_end(self, result: EpochResult) -> None: ...
    def on_sample(self, epoch: int, images: list, prompts: list[str]) -> None: ...
    def should_stop(self) -> bool: return False
    def should_pause(self) -> bool: return False
    def save_requested(self) -> bool: return False


class HookCaller:
    """Calls several TrainHooks, swallowing (and logging) their exceptions."""

    def __init__(self, hooks: list[TrainHooks]):
        self.hooks = hooks

    def _each(self, name: str, *args: Any) -> list[Any]:
        results = []
        for hook in self.hooks:
            try:
                results.append(getattr(hook, name)(*args))
            except Exception:  # a display problem must not end training
                log.exception("Train hook %s.%s failed", type(hook).__name__, name)
        return results

    def on_plan(self, plan: Any) -> None: self._each("on_plan", plan)
    def on_status(self, text: str) -> None: self._each("on_status", text)
    def on_progress(self, p: Progress) -> None: self._each("on_progress", p)
    def on_epoch_end(self, r: EpochResult) -> None: self._each("on_epoch_end", r)
    def on_sample(self, epoch: int, images: list, prompts: list[str]) -> None:
        self._each("on_sample", epoch, images, prompts)
    def should_stop(self) -> bool: return any(self._each("should_stop"))
    def should_pause(self) -> bool: return any(self._each("should_pause"))
    def save_requested(self) -> bool: return any(self._each("save_requested"))
