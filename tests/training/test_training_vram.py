"""The VRAM check's search (lib_lora/training/vram.py): the fewest, cheapest changes that make a run
fit, on model sizes given as numbers (no model, no GPU). In the WebUI: tests/webui/test_vram.py."""
from __future__ import annotations

import pytest

from lib_lora.config import TrainConfig
from lib_lora.errors import LoraError
from lib_lora.training import memory, vram

MIB = 2 ** 20


def _cfg(train_dir: str = "") -> TrainConfig:
    cfg = TrainConfig()
    cfg.dataset.train_dir, cfg.dataset.resolution, cfg.dataset.enable_bucket = train_dir, 64, False
    cfg.network.dim, cfg.network.train_text_encoder = 4, True
    t = cfg.training
    t.epochs, t.batch_size, t.optimizer, t.mixed_precision, t.gradient_checkpointing = 1, 4, "AdamW", "fp16", False
    cfg.output.output_name, cfg.output.save_state, cfg.output.tensorboard = "vramcat", False, False
    return cfg


def _sizes() -> memory.ModelSizes:
    return memory.ModelSizes("sdxl", {"unet": 3_000_000, "text_encoder": 1_000_000}, 7 * 2**30,
                             {"vae": 160 * MIB, "text_encoder": 1600 * MIB})


def test_the_offer_is_the_fewest_cheapest_changes_that_fit():
    cfg, sizes, px = _cfg(), _sizes(), 1024 * 1024
    need = vram.check_vram(cfg, sizes, px, free_mb=None)     # CPU: nothing to check
    assert need == pytest.approx(memory.estimate_need_mb(cfg, sizes, px) * memory.ALLOCATOR_HEADROOM)
    assert vram.check_vram(cfg, sizes, px, free_mb=need + 1) == need
    everything = vram.cheaper_settings(cfg, sizes)
    floor = vram.need_mb(vram._apply(cfg, [c for c in everything if "batch_size" not in c.training]
                                     + [everything[-1]]), sizes, px)          # every change, batch 1
    offered = []
    for i in range(8):      # from 60 % of the need down to just above what every change together needs
        free = need * 0.6 * (floor * 1.02 / (need * 0.6)) ** (i / 7)
        with pytest.raises(LoraError) as err:
            vram.check_vram(cfg, sizes, px, free_mb=free)
        assert f"needs about {need:.0f} MiB" in str(err.value) and "was not started" in str(err.value)
        offer = vram.fitting_settings(cfg, sizes, px, free)
        assert offer is not None and offer.describe() in str(err.value)
        # it fits by the same estimate, the trainer accepts it, and no smaller set of its changes fits
        assert vram.need_mb(offer.config, sizes, px) <= free
        for j in range(len(offer.changes)):
            fewer = vram._apply(cfg, offer.changes[:j] + offer.changes[j + 1:])
            assert vram.need_mb(fewer, sizes, px) > free
        offered.append(tuple(c.label for c in offer.changes))
    assert offered[0] == ("gradient checkpointing on",)        # the cheapest single change that fits
    assert len(set(offered)) >= 3 and [len(o) for o in offered] == sorted(len(o) for o in offered)
    assert any("optimizer AdamW8bit" in label for label in offered[-1])     # at the floor: every kind
    with pytest.raises(LoraError, match="Lower the resolution"):
        vram.check_vram(cfg, sizes, px, free_mb=1.0)
