"""Measured memory: live tensor bytes per device, current and peak, base weights apart from the rest.

On CUDA, torch.cuda.max_memory_allocated measures what a run needs; on CPU there is
no such counter (RSS mixes in Python, the allocator's caches and libraries), so this
TorchDispatchMode watches every tensor an operator returns while it is active: a
storage seen for the first time is counted on its device until it is freed (a weak
reference's callback), views and in-place results share a storage already counted.
Storages that exist before the tracker starts are counted only when registered
(`add_base`: the model's weights, the 'base' share of every figure). Because it
counts what operators return, it works the same on real, fake (FakeTensorMode) and
meta tensors, so a CPU, or a fake, run predicts a GPU's need. What it cannot see:
scratch memory inside one kernel (oneDNN or cuDNN workspaces) and the CUDA
allocator's rounding; on CUDA use torch.cuda.max_memory_allocated as well.

torch.distributed._tools.mem_tracker.MemTracker does more (per module, per
category) but needs every external tensor registered and costs far more per
operator; the bench needs device totals and a base-weights share, per phase.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MIB = 2 ** 20
OFFLOADED = "offloaded"     # the pseudo-device of storages moved off the training device (see `move_off`)


@dataclass
class PhaseMemory:
    """Bytes of one phase: per device, at the phase's end and at its peak (base weights included)."""
    name: str
    current: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)      # base-weight bytes at the peak

    def peak_on(self, device: str) -> int:
        return self.peak.get(device, 0)

    def added_on(self, device: str) -> int:
        """Peak minus the base weights present then: what the phase added."""
        return self.peak.get(device, 0) - self.base.get(device, 0)


class MemoryTracker(TorchDispatchMode):
    """Counts live tensor storages per device while active (`with tracker:`); `mark(name)` closes a phase."""

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, tuple[str, int, bool]] = {}   # id(storage) -> (device, bytes, is_base)
        self._current: dict[str, int] = {}
        self._base: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._base_at_peak: dict[str, int] = {}
        self.phases: list[PhaseMemory] = []

    # -- registering what existed before -------------------------------------------------
    def add_base(self, modules: Iterable[nn.Module]) -> int:
        """Count the parameters and buffers of `modules` as base weights; returns their bytes."""
        before = sum(self._base.values())
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                self._track(tensor, is_base=True)
        return sum(self._base.values()) - before

    def move_off(self, modules: Iterable[nn.Module]) -> int:
        """Book the storages of `modules` as moved off their device (what offloading does on a GPU;
        on a CPU-only machine the parts cannot really leave). Returns the bytes moved."""
        moved = 0
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                key = id(tensor.untyped_storage())
                entry = self._storages.get(key)
                if entry is None or entry[0] == OFFLOADED:
                    continue
                device, size, is_base = entry
                self._add(device, -size, is_base)
                self._storages[key] = (OFFLOADED, size, is_base)
                self._add(OFFLOADED, size, is_base)
                moved += size
        return moved

    # -- the dispatch hook -----------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, is_base=False)
        return out

    def _track(self, tensor: torch.Tensor, is_base: bool) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):   # sparse or storage-less tensors
            return
        key = id(storage)
        if key in self._storages:
            return
        size = storage.nbytes()
        device = str(tensor.device)
        self._storages[key] = (device, size, is_base)
        self._add(device, size, is_base)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        entry = self._storages.pop(key, None)
        if entry is not None:
            self._add(entry[0], -entry[1], entry[2])

    def _add(self, device: str, size: int, is_base: bool) -> None:
        now = self._current.get(device, 0) + size
        self._current[device] = now
        if is_base:
            self._base[device] = self._base.get(device, 0) + size
        if now > self._peak.get(device, 0):
            self._peak[device] = now
            self._base_at_peak[device] = self._base.get(device, 0)

    # -- figures ---------------------------------------------------------------------------
    def current(self, device: str = "cpu") -> int:
        return self._current.get(device, 0)

    def base(self, device: str = "cpu") -> int:
        return self._base.get(device, 0)

    def mark(self, name: str) -> PhaseMemory:
        """Close a phase: record its peak per device, then start the next phase's peak from now."""
        phase = PhaseMemory(name, dict(self._current), dict(self._peak), dict(self._base_at_peak))
        self.phases.append(phase)
        self._peak = dict(self._current)
        self._base_at_peak = dict(self._base)
        return phase
