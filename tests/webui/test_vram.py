"""The VRAM check (lib_lora/training/vram.py) in the WebUI: it refuses a run that would not fit, before
it starts, naming settings that do (free VRAM is faked: there is no GPU here); the estimate on the
WebUI's ldm models. The offer's search itself: tests/training/test_training_vram.py."""
from __future__ import annotations

import os

import pytest

from lib_lora.errors import LoraError
from lib_lora.training import memory, vram
from lib_lora.webui.fingerprint import differences, fingerprint
from tests.training.test_training_vram import MIB, _cfg
from tests.webui.conftest import load_family
from tests.webui.test_jobs_api import _dataset


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
    from lib_lora.models.ldm_adapter import LdmModel
    from lib_lora.training.trainer import plan_run
    from tests.webui.test_pause import new_jobs, run_of, start
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    cfg = _cfg(_dataset(webui.root))
    model = LdmModel(sd_model)
    plan = plan_run(cfg, model)
    free = vram.need_mb(cfg, memory.model_sizes(cfg, model), 64 * 64, len(plan.train)) * 0.8
    before = fingerprint(sd_model)
    measured = []
    monkeypatch.setattr(vram, "free_vram_mb", lambda device=None: measured.append(device) or free)
    record = start(new_jobs(), cfg, background=False)
    assert measured and record.state == "failed" and run_of(record).step == 0
    assert f"only {free:.0f} MiB is free" in record.error and "These settings fit" in record.error
    assert not [f for f in os.listdir(webui.shared.cmd_opts.lora_dir) if f.startswith("vramcat")]
    assert differences(before, fingerprint(sd_model)) == []
    # the user may turn the check off (Settings > Train LoRA); then the run starts
    monkeypatch.setattr(webui.shared.opts, "train_lora_check_vram", False, raising=False)
    cfg = _cfg(_dataset(webui.root))
    cfg.training.max_train_steps, cfg.network.train_text_encoder = 1, False
    assert start(new_jobs(), cfg, background=False).state == "finished"


@pytest.mark.parametrize("batch, checkpointing", [(1, False), (4, True)])
def test_estimate_within_ten_percent_of_the_measured_peak_in_the_webui(fresh_state, batch, checkpointing):
    """The tiny ldm model trained through the model bridge: the plan's estimate against the peak of live
    tensor bytes measured by the bench's tracker during the steps."""
    from lib_lora.bench.phases import PhaseClock
    from lib_lora.bench.realshape import Case, measure_training
    from lib_lora.bench.report import measured_peak
    from lib_lora.training import train
    from lib_lora.training.mem_tracker import MemoryTracker
    from lib_lora.webui.model_bridge import training_session
    webui = fresh_state
    cfg = _cfg(_dataset(webui.root))
    cfg.output.output_dir = os.path.join(webui.root, "vram_out")
    cfg.training.batch_size, cfg.training.gradient_checkpointing, cfg.training.mixed_precision = batch, checkpointing, "no"
    sd_model = load_family(webui, "sd1")
    tracker = MemoryTracker()
    tracker.add_base([sd_model])
    with tracker, training_session(sd_model, webui.shared.opts, cfg) as model:
        clock = PhaseClock(tracker, model.device)
        case = Case("webui", batch, checkpointing, False, "no")
        result = measure_training(cfg, case, model, tracker, clock, 2, lambda hooks: train(cfg, model, hooks))
    assert result.estimate_mb == pytest.approx(measured_peak(result) / MIB, rel=0.10)


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
    need = vram.check_vram(cfg, sizes, px, None)
    free = need - sizes.offloadable["vae"] / MIB / 2       # the VAE's weights alone make it fit
    with pytest.raises(LoraError) as err:
        vram.check_vram(cfg, sizes, px, free)
    offer = str(err.value)
    assert "offload the VAE" in offer and "with the latent cache on" in offer and "checkpointing" not in offer
    # the offer is a config the trainer accepts, and fits by the same estimate
    trial = _cfg()
    trial.training.offload_after_caching = True
    assert vram.need_mb(trial, sizes, px) <= free
    # colour augmentation needs the VAE every step: offloading is never offered then
    cfg.dataset.color_aug = True
    with pytest.raises(LoraError) as err:
        vram.check_vram(cfg, sizes, px, free)
    assert "offload" not in str(err.value) and "gradient checkpointing on" in str(err.value)
