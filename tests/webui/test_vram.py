"""The VRAM check refuses a run that would not fit, before it starts, naming settings that do
(free VRAM is faked: there is no GPU here)."""
from __future__ import annotations

import os

import pytest

from lib_lora.config import TrainConfig
from lib_lora.errors import LoraError
from lib_lora.training import memory
from lib_lora.webui import vram
from lib_lora.webui.fingerprint import differences, fingerprint
from tests.webui.conftest import load_family
from tests.webui.test_jobs_api import _dataset

MIB = 2 ** 20


def _cfg(train_dir: str = "") -> TrainConfig:
    cfg = TrainConfig()
    cfg.dataset.train_dir, cfg.dataset.resolution, cfg.dataset.enable_bucket = train_dir, 64, False
    cfg.network.dim, cfg.network.train_text_encoder = 4, True
    t = cfg.training
    t.epochs, t.batch_size, t.optimizer, t.mixed_precision, t.gradient_checkpointing = 1, 4, "AdamW", "fp16", False
    cfg.output.output_name, cfg.output.save_state, cfg.output.tensorboard = "vramcat", False, False
    return cfg


def test_estimate_and_the_settings_offered():
    cfg, counts, px = _cfg(), {"unet": 3_000_000, "text_encoder": 1_000_000}, 1024 * 1024
    need = vram.check_vram(cfg, "sdxl", counts, px, free_mb=None)     # CPU: nothing to check
    assert need == memory.estimate_need_mb(cfg, "sdxl", counts, px) > 10_000
    assert vram.check_vram(cfg, "sdxl", counts, px, free_mb=need + 1) == need
    offers = {}
    for free in (need * 0.5, need * 0.2, need * 0.12, need * 0.07, 1.0):
        with pytest.raises(LoraError) as err:
            vram.check_vram(cfg, "sdxl", counts, px, free_mb=free)
        offers[free] = str(err.value)
        assert f"needs about {need:.0f} MiB" in offers[free] and "was not started" in offers[free]
    assert "gradient checkpointing on" in offers[need * 0.5] and "UNet only" not in offers[need * 0.5]
    assert "text-encoder output cache" in offers[need * 0.2]
    assert "batch size" in offers[need * 0.07] and "AdamW8bit" in offers[need * 0.07]
    assert "Lower the resolution" in offers[1.0]
    # every offer really fits by the same estimate
    trial = _cfg()
    trial.training.gradient_checkpointing = True
    assert memory.estimate_need_mb(trial, "sdxl", counts, px) <= need * 0.5


def test_optimizer_state_and_param_counts(fresh_state):
    from lib_lora.models.ldm_adapter import LdmModel
    assert memory.optimizer_bytes_per_param("AdamW8bit") < memory.optimizer_bytes_per_param("AdamW")
    model = LdmModel(load_family(fresh_state, "sd2"))
    cfg = _cfg()
    counts = memory.lora_param_counts(model.network_targets(True, True), cfg.network)
    from lib_lora.networks import create_network
    network = create_network(model.network_targets(True, True), cfg.network)
    assert counts["unet"] + counts["text_encoder"] == sum(p.numel() for p in network.parameters())


def test_run_that_does_not_fit_is_refused_before_training(fresh_state, monkeypatch):
    from lib_lora.webui.jobs import RunManager
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    before = fingerprint(sd_model)
    measured = []
    monkeypatch.setattr(vram, "free_vram_mb", lambda device=None: measured.append(device) or 50.0)
    record = RunManager().start(_cfg(_dataset(webui.root)), background=False)
    assert measured and record.state == "failed" and record.step == 0
    assert "only 50 MiB is free" in record.error and "gradient checkpointing on" in record.error
    assert not [f for f in os.listdir(webui.shared.cmd_opts.lora_dir) if f.startswith("vramcat")]
    assert differences(before, fingerprint(sd_model)) == []
    # the user may turn the check off (Settings > Train LoRA); then the run starts
    monkeypatch.setattr(webui.shared.opts, "train_lora_check_vram", False, raising=False)
    cfg = _cfg(_dataset(webui.root))
    cfg.training.max_train_steps, cfg.network.train_text_encoder = 1, False
    assert RunManager().start(cfg, background=False).state == "finished"


def test_offload_is_offered_first_and_subtracts_the_models_own_bytes(fresh_state):
    from lib_lora.models.ldm_adapter import LdmModel
    sd_model = load_family(fresh_state, "sdxl")
    model = LdmModel(sd_model)
    cfg = _cfg()
    cfg.dataset.cache_latents = "off"
    sizes = memory.model_sizes(cfg, model)
    # the adapter's parts, counted from the WebUI model's own modules
    vae = sum(p.numel() * p.element_size() for p in sd_model.first_stage_model.parameters())
    encoders = sum(p.numel() * p.element_size() for p in sd_model.conditioner.parameters())
    assert sizes.offloadable["vae"] >= vae > 0 and sizes.offloadable["text_encoder"] >= encoders > 0
    px = 1024 * 1024
    need = vram.check_vram(cfg, "sdxl", sizes.lora_params, px, None, sizes.offloadable)
    free = need - sizes.offloadable["vae"] / MIB / 2       # the VAE's weights alone make it fit
    with pytest.raises(LoraError) as err:
        vram.check_vram(cfg, "sdxl", sizes.lora_params, px, free, sizes.offloadable)
    offer = str(err.value)
    assert "offload the VAE" in offer and "with the latent cache on" in offer and "checkpointing" not in offer
    # the offer is a config the trainer accepts, and fits by the same estimate
    trial = _cfg()
    trial.training.offload_after_caching = True
    assert memory.estimate_need_mb(trial, "sdxl", sizes.lora_params, px, sizes.offloadable) <= free
    # colour augmentation needs the VAE every step: offloading is never offered then
    cfg.dataset.color_aug = True
    with pytest.raises(LoraError) as err:
        vram.check_vram(cfg, "sdxl", sizes.lora_params, px, free, sizes.offloadable)
    assert "offload" not in str(err.value) and "gradient checkpointing on" in str(err.value)
