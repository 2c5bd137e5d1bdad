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
