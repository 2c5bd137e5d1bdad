"""Pausing a run at an optimizer-step boundary, so that resuming continues it exactly.

On a pause request the loop stops between optimizer steps, saves its resumable
state there (so the run can also be resumed from the file, e.g. headless), and
hands control to the host's `PauseGate`. A gate that `releases_model` (the
WebUI's) gets the model back as the run found it: the network detached, the
run's attention and checkpointing wrappers undone, offloaded parts back on their
devices; the network's weights, the optimizer's state, the EMA copy of the weights
and the cached text-encoder outputs move to the CPU while paused (the VRAM is the
user's then), and back, bit for bit, on resume. The objects themselves stay alive (network, optimizer, scheduler, the
epoch's noise and caption generators), and the global RNG streams are put back
on resume, because whatever runs during the pause (a txt2img seeds the global
torch RNG) must not change what the run draws next: losses, learning rates and
weights then equal an uninterrupted run's.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from . import distributed as dist
from .hooks import PausePoint

PARK_DEVICE = torch.device("cpu")


def pause_here(run: Any, epoch: int, next_batch: int, epoch_losses: list[float]) -> bool:
    """Pause `run` (a run.Run) before batch `next_batch` of `epoch`; returns True when the run goes on,
    False when it ends during the pause (then the model is no longer the run's to touch)."""
    caller, gate = run.caller, run.gate
    path = run.save_resume_point(next_batch, epoch_losses, force=True)
    point = PausePoint(run.step, epoch, path, caller.should_pause, lambda: dist.any_rank(caller.should_stop()),
                       caller.save_requested, run.save_now)
    caller.on_status(f"Paused after step {run.step} (epoch {epoch})")
    if not gate.releases_model:
        go_on = gate.hold(point)
    else:
        rng = global_rng_state()
        parked = give_model_back(run)
        go_on = gate.hold(point)
        if go_on:
            take_model_again(run, parked)
            set_global_rng_state(rng)
    if go_on:
        run.steps_this_session = 0        # it/s and ETA are measured again from the next step
        caller.on_status(f"Resumed at step {run.step} (epoch {epoch})")
    return go_on


def give_model_back(run: Any) -> "Parked":
    """Undo what the run did to the model (the reverse order of doing it) and park the run's tensors."""
    run.network.detach()
    run.model.set_gradient_checkpointing(False)
    if hasattr(run.model, "set_attention"):
        run.model.set_attention(False)
    if run.offloader is not None:
        run.offloader.restore()
    # the TE cache's store is parked in place: the cache keeps its entries, only their device changes
    te_store = run.te_cache._store if run.te_cache is not None else {}
    return Parked.of(run.network, run.optimizer, [*([run.ema.shadow] if run.ema else []), te_store])


def take_model_again(run: Any, parked: "Parked") -> None:
    """Borrowed again: the run's tensors back, the network attached, the run's model settings re-applied
    (attention, gradient checkpointing), the offloaded parts moved off again."""
    parked.restore()
    run.network.attach()
    run.prepare_model()
    if run.offloader is not None:
        run.offloader.offload()


@dataclass
class Parked:
    """Tensors moved to the CPU for a pause, each with the device it goes back to. Parameters move
    in place (`param.data`), so the optimizer keeps holding the very Parameter objects; dict entries
    (optimizer slots, EMA shadow, cached conditioning) are replaced in their dict."""
    moved: list[tuple[Any, Any, torch.device]] = field(default_factory=list)

    @classmethod
    @torch.no_grad()
    def of(cls, network: torch.nn.Module, optimizer: Any, tensor_dicts: Sequence[dict] = ()) -> "Parked":
        parked = cls()
        for param in list(network.parameters()) + list(network.buffers()):
            if param.device != PARK_DEVICE:
                parked.moved.append((param, None, param.device))
                param.data = param.data.to(PARK_DEVICE)
        for holder in [*optimizer.state.values(), *tensor_dicts]:
            parked._park_entries(holder)
        return parked

    def _park_entries(self, holder: dict) -> None:
        for key, value in list(holder.items()):
            device = _device_of(value)
            if device is not None and device != PARK_DEVICE:
                self.moved.append((holder, key, device))
                holder[key] = _moved(value, PARK_DEVICE)

    @torch.no_grad()
    def restore(self) -> None:
        for holder, key, device in self.moved:
            if key is None:
                holder.data = holder.data.to(device)
            else:
                holder[key] = _moved(holder[key], device)
        self.moved.clear()


def _device_of(value: Any) -> torch.device | None:
    """The device of a tensor, or of a conditioning's context (its tensors share one); None for others."""
    if isinstance(value, torch.Tensor):
        return value.device
    context = getattr(value, "context", None)
    return context.device if isinstance(context, torch.Tensor) else None


def _moved(value: Any, device: torch.device) -> Any:
    """`value` on `device`: a tensor, or a conditioning dataclass with every tensor field (and the
    tensors of its `extra` dict) moved; dtypes unchanged, so the round trip is exact."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    fields = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if isinstance(item, torch.Tensor):
            fields[f.name] = item.to(device)
        elif isinstance(item, dict):
            fields[f.name] = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in item.items()}
    return dataclasses.replace(value, **fields)


def global_rng_state() -> dict:
    """Every global random stream a generation in the pause may draw from or reseed."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_global_rng_state(saved: dict) -> None:
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda"])
    np.random.set_state(saved["numpy"])
    random.setstate(saved["python"])
