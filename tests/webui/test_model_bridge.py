"""The bridge gives the WebUI's model back exactly, on every way out of a run."""
from __future__ import annotations

import pytest
import torch

from lib_lora.config import TrainConfig
from lib_lora.errors import ModelError
from lib_lora.models.protocol import Conditioning
from lib_lora.training import TrainHooks, train
from lib_lora.webui.fingerprint import differences, fingerprint
from lib_lora.webui.model_bridge import training_session
from tests.training.training_fixtures import fast_config, write_dataset
from tests.webui.conftest import load_family


def _generate(webui, prompt="a cat"):
    p = webui.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, steps=2, width=16, height=16, seed=3)
    return webui.processing.process_images(p).images[0].tobytes()


def _lora_like_step(model):
    """What a run does to the model: checkpointing on, an extra module in the graph with
    a hook, a backward pass through the UNet and text encoder, train mode."""
    model.set_gradient_checkpointing(True)
    model.unet.train()
    extra = torch.nn.Linear(4, 4)
    layer = model.unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    handle = layer.register_forward_hook(lambda m, i, o: o + 0 * extra.weight.sum())
    cond = model.encode_text(["shimakaze (azur lane)"], clip_skip=2, max_token_length=75)
    latents = torch.randn(1, 4, 8, 8)
    out = model.predict(latents, torch.tensor([500]), cond)
    out.mean().backward()
    del handle  # deliberately not removed: the bridge must clean up after a careless run


class Boom(RuntimeError):
    pass


class _StopAfterFirstStep(TrainHooks):
    """The user presses Cancel once the run has taken a step."""

    def __init__(self):
        self.steps = 0

    def on_progress(self, progress):
        self.steps = progress.step

    def should_stop(self) -> bool:
        return self.steps >= 1


def _break_predict_after_one_step(model, path):
    """From the second UNet call on, the run diverges (NaN) or raises what `path` names."""
    genuine, calls = model.predict, []
    failure = {"exception": Boom("broken dataset"), "keyboard_interrupt": KeyboardInterrupt(),
               "oom": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")}.get(path)

    def predict(*args):
        calls.append(1)
        out = genuine(*args)
        if len(calls) < 2:
            return out
        if path == "nan":
            return out * float("nan")
        raise failure
    model.predict = predict


# how each end path ends: stopped_reason of the trainer's result, or the exception out of the session
END_PATHS = {"success": "", "cancel": "cancelled", "nan": "nan", "exception": Boom, "oom": torch.OutOfMemoryError,
             "keyboard_interrupt": KeyboardInterrupt}


def _run_config(tmp_path) -> TrainConfig:
    cfg = fast_config(write_dataset(tmp_path / "data", "1_thing", n_images=2), tmp_path / "out", epochs=2,
                      batch_size=1)
    cfg.model.clip_skip = 2
    cfg.output.save_state = False
    return cfg


@pytest.fixture(scope="module")
def baseline(webui):
    """Image and fingerprint of the untouched model, taken once for all end paths."""
    sd_model = load_family(webui, "sd1")
    webui.networks.loaded_networks.clear()
    return _generate(webui), fingerprint(sd_model)


@pytest.mark.parametrize("path", list(END_PATHS))
def test_every_end_path_restores_model_and_generation(baseline, fresh_state, path, tmp_path):
    """A real run inside the session ends each way a run ends: finished, cancelled by the user, NaN
    loss (the trainer returns its stopped_reason), or an exception, out of memory or Ctrl+C out of a
    step; after a careless extra step first. Each time the model comes back bit for bit."""
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    opts = webui.shared.opts
    image_before, print_before = baseline
    clip_skip_before, gc_calls = opts.CLIP_stop_at_last_layers, webui.devices.torch_gc_calls
    cfg, ends = _run_config(tmp_path), END_PATHS[path]
    raises = pytest.raises(ends) if isinstance(ends, type) else _no_raise()
    with raises:
        with training_session(sd_model, opts, cfg) as model:
            assert opts.CLIP_stop_at_last_layers == 2 and webui.sd_hijack.current_optimizer is None
            _lora_like_step(model)
            if path not in ("success", "cancel"):
                _break_predict_after_one_step(model, path)
            result = train(cfg, model, [_StopAfterFirstStep()] if path == "cancel" else [])
    if not isinstance(ends, type):
        assert result.stopped_reason == ends
        assert result.steps == (4 if path == "success" else 1)
    assert differences(print_before, fingerprint(sd_model)) == []
    assert opts.CLIP_stop_at_last_layers == clip_skip_before
    assert webui.sd_hijack.current_optimizer == "sdp"
    assert webui.devices.torch_gc_calls > gc_calls
    assert _generate(webui) == image_before


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_merged_builtin_lora_is_cleared_and_regenerates_identically(fresh_state):
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    layer = sd_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    base = layer.weight.detach().clone()
    from tests.webui.test_stub import _write_lora
    _write_lora(webui, "merged", layer.weight.shape)
    with_lora = _generate(webui, "a cat <lora:merged:1>")
    assert not torch.equal(layer.weight, base) and webui.networks.loaded_networks
    with training_session(sd_model, webui.shared.opts, TrainConfig()):
        assert torch.equal(layer.weight, base)              # trains on the real weights
        assert webui.networks.loaded_networks == []
    assert _generate(webui, "a cat <lora:merged:1>") == with_lora


@pytest.mark.parametrize("family, flag", [("sd1", "lowvram"), ("sd1", "medvram"), ("sdxl", "medvram_sdxl")])
def test_low_vram_modes_are_refused_with_what_to_do_and_the_model_untouched(fresh_state, family, flag):
    webui = fresh_state
    sd_model = load_family(webui, family)
    opts = webui.shared.opts
    from tests.webui.test_stub import _write_lora
    layer = (sd_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q if family == "sd1"
             else None)
    if layer is not None:    # a LoRA the WebUI merged stays merged: the refusal comes before any change
        _write_lora(webui, "kept", layer.weight.shape)
        _generate(webui, "a cat <lora:kept:1>")
        assert webui.networks.loaded_networks
    before, loaded = fingerprint(sd_model), list(webui.networks.loaded_networks)
    clip_skip, optimizer = opts.CLIP_stop_at_last_layers, webui.sd_hijack.current_optimizer
    cfg = TrainConfig()
    cfg.model.clip_skip = clip_skip + 1
    setattr(webui.shared.cmd_opts, flag, True)
    try:
        with pytest.raises(ModelError) as err:
            with training_session(sd_model, opts, cfg):
                pass
    finally:
        setattr(webui.shared.cmd_opts, flag, False)
    text, shown = str(err.value), "--" + flag.replace("_", "-")
    assert f"Restart the WebUI without {shown} (remove it from COMMANDLINE_ARGS" in text
    checkpoint = sd_model.sd_checkpoint_info.filename
    assert f'python -m lib_lora train --config <that preset\'s .toml> --set "model.pretrained={checkpoint}"' in text
    assert differences(before, fingerprint(sd_model)) == [] and webui.networks.loaded_networks == loaded
    assert (opts.CLIP_stop_at_last_layers, webui.sd_hijack.current_optimizer) == (clip_skip, optimizer)


def test_medvram_sdxl_does_not_refuse_sd1(fresh_state):
    """--medvram-sdxl only changes how the WebUI runs SDXL models: an SD1 model is whole on the GPU."""
    webui = fresh_state
    webui.shared.cmd_opts.medvram_sdxl = True
    try:
        with training_session(load_family(webui, "sd1"), webui.shared.opts, TrainConfig()) as model:
            assert model.family == "sd1"
    finally:
        webui.shared.cmd_opts.medvram_sdxl = False


def test_fp8_is_refused(fresh_state):
    webui = fresh_state
    webui.devices.fp8 = True
    try:
        with pytest.raises(ModelError, match="FP8 weight to Disable.*python -m lib_lora train"):
            with training_session(load_family(webui, "sd1"), webui.shared.opts, TrainConfig()):
                pass
    finally:
        webui.devices.fp8 = False


def test_no_model_is_refused(fresh_state):
    with pytest.raises(ModelError, match="No checkpoint is loaded"):
        with training_session(None, fresh_state.shared.opts, TrainConfig()):
            pass


def test_conditioning_type(fresh_state):
    with training_session(load_family(fresh_state, "sd1"), fresh_state.shared.opts, TrainConfig()) as model:
        assert isinstance(model.encode_text(["x"], 1, 75), Conditioning)


def _offload_config(train_dir: str) -> TrainConfig:
    cfg = TrainConfig()
    d, n, t, o = cfg.dataset, cfg.network, cfg.training, cfg.output
    d.train_dir, d.resolution, d.enable_bucket, d.shuffle_caption = train_dir, 64, False, False
    n.dim, n.alpha, n.train_text_encoder = 4, 4.0, False
    t.epochs, t.batch_size, t.optimizer, t.mixed_precision = 2, 1, "AdamW", "no"
    t.offload_after_caching, t.cache_text_encoder_outputs = True, True
    o.output_name, o.save_state, o.tensorboard = "offcat", False, False
    cfg.sample.every_n_epochs = 1
    return cfg


@pytest.mark.parametrize("family, moves", [("sd1", "real"), ("sdxl", "watched")])
def test_run_with_offload_after_caching_gives_the_model_back(fresh_state, monkeypatch, family, moves):
    """A run that offloads the VAE and the cached text encoders: the ldm path never calls them during
    the steps, the WebUI's own sampler gets them back, and the model comes back bit for bit. On this
    CPU-only machine a real move is a no-op ('real'); 'watched' puts a recorder in place of the move."""
    from lib_lora import train_job
    from lib_lora.training import offload
    from tests.webui.test_pause import new_jobs, start
    from tests.webui.test_jobs_api import _dataset
    webui = fresh_state
    sd_model = load_family(webui, family)
    before, image_before = fingerprint(sd_model), _generate(webui)
    parts = {"vae": sd_model.first_stage_model,
             "text_encoder": sd_model.conditioner if family == "sdxl" else sd_model.cond_stage_model}
    ids = {kind: {id(t) for t in [*m.parameters(), *m.buffers()]} for kind, m in parts.items()}
    away, used_while_away, away_when_sampling = set(), [], []
    if moves == "watched":
        monkeypatch.setattr(offload, "OFFLOAD_DEVICE", "meta")
        monkeypatch.setattr(offload, "_move", lambda module, kind, name, device: (
            away.add if device.type == "meta" else away.discard)(id(getattr(module, kind)[name])))
    handles = [m.register_forward_pre_hook(lambda mod, args, kind=kind: used_while_away.append(kind)
                                           if away & ids[kind] else None) for kind, m in parts.items()]

    def make_sampler(model):
        def sampler(network, sample_cfg, epoch):
            away_when_sampling.append(len(away))
            return [_generate(webui, "zkcat")]
        return sampler

    try:
        monkeypatch.setattr(train_job, "_sampler", lambda model, run: make_sampler(model))
        record = start(new_jobs(), _offload_config(_dataset(webui.root)), background=False)
    finally:
        for handle in handles:
            handle.remove()
    assert record.state == "finished", (record.error, record.log[-3:])
    assert used_while_away == [] and away == set() and away_when_sampling == [0, 0]
    said = "Moved the VAE and the text encoder to the CPU" if moves == "watched" else "Nothing was moved"
    assert any(said in m for m in record.log), record.log
    assert differences(before, fingerprint(sd_model)) == []
    assert _generate(webui) == image_before


def test_only_layers_holding_a_merged_lora_are_counted_as_restored(fresh_state):
    """Backups stay after a LoRA is unloaded; a later run must not report them as merged weights."""
    from lib_lora.webui.model_bridge import clear_builtin_lora
    from tests.webui.test_stub import _write_lora

    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    layer = sd_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    _write_lora(webui, "counted", layer.weight.shape)
    _generate(webui, "a cat <lora:counted:1>")
    assert clear_builtin_lora(sd_model) >= 1
    _generate(webui, "a cat")                    # no LoRA: the backups remain, nothing is merged
    assert clear_builtin_lora(sd_model) == 0


def test_the_webuis_own_low_vram_verdict_decides(fresh_state, monkeypatch):
    """The bridge asks modules.lowvram.is_needed (a fork may widen its rule) instead of reading flags."""
    from modules import lowvram
    monkeypatch.setattr(lowvram, "is_needed", lambda sd_model: True)
    with pytest.raises(ModelError, match="The WebUI runs with a low-VRAM mode"):
        with training_session(load_family(fresh_state, "sd1"), fresh_state.shared.opts, TrainConfig()):
            pass
