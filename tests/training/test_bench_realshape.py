"""The real-shape bench's machinery on the tiny model (real shapes run only in the bench itself): a fake run
(FakeTensorMode, how SDXL at 1024 px is measured on a CPU) gives the memory of the real run, phase by
phase; the phases come in the trainer's order; the options resolve to the issue's goal settings."""
from __future__ import annotations

import argparse

import pytest
import torch

from lib_lora.bench import add_bench_args
from lib_lora.bench.models import ShapeOnlyMode
from lib_lora.bench.options import options_from_args
from lib_lora.bench.phases import PHASES, PhaseClock
from lib_lora.bench.realshape import Case, cases, measure_training
from lib_lora.models import tiny
from lib_lora.models.diffusers_adapter import DiffusersModel
from lib_lora.training import train
from lib_lora.training.mem_tracker import MemoryTracker
from training_fixtures import fast_config


def _measure(model, cfg, fake: bool):
    tracker = MemoryTracker()
    clock = PhaseClock(tracker, model.device)
    case = Case("headless", cfg.training.batch_size, cfg.training.gradient_checkpointing, fake, "no")
    with tracker:
        return measure_training(cfg, case, model, tracker, clock, 3, lambda hooks: train(cfg, model, hooks))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fake_run_measures_what_the_real_run_uses(tiny_model, dataset, tmp_path, monkeypatch, capsys,
                                                  checkpointing):
    cfg = fast_config(dataset, tmp_path, batch_size=2, gradient_checkpointing=checkpointing,
                      offload_after_caching=True, cache_text_encoder_outputs=True)
    cfg.network.train_text_encoder, cfg.dataset.shuffle_caption, cfg.output.save_state = False, False, False
    real = _measure(tiny_model, cfg, fake=False)
    scheduler = tiny._scheduler()      # numpy inside: built outside the fake mode, as the bench does
    monkeypatch.setattr(tiny, "_scheduler", lambda *args, **kwargs: scheduler)
    with ShapeOnlyMode():
        model = DiffusersModel(tiny.build_tiny_sd1(seed=0), name="tiny")
        assert all(type(p).__name__ == "FakeTensor" for p in model.unet.parameters())
        model.vae_fingerprint = lambda: "fake"
        fake = _measure(model, cfg, fake=True)
    assert [p.name for p in real.figures.phases] == list(PHASES) == [p.name for p in fake.figures.phases]
    assert real.figures.steps == fake.figures.steps == 3
    for real_phase, fake_phase in zip(real.figures.phases, fake.figures.phases):
        assert fake_phase.memory.peak_on("cpu") == pytest.approx(real_phase.memory.peak_on("cpu"), rel=0.01)
        assert fake_phase.memory.base == real_phase.memory.base
    # the VAE and text encoder were booked off the device after caching: the steps hold the UNet only
    unet_bytes = sum(p.numel() * p.element_size() for p in tiny_model.unet.parameters())
    unet_bytes += sum(b.numel() * b.element_size() for b in tiny_model.unet.buffers())
    assert real.weights_on_device == unet_bytes
    # what the bench prints: every phase, times only for the real run, the checks
    from lib_lora.bench.options import BenchOptions
    from lib_lora.bench.report import print_case, print_summary
    print_case(BenchOptions(model="sd15"), fake, 1.0)
    print_summary(BenchOptions(model="sd15"), [real, fake])
    out = capsys.readouterr().out
    assert all(name in out for name in PHASES) and "fake run: memory only" in out
    assert "estimate" in out and "lower bound" in out and "[fake]" in out


def test_default_matrix_is_the_goal_settings():
    parser = argparse.ArgumentParser()
    add_bench_args(parser)
    opts = options_from_args(parser.parse_args(["--model", "sdxl"]))
    assert (opts.px(), opts.rank(), opts.batches(), opts.checkpointing()) == (1024, 16, [1, 4], [False, True])
    assert opts.offloads() and not opts.trains_text_encoder()
    made = cases(opts, torch.device("cpu"))
    assert {(c.batch, c.checkpointing) for c in made if c.path == "headless"} == {(1, False), (1, True), (4, False),
                                                                                    (4, True)}
    assert all(c.fake and c.precision == "bf16" for c in made)      # SDXL on a CPU: memory from fake runs
    assert options_from_args(parser.parse_args(["--model", "sdxl", "--device", "cuda"])).precision("cuda") == "fp16"
    tiny_opts = options_from_args(parser.parse_args([]))
    assert (tiny_opts.px(), tiny_opts.rank(), tiny_opts.batches(), tiny_opts.precision("cpu")) == (256, 8, [2], "no")
