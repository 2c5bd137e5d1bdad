"""How the training loop talks to the outside: reports out, commands in.

The loop calls these hooks and never prints or polls a UI itself. The CLI prints
through them, the WebUI maps them onto `shared.state` (progress bar, interrupt,
skip) and the tab's live chart. A hook that raises is logged and ignored: a
broken progress display must never kill a run.

A pause is handed to a `PauseGate`, which the host provides: the loop stops at an
optimizer-step boundary, saves its resumable state and calls `gate.hold(point)`.
The default gate waits in place (headless: nothing else needs the device); the
WebUI's gate (lib_lora.webui.pause_gate) gives the model and the queue back to
the WebUI for the pause and borrows them again on resume.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


@dataclass
class PausePoint:
    """Where a paused run stands: the step done, the epoch it is in, the state file saved there
    (`train --resume` continues from it), and whether its hooks still ask to pause."""
    step: int
    epoch: int
    state_file: Path | None
    still_paused: Callable[[], bool]
    stop_requested: Callable[[], bool]
    save_requested: Callable[[], bool] = lambda: False
    save_now: Callable[[], Path | None] = lambda: None      # writes the weights of this step as a LoRA file


class PauseGate:
    """Where a paused run waits. This default waits in place, holding the model: headless, nothing
    else needs the device. A gate with `releases_model` gets the model back from the loop (network
    detached, attention and checkpointing undone, parts on their devices) before `hold`, and must
    return it borrowed again (same model object, same weights) when `hold` returns True."""

    releases_model = False

    def __init__(self, poll_s: float = 0.2):
        self.poll_s = poll_s
        self._wake = threading.Event()

    def wake(self) -> None:
        """Re-check the pause now (called on resume or cancel), instead of at the next poll."""
        self._wake.set()

    def hold(self, point: PausePoint) -> bool:
        """Block while the run is paused (saving a LoRA file when asked); True to go on training,
        False to end the run here."""
        while point.still_paused() and not point.stop_requested():
            self.serve_save(point)
            self._wake.wait(self.poll_s)
            self._wake.clear()
        return not point.stop_requested()

    @staticmethod
    def serve_save(point: PausePoint) -> Path | None:
        """A "Save now" pressed during the pause writes the paused weights at once."""
        return point.save_now() if point.save_requested() else None
