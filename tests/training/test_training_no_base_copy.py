"""The headless path keeps no copy of the base weights either: a diffusers pipeline as
from_pretrained returns it (every parameter requiring grad) is frozen by the adapter, so a run
gives no base parameter a gradient and keeps only LoRA-sized tensors between steps."""
from __future__ import annotations

from lib_lora.training import train
from lib_lora.training.hooks import TrainHooks
from lib_lora.training.mem_tracker import MemoryTracker
from training_fixtures import fast_config


class StepWatch(TrainHooks):
    def __init__(self, modules, tracker: MemoryTracker):
        self.modules, self.tracker = modules, tracker
        self.base_grads: list[int] = []
        self.kept: list[int] = []       # live bytes the run added (base weights apart), after a step

    def on_progress(self, progress) -> None:
        self.base_grads.append(sum(p.grad is not None for m in self.modules for p in m.parameters()))
        self.kept.append(self.tracker.current("cpu") - self.tracker.base("cpu"))


def test_a_headless_run_gives_no_base_weight_a_gradient(dataset, tmp_path):
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1

    pipe = build_tiny_sd1(seed=0)
    parts = [pipe.unet, pipe.vae, pipe.text_encoder]
    for part in parts:
        part.requires_grad_(True)                 # as diffusers' from_pretrained leaves them
    model = DiffusersModel(pipe, name="tiny")
    assert not any(p.requires_grad for part in parts for p in part.parameters())
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    cfg = fast_config(dataset, tmp_path / "out", max_train_steps=2)
    cfg.network.train_text_encoder = True
    tracker = MemoryTracker()
    tracker.add_base(parts)
    watch = StepWatch(parts, tracker)
    with tracker:
        result = train(cfg, model, watch)
    assert result.steps == 2 and watch.base_grads == [0, 0]
    # LoRA (rank 4, UNet and text encoder), its AdamW state and the caches: a small share of
    # the UNet; a gradient kept for every UNet weight would be all of it
    assert max(watch.kept) < 0.2 * unet_bytes, (watch.kept, unet_bytes)
