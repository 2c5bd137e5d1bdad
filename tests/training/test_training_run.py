"""A run's behaviour around the step: plan, regularization, validation, NaN, saving, EMA, logs, hooks."""
from __future__ import annotations

import math

import pytest
import torch

from lib_lora.networks import load_network_file
from lib_lora.training import TrainHooks, train

from training_fixtures import fast_config, unet_weights, write_dataset


def test_dry_run_returns_the_plan_without_touching_the_model(dataset, tmp_path):
    cfg = fast_config(dataset, tmp_path / "out", epochs=3, batch_size=2)
    statuses = []
    hooks = type("H", (TrainHooks,), {"on_status": lambda self, text: statuses.append(text)})()
    result = train(cfg, None, [hooks], dry_run=True)
    plan = result.plan
    assert (plan.n_images, plan.epochs, plan.steps_per_epoch, plan.total_steps) == (4, 3, 4, 12)  # 4 x 2 x 3 / 2
    assert "4 images" in statuses[0] and "= 12 steps" in statuses[0] and "64x64: 4" in statuses[0]
    assert not (tmp_path / "out").exists() and result.steps == 0


def test_a_plan_made_before_is_the_runs_plan_and_options_are_checked_once(tiny_model, dataset, tmp_path,
                                                                          monkeypatch):
    """The WebUI plans for its memory check first; train() then runs that plan instead of scanning again."""
    from lib_lora import options
    from lib_lora.training import plan_run, trainer

    cfg = fast_config(dataset, tmp_path / "out")
    plan = plan_run(cfg, tiny_model)
    checks = []
    validate = options.validate
    monkeypatch.setattr(options, "validate", lambda c, prefix="": (checks.append(c) if not prefix else None,
                                                                   validate(c, prefix))[1])
    monkeypatch.setattr(trainer, "make_plan", lambda *a: pytest.fail("the run planned again"))
    seen = []
    hooks = type("H", (TrainHooks,), {"on_plan": lambda self, p: seen.append(p)})()
    result = train(cfg, tiny_model, hooks, plan=plan)
    assert result.plan is plan and seen == [plan] and result.steps == plan.total_steps == 4
    assert checks == [cfg]


def test_regularization_images_double_the_steps_and_carry_the_prior_weight(tiny_model, dataset, tmp_path,
                                                                          monkeypatch):
    from lib_lora.training import run as run_module

    reg = write_dataset(tmp_path / "reg", "1_person", n_images=2, caption="person", seed=5)
    cfg = fast_config(dataset, tmp_path / "out")
    cfg.dataset.reg_dir, cfg.dataset.prior_loss_weight = str(reg), 0.25
    scales = []
    original = run_module.compute_loss

    def spy(model, cfg, inputs, *args):
        scales.extend(inputs.loss_scale.tolist())
        return original(model, cfg, inputs, *args)

    monkeypatch.setattr(run_module, "compute_loss", spy)
    result = train(cfg, tiny_model)
    assert len(result.plan.reg) == 2 and result.steps == 8  # 8 training draws + 8 regularization draws
    assert sorted(scales) == [0.25] * 8 + [1.0] * 8


def test_validation_loss_is_deterministic_per_epoch(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "data", n_images=6)
    frozen = fast_config(data, tmp_path / "a", epochs=2, unet_lr=0.0, text_encoder_lr=1e-12)
    frozen.dataset.validation_split = 0.34
    result = train(frozen, tiny_model)
    assert len(result.plan.validation) == 2 and len(result.validation_losses) == 2
    # nothing learned, so fixed noise and timesteps must give exactly the same number each epoch
    assert result.validation_losses[0] == pytest.approx(result.validation_losses[1], rel=1e-6)
    learning = fast_config(data, tmp_path / "b", epochs=2, unet_lr=1e-2)
    learning.dataset.validation_split = 0.34
    assert train(learning, tiny_model).validation_losses[1] != pytest.approx(result.validation_losses[1], rel=1e-6)


class _NanAfter:
    """Wraps the model: predictions become NaN after `n` calls (a run that diverges)."""

    def __init__(self, model, n):
        self._model, self._left = model, n

    def __getattr__(self, name):
        return getattr(self._model, name)

    def predict(self, *args):
        self._left -= 1
        out = self._model.predict(*args)
        return out if self._left >= 0 else out * float("nan")


def test_nan_loss_stops_clearly_and_keeps_the_last_good_epoch(tiny_model, dataset, tmp_path):
    statuses = []
    hooks = type("H", (TrainHooks,), {"on_status": lambda self, text: statuses.append(text)})()
    before = unet_weights(tiny_model)
    result = train(fast_config(dataset, tmp_path / "out", epochs=3), _NanAfter(tiny_model, 6), [hooks])
    assert result.stopped_reason == "nan" and result.steps == 6 and result.epochs_done == 1
    assert [p.rsplit("/", 1)[-1] for p in result.files] == ["t-000001.safetensors"]
    assert any("Loss became nan at step 7 (epoch 2)" in s and "lower the learning rate" in s for s in statuses)
    tensors, _ = load_network_file(result.files[0])
    assert all(torch.isfinite(v).all() for v in tensors.values())
    for k, v in unet_weights(tiny_model).items():  # the model comes back untouched
        assert torch.equal(v, before[k]), k


def test_save_every_n_and_keep_last_n(tiny_model, dataset, tmp_path):
    cfg = fast_config(dataset, tmp_path / "out", epochs=5)
    cfg.output.save_every_n_epochs, cfg.output.save_last_n_epochs = 2, 2
    result = train(cfg, tiny_model)
    names = sorted(p.name for p in (tmp_path / "out").glob("t-*.safetensors"))
    assert names == ["t-000004.safetensors", "t-000005.safetensors"]  # 2 pruned; 5 is the last epoch
    assert [p.rsplit("/", 1)[-1] for p in result.files] == names


def test_ema_file_holds_the_averaged_weights(tiny_model, dataset, tmp_path):
    cfg = fast_config(dataset, tmp_path / "ema", epochs=2, ema=True, ema_decay=0.5)
    raw = fast_config(dataset, tmp_path / "raw", epochs=2)
    ema_file, raw_file = train(cfg, tiny_model).files[-1], train(raw, tiny_model).files[-1]
    ema, _ = load_network_file(ema_file)
    plain, _ = load_network_file(raw_file)
    ups = [k for k in ema if k.endswith("lora_up.weight")]
    # same seed and data: the raw run's weights are the EMA run's live weights; the file differs
    assert any(not torch.allclose(ema[k].float(), plain[k].float()) for k in ups)
    assert all(float(ema[k].float().norm()) <= float(plain[k].float().norm()) * 1.01 + 1e-6 for k in ups)


def test_tensorboard_events_hold_loss_lr_and_validation_loss(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_dataset(tmp_path / "data", n_images=5)
    cfg = fast_config(data, tmp_path / "out", epochs=2)
    cfg.output.tensorboard, cfg.dataset.validation_split = True, 0.2
    train(cfg, tiny_model)
    events = EventAccumulator(str(tmp_path / "out" / "logs" / cfg.output.output_name))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "validation_loss", "epoch_loss"} <= tags
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 9))
    assert len(events.Scalars("validation_loss")) == 2


class _Commands(TrainHooks):
    def __init__(self):
        self.progress, self.pauses, self.save_at, self.stop_at = [], 0, 2, 5

    def on_progress(self, p):
        self.progress.append(p)

    def should_pause(self):
        # pause twice at step 3: the loop must wait, not skip
        if len(self.progress) == 3 and self.pauses < 2:
            self.pauses += 1
            return True
        return False

    def save_requested(self):
        return len(self.progress) == self.save_at

    def should_stop(self):
        return len(self.progress) >= self.stop_at


def test_pause_save_now_and_stop_are_honoured(tiny_model, dataset, tmp_path):
    hooks = _Commands()
    result = train(fast_config(dataset, tmp_path / "out", epochs=3), tiny_model, [hooks])
    assert hooks.pauses == 2 and result.stopped_reason == "cancelled" and result.steps == 5
    assert (tmp_path / "out" / "t-step00000002.safetensors").is_file()
    assert [p.step for p in hooks.progress] == [1, 2, 3, 4, 5]
    last = hooks.progress[-1]
    assert (last.total_steps, last.epoch, last.total_epochs) == (12, 2, 3) and math.isfinite(last.loss)
    assert last.it_per_s > 0 and last.lr == pytest.approx(1e-3)
