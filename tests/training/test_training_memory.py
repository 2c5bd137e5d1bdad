"""The memory estimate (one estimator for the plan and the WebUI's VRAM check) and offloading the
VAE / text encoder after caching: refused where it cannot work, never using an offloaded part during
the steps, giving the parts back for samples and at the end on every way out."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lib_lora.config import TrainConfig
from lib_lora.errors import ConfigError
from lib_lora.training import memory, offload, train
from lib_lora.training.hooks import TrainHooks
from lib_lora.training.trainer import plan_run
from training_fixtures import fast_config, unet_weights


def _sizes(tiny_model, cfg):
    sizes = memory.model_sizes(cfg, tiny_model)
    assert sizes.family == "sd1" and sizes.lora_params["unet"] > 0 and sizes.lora_params["text_encoder"] > 0
    return sizes


def test_estimate_goes_down_with_each_cheaper_setting(tiny_model, dataset, tmp_path):
    cfg = fast_config(dataset, tmp_path, batch_size=4)
    cfg.training.cache_text_encoder_outputs, cfg.dataset.shuffle_caption = True, False
    sizes = _sizes(tiny_model, cfg)
    px = 1024 * 1024
    # the model's parts, counted from their own tensors
    vae_bytes = sum(p.numel() * p.element_size() for p in tiny_model.pipe.vae.parameters())
    te_bytes = sum(p.numel() * p.element_size() for p in tiny_model.pipe.text_encoder.parameters())
    assert sizes.offloadable["vae"] >= vae_bytes and sizes.offloadable["text_encoder"] >= te_bytes

    def need(**changes):
        training = {k: v for k, v in changes.items() if k != "train_text_encoder"}
        network = {k: v for k, v in changes.items() if k == "train_text_encoder"}
        trial = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training),
                                    network=dataclasses.replace(cfg.network, **network))
        return memory.estimate_need_mb(trial, sizes, px)

    base = need()
    assert need(gradient_checkpointing=True) < base
    assert need(optimizer="AdamW8bit") < base
    assert need(batch_size=2) < base and need(batch_size=1) < need(batch_size=2)
    # offload: the VAE only while the text encoder is trained, both once it is frozen and cached
    vae_only = base - need(offload_after_caching=True)
    assert vae_only * memory.MIB == pytest.approx(sizes.offloadable["vae"])
    frozen = need(train_text_encoder=False)
    both = frozen - need(train_text_encoder=False, offload_after_caching=True)
    assert both * memory.MIB == pytest.approx(sizes.offloadable["vae"] + sizes.offloadable["text_encoder"])


def test_plan_prints_the_estimate_for_the_model(tiny_model, dataset, tmp_path):
    cfg = fast_config(dataset, tmp_path)
    plan = plan_run(cfg, tiny_model)
    assert plan.memory is not None and "estimated memory: about" in plan.summary()
    assert f"{plan.memory.peak_mb:.0f} MiB on the device" in plan.summary()
    cfg.training.gradient_checkpointing = True
    assert plan_run(cfg, tiny_model).memory.peak_mb < plan.memory.peak_mb
    # without a model (the tab's preview) there is nothing to estimate from
    assert plan_run(cfg).memory is None and "estimated memory" not in plan_run(cfg).summary()


def test_activations_are_counted_from_the_unets_own_structure(tiny_model):
    """The UNet's ResNet and transformer channels per latent pixel, read from its blocks: the diffusers
    and the ldm UNet of SD1.5 (two implementations of one published config) give the same figure, which is
    the config's own sum (channels / downscale^2 over 5 blocks per level: 2 down + 3 up, plus the middle)."""
    from diffusers import UNet2DConditionModel

    from lib_lora.bench.models import SD15_UNET, _config
    from tests.fixtures.tiny_ldm import install_torchvision_standin

    install_torchvision_standin()
    from ldm.util import instantiate_from_config

    with torch.device("meta"):
        diffusers_unet = UNet2DConditionModel.from_config(_config("sd15", "unet"))
        ldm_unet = instantiate_from_config(SD15_UNET)
    channels = (320, 640, 1280, 1280)
    resnets = sum(5 * c / 4 ** level for level, c in enumerate(channels)) + 2 * 1280 / 64
    transformers = sum(5 * c / 4 ** level for level, c in enumerate(channels[:3])) + 1280 / 64
    expected = (resnets, transformers, transformers)    # one transformer block per wrapper in SD1.5
    assert memory.unet_volume(diffusers_unet) == memory.unet_volume(ldm_unet) == expected
    # the tiny model (32/64 channels, 1 layer per block, attention on the first level) needs far less
    sizes = memory.model_sizes(TrainConfig(), tiny_model)
    assert sizes.unet_volume == (32 * 3 + 64 / 4 * 3 + 2 * 64 / 4, 32 * 3 + 64 / 4, 32 * 3 + 64 / 4)
    cfg = TrainConfig()
    stock = memory.unet_activation_bytes(cfg, memory.ModelSizes("sd1"), 512 * 512)
    assert memory.unet_activation_bytes(cfg, sizes, 512 * 512) < stock / 10


def _measured_and_estimated(model, cfg, steps: int = 2) -> tuple[float, float]:
    """Peak live tensor bytes on the device during the steps of a real run (the bench's tracker), and the
    plan's estimate of it, in MiB."""
    from lib_lora.bench.realshape import Case, measure_training
    from lib_lora.bench.phases import PhaseClock
    from lib_lora.bench.report import measured_peak
    from lib_lora.training.mem_tracker import MemoryTracker

    tracker = MemoryTracker()
    clock = PhaseClock(tracker, model.device)
    case = Case("headless", cfg.training.batch_size, cfg.training.gradient_checkpointing, False, "no")
    with tracker:
        result = measure_training(cfg, case, model, tracker, clock, steps, lambda hooks: train(cfg, model, hooks))
    return measured_peak(result) / memory.MIB, result.estimate_mb


@pytest.mark.parametrize("batch, checkpointing, text_encoder", [(1, False, False), (4, False, True),
                                                                (4, True, False)])
def test_estimate_within_ten_percent_of_the_measured_peak(tiny_model, dataset, tmp_path, batch, checkpointing,
                                                          text_encoder):
    cfg = fast_config(dataset, tmp_path, batch_size=batch, gradient_checkpointing=checkpointing)
    cfg.network.train_text_encoder, cfg.output.save_state = text_encoder, False
    measured, estimated = _measured_and_estimated(tiny_model, cfg)
    assert estimated == pytest.approx(measured, rel=0.10)


@pytest.mark.parametrize("change, says", [({"cache_latents": "off"}, "dataset.cache_latents"),
                                          ({"color_aug": True}, "color_aug off")])
def test_offload_is_refused_where_the_vae_is_needed_every_step(tiny_model, dataset, tmp_path, change, says):
    cfg = fast_config(dataset, tmp_path, offload_after_caching=True)
    for key, value in change.items():
        setattr(cfg.dataset, key, value)
    before = unet_weights(tiny_model)
    with pytest.raises(ConfigError, match="training.offload_after_caching") as err:
        train(cfg, tiny_model)
    assert says in str(err.value)
    assert not (tmp_path / "t-000001.safetensors").exists()
    assert all(torch.equal(v, before[k]) for k, v in unet_weights(tiny_model).items())


class _Spy:
    """Stands in for the device move (there is no second device on this machine): records what
    goes where, and notes any use of the VAE or text encoder while they are away."""

    def __init__(self, model, monkeypatch):
        self.away: set[int] = set()
        self.moved: set[int] = set()
        self.used_while_away: list[str] = []
        monkeypatch.setattr(offload, "OFFLOAD_DEVICE", "meta")
        monkeypatch.setattr(offload, "_move", self.move)
        parts = model.offload_parts().items()
        self.kind_ids = {kind: set().union(*(_ids(m) for m in mods)) for kind, mods in parts}
        self.handles = [module.register_forward_pre_hook(lambda m, args, kind=kind: self.check(kind))
                        for kind, mods in parts for module in mods]

    def move(self, module, kind, name, device):
        key = id(getattr(module, kind)[name])
        if device.type == "meta":
            self.away.add(key)
            self.moved.add(key)
        else:
            self.away.discard(key)

    def check(self, kind):
        if self.away & self.kind_ids[kind]:
            self.used_while_away.append(kind)


@pytest.fixture
def spy(tiny_model, monkeypatch):
    watcher = _Spy(tiny_model, monkeypatch)
    yield watcher
    for handle in watcher.handles:   # the model is shared by the session: leave no hook behind
        handle.remove()


def _ids(module) -> set[int]:
    return {id(t) for t in [*module.parameters(), *module.buffers()]}


def test_offloaded_parts_are_not_used_during_steps_and_come_back_for_samples(tiny_model, dataset, tmp_path, spy):
    cfg = fast_config(dataset, tmp_path, offload_after_caching=True, cache_text_encoder_outputs=True, epochs=2)
    cfg.dataset.shuffle_caption, cfg.network.train_text_encoder, cfg.dataset.validation_split = False, False, 0.25
    cfg.sample.every_n_epochs = 1
    samples = []

    def sampler(network, sample_cfg, epoch):
        samples.append((epoch, len(spy.away)))
        return []

    statuses = []
    hooks = TrainHooks()
    hooks.on_status = statuses.append
    result = train(cfg, tiny_model, hooks, sampler=sampler)
    assert result.stopped_reason == "" and result.steps > 0 and result.validation_losses
    assert spy.used_while_away == []                    # steps and validation ran on the caches only
    assert samples == [(1, 0), (2, 0)]                  # every part back while sampling
    assert spy.away == set()                            # and back at the end
    pipe = tiny_model.pipe
    assert _ids(pipe.vae) | _ids(pipe.text_encoder) <= spy.moved and not _ids(pipe.unet) & spy.moved
    assert any("Moved the VAE and the text encoder to the CPU" in s for s in statuses)


@pytest.mark.parametrize("path", ["cancel", "exception"])
def test_trained_text_encoder_stays_and_every_end_path_restores(tiny_model, dataset, tmp_path, spy, path):
    cfg = fast_config(dataset, tmp_path, offload_after_caching=True, epochs=2)
    cfg.sample.every_n_epochs = 1
    vae, encoder = _ids(tiny_model.pipe.vae), _ids(tiny_model.pipe.text_encoder)
    seen = []

    class Boom(RuntimeError):
        pass

    class Watch(TrainHooks):
        def on_progress(self, progress):
            seen.append((vae <= spy.away, bool(encoder & spy.away)))

        def should_stop(self):
            return path == "cancel" and bool(seen)

    def sampler(network, sample_cfg, epoch):
        raise Boom("a broken sampler")

    if path == "cancel":
        assert train(cfg, tiny_model, Watch(), sampler=sampler).stopped_reason == "cancelled"
    else:
        with pytest.raises(Boom):
            train(cfg, tiny_model, Watch(), sampler=sampler)
    assert seen and all(v == (True, False) for v in seen)   # VAE away, the trained encoder here
    assert spy.away == set() and spy.used_while_away == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to move weights off")
def test_offloader_frees_the_device_and_restores_bit_for_bit():
    from lib_lora.models.tiny import build_tiny_sd1
    pipe = build_tiny_sd1(seed=0).to("cuda", torch.float16)
    before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    allocated = torch.cuda.memory_allocated()
    offloader = offload.Offloader([pipe.vae])
    moved = offloader.offload()
    assert moved > 0 and torch.cuda.memory_allocated() <= allocated - moved
    assert all(p.device.type == "cpu" for p in pipe.vae.parameters())
    offloader.restore()
    after = pipe.vae.state_dict()
    assert all(after[k].device.type == "cuda" and after[k].dtype == v.dtype and torch.equal(after[k], v)
               for k, v in before.items())
