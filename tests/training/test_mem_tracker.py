"""The memory tracker counts live tensor bytes as a GPU's allocator would see them (each storage once,
freed when the last reference goes), the same on real and fake tensors; bf16 autocast runs on CPU while
fp16 there trains in fp32 and says so."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from lib_lora.training import train
from lib_lora.training.hooks import TrainHooks
from lib_lora.training.mem_tracker import OFFLOADED, MemoryTracker
from lib_lora.training.precision import Precision, cpu_has_bf16, note
from training_fixtures import fast_config

F32 = 4


def _linear_step(tracker: MemoryTracker, width: int, batch: int) -> dict[str, int]:
    """Forward/backward of one Linear under the tracker; returns the figures at each point."""
    layer = torch.nn.Linear(width, width, bias=False)
    seen = {"base": tracker.add_base([layer])}
    with tracker:
        x = torch.randn(batch, width)
        y = layer(x)
        seen["after forward"] = tracker.current()
        view = y.view(-1)            # shares y's storage: no new bytes
        y.mul_(2)                    # in place: no new bytes
        seen["after view"] = tracker.current()
        del view
        y.sum().backward()
        seen["after backward"] = tracker.current()
        del y
        seen["after del"] = tracker.current()
    seen["peak"] = tracker.mark("step").peak_on("cpu")
    return seen


def test_counts_each_storage_once_and_frees_it():
    width, batch = 256, 8
    seen = _linear_step(MemoryTracker(), width, batch)
    weight, act = width * width * F32, batch * width * F32
    assert seen["base"] == weight
    assert seen["after forward"] == weight + 2 * act            # x and y
    assert seen["after view"] == seen["after forward"]
    assert seen["after backward"] >= weight + 2 * act + weight  # + the weight's gradient
    assert seen["after del"] == seen["after backward"] - act
    assert seen["peak"] >= seen["after backward"]


def test_fake_tensors_give_the_real_figures():
    """The bench measures SDXL at 1024 px under FakeTensorMode: the figures must be the real ones."""
    real = _linear_step(MemoryTracker(), 128, 4)
    with FakeTensorMode():
        fake = _linear_step(MemoryTracker(), 128, 4)
    assert fake == real


def test_phases_and_offloaded_parts():
    tracker = MemoryTracker()
    vae, unet = torch.nn.Linear(64, 64), torch.nn.Linear(32, 32)
    tracker.add_base([vae, unet])
    with tracker:
        big = torch.zeros(1024, 1024)
        del big
    moved = tracker.move_off([vae])       # offloading after caching, before the steps
    first = tracker.mark("caches")
    second = tracker.mark("steps")
    vae_bytes = (64 * 64 + 64) * F32
    assert moved == vae_bytes and tracker.current(OFFLOADED) == vae_bytes
    assert first.peak_on("cpu") == tracker.base("cpu") + vae_bytes + 1024 * 1024 * F32
    assert first.base["cpu"] == (64 * 64 + 64 + 32 * 32 + 32) * F32
    assert second.peak_on("cpu") == (32 * 32 + 32) * F32 and second.added_on("cpu") == 0


def test_bf16_autocast_runs_on_cpu_and_fp16_says_why_not(tiny_model, dataset, tmp_path):
    layer = torch.nn.Linear(8, 8)
    bf16 = Precision("bf16", torch.device("cpu"))
    with bf16.autocast():
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16
    fp16 = Precision("fp16", torch.device("cpu"))
    with fp16.autocast():
        assert layer(torch.randn(2, 8)).dtype == torch.float32
    assert not fp16.enabled and fp16.scaler is None
    assert "bf16" in note("fp16", torch.device("cpu"))
    assert (note("bf16", torch.device("cpu")) == "") == cpu_has_bf16()     # else: emulated, slow, said so
    statuses: list[str] = []
    hooks = TrainHooks()
    hooks.on_status = statuses.append
    result = train(fast_config(dataset, tmp_path, mixed_precision="bf16", max_train_steps=2), tiny_model, hooks)
    assert result.stopped_reason == "" and all(torch.isfinite(torch.tensor(result.losses)))
    assert not any("training in fp32" in s for s in statuses)
    train(fast_config(dataset, tmp_path / "b", mixed_precision="fp16", max_train_steps=1), tiny_model, hooks)
    assert any("fp16 does not run on CPU" in s for s in statuses)
