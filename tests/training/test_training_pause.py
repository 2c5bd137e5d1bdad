"""A pause at a step boundary, whoever hosts it, continues the run exactly: with the default gate
(waiting in place) and with a gate that takes the model back for the pause (as the WebUI's does) and
uses it meanwhile, reseeding the global RNG as a generation would, the losses, learning rates and
saved weights equal an uninterrupted run's bit for bit."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lib_lora.training import train
from lib_lora.training.hooks import PauseGate, TrainHooks
from training_fixtures import fast_config

PAUSE_AT = 3


class PauseOnce(TrainHooks):
    """Asks for a pause after step PAUSE_AT; with resume_when_paused, the user resumes as soon as the
    run says it paused."""

    def __init__(self, resume_when_paused: bool = False):
        self.pausing, self.resume_when_paused = False, resume_when_paused

    def on_progress(self, p):
        self.pausing = self.pausing or p.step == PAUSE_AT

    def on_status(self, text):
        if self.resume_when_paused and text.startswith("Paused after"):
            self.pausing = False

    def should_pause(self):
        return self.pausing


class UsesTheModelMeanwhile(PauseGate):
    """Takes the model for the pause: it must come without the run's network in it."""
    releases_model = True

    def __init__(self, model, hooks: PauseOnce):
        super().__init__()
        self.model, self.hooks, self.layers_with_own_forward = model, hooks, None

    def hold(self, point):
        self.layers_with_own_forward = [n for n, m in self.model.unet.named_modules() if "forward" in m.__dict__]
        torch.manual_seed(12345)            # a generation reseeds the global RNG
        with torch.no_grad():
            self.model.unet.conv_in(torch.randn(1, 4, 8, 8))
        self.hooks.pausing = False          # the user resumes
        return True


def _config(dataset, out):
    cfg = fast_config(dataset, out, epochs=2, lr_scheduler="cosine", lr_warmup=0.25)
    cfg.network.dropout = 0.2               # draws from the global RNG every step
    cfg.output.save_precision = "fp32"
    return cfg


@pytest.mark.parametrize("gate_kind", ["waits in place", "takes the model"])
def test_a_paused_run_equals_the_uninterrupted_one(tiny_model, dataset, tmp_path, gate_kind):
    straight = train(_config(dataset, tmp_path / "straight"), tiny_model)
    hooks = PauseOnce(resume_when_paused=gate_kind == "waits in place")
    gate = UsesTheModelMeanwhile(tiny_model, hooks) if gate_kind == "takes the model" else PauseGate()
    paused = train(_config(dataset, tmp_path / "paused"), tiny_model, [hooks], pause_gate=gate)
    assert paused.stopped_reason == "" and straight.steps == paused.steps > PAUSE_AT
    assert paused.losses == straight.losses and paused.lrs == straight.lrs
    a, b = (load_file(tmp_path / d / "t-000002.safetensors") for d in ("straight", "paused"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if gate_kind == "takes the model":
        assert gate.layers_with_own_forward == []


def _cached_on_device(run) -> list:
    """The tensors a paused run must not leave on the device besides the network and optimizer: the
    text-encoder output cache and the EMA copy."""
    held = [t for c in run.te_cache._store.values() for t in (c.context, c.vector, *c.extra.values())
            if t is not None]
    return held + (list(run.ema.shadow.values()) if run.ema else [])


def test_the_pause_parks_the_text_encoder_cache_and_the_ema_too(tiny_model, dataset, tmp_path, monkeypatch):
    """On the CPU nothing would move, so the pause parks on a device that compares unequal to the
    tensors' own ('cpu:0'): every tensor it parks is copied, which shows what it moved; resuming must
    still continue the run bit for bit."""
    from lib_lora.training import pause

    def config(out):
        cfg = _config(dataset, out)
        cfg.network.train_text_encoder = False
        cfg.training.cache_text_encoder_outputs, cfg.training.ema = True, True
        return cfg

    straight = train(config(tmp_path / "straight"), tiny_model)
    seen: dict = {}
    give_back = pause.give_model_back

    def spying(run):
        seen["before"] = _cached_on_device(run)
        parked = give_back(run)
        seen["during"] = _cached_on_device(run)
        return parked

    monkeypatch.setattr(pause, "PARK_DEVICE", torch.device("cpu", 0))
    monkeypatch.setattr(pause, "give_model_back", spying)
    hooks = PauseOnce()
    gate = UsesTheModelMeanwhile(tiny_model, hooks)
    paused = train(config(tmp_path / "paused"), tiny_model, [hooks], pause_gate=gate)
    before, during = seen["before"], seen["during"]
    assert len(before) == len(during) > 0
    assert not any(a is b for a, b in zip(before, during))
    assert paused.losses == straight.losses
    a, b = (load_file(tmp_path / d / "t-000002.safetensors") for d in ("straight", "paused"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
