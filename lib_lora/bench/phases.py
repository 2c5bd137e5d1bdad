"""Per-phase time and measured peak memory of one training run, taken from the trainer's own hooks.

Phases, in the order the trainer goes through them: model ready (weights built and
placed), network attach (plan, LoRA modules attached, optimizer built: ends at the
trainer's "Caching latents" status), caches (latents and text-encoder outputs, and
offloading after caching: ends when the UNet is first called), first step (ends with
the first optimizer step), steady steps (the following steps; the run is then stopped
between steps, so nothing is saved). Memory per phase: the tracker's peak of live
tensor bytes on the training device (CPU) and, on CUDA, torch.cuda.max_memory_allocated
(reset at every phase's start). Activations saved for backward are summed per step
(saved_tensors_hooks, each storage once, parameters excluded) for the lower bound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..training.hooks import TrainHooks
from ..training.mem_tracker import MemoryTracker, PhaseMemory

PHASES = ("model ready", "network attach", "caches", "first step", "steady steps")


@dataclass
class PhaseFigure:
    name: str
    seconds: float
    memory: PhaseMemory
    cuda_peak: int = 0          # torch.cuda.max_memory_allocated in the phase (0 off CUDA)


@dataclass
class RunFigures:
    phases: list[PhaseFigure] = field(default_factory=list)
    steps: int = 0
    saved_activation_bytes: int = 0      # largest per step
    cache_bytes: int = 0                 # live bytes the caches hold when the steps start (beyond base + LoRA)

    def phase(self, name: str) -> PhaseFigure | None:
        return next((p for p in self.phases if p.name == name), None)

    def step_seconds(self) -> float:
        steady = self.phase("steady steps")
        return steady.seconds / max(1, self.steps - 1) if steady and self.steps > 1 else float("nan")


class PhaseClock:
    """Closes phases on the tracker (and CUDA's peak counter) and times them."""

    def __init__(self, tracker: MemoryTracker, device: torch.device):
        self.tracker, self.device = tracker, device
        self.figures = RunFigures()
        self._started = time.perf_counter()
        self._reset_cuda()

    def _reset_cuda(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def mark(self, name: str) -> None:
        cuda = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            cuda = torch.cuda.max_memory_allocated(self.device)
        now = time.perf_counter()
        self.figures.phases.append(PhaseFigure(name, now - self._started, self.tracker.mark(name), cuda))
        self._started = now
        self._reset_cuda()


class BenchHooks(TrainHooks):
    """Marks the phases from the trainer's statuses and progress, books offloaded parts, stops after
    `steps` optimizer steps."""

    def __init__(self, clock: PhaseClock, model: Any, offloaded_kinds: tuple[str, ...], steps: int,
                 lora_bytes: int):
        self.clock, self.model, self.kinds, self.steps = clock, model, offloaded_kinds, steps
        self.lora_bytes = lora_bytes
        self.done = 0
        self._unet_hook = model.unet.register_forward_pre_hook(self._first_unet_call)
        self._saved: dict[int, int] = {}
        self._params = {id(p.untyped_storage()) for p in model.unet.parameters()}

    def _first_unet_call(self, module, args) -> None:
        self._unet_hook.remove()
        tracker = self.clock.tracker
        self.clock.figures.cache_bytes = max(0, tracker.current(str(self.model.device)) - tracker.base(
            str(self.model.device)) - self.lora_bytes)
        self.clock.mark("caches")

    def on_status(self, text: str) -> None:
        if text.startswith("Caching latents"):
            self.clock.mark("network attach")
        elif text.startswith(("Moved the", "Nothing was moved after caching")) and self.model.device.type == "cpu":
            parts = self.model.offload_parts()     # on a GPU they leave; on a CPU-only machine book them away
            self.clock.tracker.move_off(m for kind in self.kinds for m in parts.get(kind, []))

    def on_progress(self, progress) -> None:
        self.done += 1
        figures = self.clock.figures
        figures.saved_activation_bytes = max(figures.saved_activation_bytes, sum(self._saved.values()))
        self._saved.clear()
        if self.done == 1:
            self.clock.mark("first step")

    def should_stop(self) -> bool:
        if self.done >= self.steps:
            if self.done > 1 and len(self.clock.figures.phases) < len(PHASES):
                self.clock.mark("steady steps")
            self.clock.figures.steps = self.done
            return True
        return False

    # -- activations autograd keeps for backward (the lower bound's activation share) --------------
    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            key = id(tensor.untyped_storage())
        except (RuntimeError, NotImplementedError):
            return tensor
        if key not in self._params and not isinstance(tensor, torch.nn.Parameter):
            self._saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    def saved_tensors(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)

    def close(self) -> None:
        self._unet_hook.remove()
