"""Every optimizer and schedule runs in the real loop with a finite loss; the schedules have the right shape."""
from __future__ import annotations

import math

import pytest

from lib_lora.config import OPTIMIZERS, SCHEDULERS
from lib_lora.training import train
from lib_lora.training.optim import lr_factor, warmup_steps

from training_fixtures import fast_config

OPTIMIZER_LR = {"Prodigy": 1.0, "DAdaptAdam": 1.0}  # adaptive optimizers take lr 1 (domain.md)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_trains_a_few_steps(tiny_model, dataset, tmp_path, name):
    lr = OPTIMIZER_LR.get(name, 1e-3)
    te_lr = lr if name in OPTIMIZER_LR else lr / 2
    cfg = fast_config(dataset, tmp_path / "out", optimizer=name, unet_lr=lr, text_encoder_lr=te_lr)
    result = train(cfg, tiny_model)
    assert result.steps == 4 and result.stopped_reason == ""
    assert all(math.isfinite(x) for x in result.losses)
    assert result.files and (tmp_path / "out" / "t-000001.safetensors").is_file()
    from lib_lora.networks import load_network_file

    tensors, _ = load_network_file(result.files[-1])
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert any(float(u.abs().max()) > 0 for u in ups), f"{name} left every lora_up at its zero init"


def test_adaptive_optimizer_with_two_learning_rates_is_refused_before_training(tiny_model, dataset, tmp_path):
    from lib_lora.errors import ConfigError

    cfg = fast_config(dataset, tmp_path / "out", optimizer="Prodigy", unet_lr=1.0, text_encoder_lr=0.5)
    with pytest.raises(ConfigError, match="training.text_encoder_lr.*same value as training.unet_lr"):
        train(cfg, tiny_model)
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_schedule_free_saves_the_averaged_weights(tiny_model, dataset, tmp_path, monkeypatch):
    """Schedule-free AdamW must be in eval mode (averaged weights) while the file is written."""
    from lib_lora.training.run import Run

    modes = []
    original = Run.write_file

    def spy(self, path):
        modes.append(self.optimizer.param_groups[0]["train_mode"])
        return original(self, path)

    monkeypatch.setattr(Run, "write_file", spy)
    cfg = fast_config(dataset, tmp_path / "out", optimizer="AdamWScheduleFree", epochs=2)
    result = train(cfg, tiny_model)
    assert modes == [False, False] and result.steps == 8


@pytest.mark.parametrize("schedule", SCHEDULERS)
def test_schedule_runs_in_the_loop(tiny_model, dataset, tmp_path, schedule):
    cfg = fast_config(dataset, tmp_path / "out", lr_scheduler=schedule, lr_warmup=0.5, epochs=2)
    result = train(cfg, tiny_model)
    assert result.steps == 8 and all(math.isfinite(x) for x in result.losses)
    factors = [lr / 1e-3 for lr in result.lrs]  # lr after each step: the schedule at steps 1..8
    assert factors == pytest.approx(HAND_SCHEDULES[schedule], rel=1e-6, abs=1e-12)


# By hand: 8 steps, warmup 0.5 * 8 = 4 steps: factor (s + 1) / 4 at steps 1..3, then progress
# p = (s - 4) / 4 at steps 4..8. Linear and polynomial (power 1): 1 - p. Cosine, and cosine with one
# restart cycle: (1 + cos(pi * p)) / 2. Plain constant ignores the warmup.
HAND_WARMUP = [2 / 4, 3 / 4, 4 / 4]
HAND_SCHEDULES = {
    "constant": [1.0] * 8,
    "constant_with_warmup": HAND_WARMUP + [1.0] * 5,
    "linear": HAND_WARMUP + [1.0, 0.75, 0.5, 0.25, 0.0],
    "polynomial": HAND_WARMUP + [1.0, 0.75, 0.5, 0.25, 0.0],
    "cosine": HAND_WARMUP + [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0],
    "cosine_with_restarts": HAND_WARMUP + [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0],
}


def test_schedule_shapes():
    assert warmup_steps(0.1, 200) == 20 and warmup_steps(30, 200) == 30  # ratio below 1, else steps
    assert [lr_factor("constant_with_warmup", s, 100, 4) for s in (0, 3, 4, 99)] == [0.25, 1.0, 1.0, 1.0]
    assert lr_factor("linear", 50, 100, 0) == pytest.approx(0.5)
    assert lr_factor("cosine", 50, 100, 0) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100, 0) == pytest.approx(0.0)
    # two cycles: back to the top halfway, and at the quarter points halfway down
    assert lr_factor("cosine_with_restarts", 50, 100, 0, cycles=2) == pytest.approx(1.0)
    assert lr_factor("cosine_with_restarts", 25, 100, 0, cycles=2) == pytest.approx(0.5)
    assert lr_factor("polynomial", 50, 100, 0, power=2.0) == pytest.approx(0.25)
    assert lr_factor("constant", 0, 100, 50) == 1.0  # plain constant ignores warmup, like diffusers
