"""Train hooks for the command line: a progress line every few steps, epoch files as they land.

Ctrl-C sets the stop flag instead of killing the process, so the run ends
cleanly at the next optimizer step and saves its training state there (with
output.save_state on); `train --resume DIR` continues from that very step.
"""
from __future__ import annotations

import signal
import time

from .hooks import EpochResult, Progress, TrainHooks


class PrintHooks(TrainHooks):
    def __init__(self, log=print, every_s: float = 2.0):
        self.log, self.every_s = log, every_s
        self._last = 0.0
        self.stop_requested = False

    def install_sigint(self) -> None:
        def handler(signum, frame):
            if self.stop_requested:  # second Ctrl-C: the user means it
                raise KeyboardInterrupt
            self.stop_requested = True
            self.log("Stopping after this step (Ctrl-C again to abort at once)")
        signal.signal(signal.SIGINT, handler)

    def on_status(self, text: str) -> None:
        self.log(text)

    def on_progress(self, p: Progress) -> None:
        now = time.time()
        if now - self._last < self.every_s and p.step != p.total_steps:
            return
        self._last = now
        eta = f"{p.eta_s:.0f}s" if p.eta_s != float("inf") else "?"
        self.log(f"epoch {p.epoch}/{p.total_epochs} step {p.step}/{p.total_steps} loss {p.loss:.4f} "
                 f"lr {p.lr:.2e} {p.it_per_s:.2f} it/s ETA {eta}")

    def on_epoch_end(self, r: EpochResult) -> None:
        val = f", validation loss {r.validation_loss:.4f}" if r.validation_loss is not None else ""
        saved = f", saved {r.path}" if r.path else ""
        self.log(f"epoch {r.epoch} done: mean loss {r.mean_loss:.4f}{val}{saved}")

    def should_stop(self) -> bool:
        return self.stop_requested
