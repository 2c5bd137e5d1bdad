"""Resume: 4 epochs straight equal 2 epochs + resume for 2 (counters, LR trace, weights, file names)."""
from __future__ import annotations

import pytest
import torch

from lib_lora.networks import load_network_file
from lib_lora.training import TrainHooks, train

from training_fixtures import fast_config


def _cfg(dataset, out, epochs):
    cfg = fast_config(dataset, out, epochs=epochs, lr_scheduler="cosine", lr_warmup=2.0)
    cfg.dataset.shuffle_caption, cfg.dataset.flip_aug = True, True  # exercise the seeded draws too
    return cfg


class StopAfterEpoch(TrainHooks):
    def __init__(self, epoch: int):
        self.epoch, self.done = epoch, False

    def on_epoch_end(self, result) -> None:
        self.done = result.epoch >= self.epoch

    def should_stop(self) -> bool:
        return self.done


def test_resumed_run_equals_the_uninterrupted_one(tiny_model, dataset, tmp_path):
    straight = train(_cfg(dataset, tmp_path / "straight", 4), tiny_model)
    first = train(_cfg(dataset, tmp_path / "split", 4), tiny_model, [StopAfterEpoch(2)])
    assert first.stopped_reason == "cancelled"
    second = train(_cfg(dataset, tmp_path / "split", 4), tiny_model, resume_dir=tmp_path / "split")

    assert straight.steps == 16 and (first.steps, second.steps) == (8, 16)
    assert (second.epochs_done, straight.epochs_done) == (4, 4)
    assert [p.split("/")[-1] for p in second.files] == ["t-000003.safetensors", "t-000004.safetensors"]
    assert second.lrs == pytest.approx(straight.lrs[8:], rel=1e-6)
    assert second.losses == pytest.approx(straight.losses[8:], rel=1e-4, abs=1e-6)
    a, meta = load_network_file(tmp_path / "straight" / "t-000004.safetensors")
    b, meta_b = load_network_file(tmp_path / "split" / "t-000004.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k].float(), a[k].float(), atol=2e-3, rtol=1e-2)
    assert meta_b["ss_epoch"] == "4" and meta_b["ss_steps"] == "16"


def test_more_epochs_continue_counters_schedule_and_names(tiny_model, dataset, tmp_path):
    out = tmp_path / "run"
    train(fast_config(dataset, out, epochs=2, lr_scheduler="linear", lr_warmup=0.0), tiny_model)
    longer = fast_config(dataset, out, epochs=3, lr_scheduler="linear", lr_warmup=0.0)
    more = train(longer, tiny_model, resume_dir=out)
    assert more.steps == 12 and more.epochs_done == 3
    assert [p.split("/")[-1] for p in more.files] == ["t-000003.safetensors"]
    # the LR follows the new 12-step schedule from step 9 on, not the old 8-step one (which would be 0)
    assert more.lrs == pytest.approx([1e-3 * (1 - s / 12) for s in range(9, 13)], rel=1e-6)
    assert sorted(p.name for p in out.glob("t-*.safetensors")) == [f"t-00000{i}.safetensors" for i in (1, 2, 3)]


def test_resume_without_state_says_what_to_do(tiny_model, dataset, tmp_path):
    from lib_lora.errors import LoraError

    with pytest.raises(LoraError, match="no saved training state"):
        train(fast_config(dataset, tmp_path / "x"), tiny_model, resume_dir=tmp_path / "nowhere")


class StopAtStep(TrainHooks):
    """Ctrl-C / Cancel inside an epoch: the stop flag rises after `step` optimizer steps."""

    def __init__(self, step: int):
        self.step, self.seen = step, 0

    def on_progress(self, progress) -> None:
        self.seen = progress.step

    def should_stop(self) -> bool:
        return self.seen >= self.step


class SaveNowAt(TrainHooks):
    def __init__(self, step: int):
        self.step, self.seen, self.asked = step, 0, False

    def on_progress(self, progress) -> None:
        self.seen = progress.step

    def save_requested(self) -> bool:
        if self.seen == self.step and not self.asked:
            self.asked = True
            return True
        return False


def _assert_same_final_weights(straight_dir, split_dir):
    a, _ = load_network_file(straight_dir / "t-000004.safetensors")
    b, meta_b = load_network_file(split_dir / "t-000004.safetensors")
    for k in a:
        torch.testing.assert_close(b[k].float(), a[k].float(), atol=2e-3, rtol=1e-2)
    return meta_b


def test_a_stop_inside_an_epoch_resumes_from_that_very_step(tiny_model, dataset, tmp_path):
    straight = train(_cfg(dataset, tmp_path / "straight", 4), tiny_model)
    first = train(_cfg(dataset, tmp_path / "split", 4), tiny_model, [StopAtStep(6)])  # 4 steps per epoch
    assert first.stopped_reason == "cancelled" and first.steps == 6 and first.epochs_done == 1
    second = train(_cfg(dataset, tmp_path / "split", 4), tiny_model, resume_dir=tmp_path / "split")

    assert second.steps == 16 and second.epochs_done == 4
    assert second.lrs == pytest.approx(straight.lrs[6:], rel=1e-6)
    assert second.losses == pytest.approx(straight.losses[6:], rel=1e-4, abs=1e-6)
    assert [p.split("/")[-1] for p in second.files][0] == "t-000002.safetensors"
    meta = _assert_same_final_weights(tmp_path / "straight", tmp_path / "split")
    assert meta["ss_steps"] == "16"


def test_save_now_inside_an_epoch_is_a_resume_point(tiny_model, dataset, tmp_path):
    straight = train(_cfg(dataset, tmp_path / "straight", 4), tiny_model)
    out = tmp_path / "split"
    first = train(_cfg(dataset, out, 4), tiny_model, [SaveNowAt(10), StopAtStep(10)])
    assert first.steps == 10 and (out / "t-step00000010.safetensors").exists()
    second = train(_cfg(dataset, out, 4), tiny_model, resume_dir=out)
    assert second.losses == pytest.approx(straight.losses[10:], rel=1e-4, abs=1e-6)
    _assert_same_final_weights(tmp_path / "straight", out)
