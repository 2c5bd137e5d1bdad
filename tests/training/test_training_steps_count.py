"""The dataset report's steps are the steps the trainer runs: counted through a hook in a real run
with several buckets, regularization images, a validation share and gradient accumulation."""
from __future__ import annotations

from PIL import Image

from lib_lora.dataset.report import ReportOptions, build_report
from lib_lora.training import TrainHooks, plan_run, train
from training_fixtures import fast_config


class CountSteps(TrainHooks):
    def __init__(self):
        self.steps: list[int] = []

    def on_progress(self, progress) -> None:
        self.steps.append(progress.step)


def _images(folder, sizes):
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (30 * i, 120, 60)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("thing, circle", encoding="utf-8")


def test_report_steps_equal_the_optimizer_steps_a_real_run_takes(tmp_path, tiny_model):
    data, reg = tmp_path / "data", tmp_path / "reg"
    # at 96 px (sides 64..192 in steps of 32) the buckets are 96x96, 128x64 and 64x128
    _images(data / "3_a", [(96, 96)] * 3 + [(128, 64)] * 2)
    _images(data / "2_b", [(64, 128)] * 3)
    _images(reg / "1_reg", [(96, 96), (128, 64), (96, 96)])
    cfg = fast_config(data, tmp_path / "out", epochs=2, batch_size=3, gradient_accumulation_steps=2)
    d = cfg.dataset
    d.resolution, d.min_bucket_reso, d.max_bucket_reso, d.reg_dir, d.validation_split = 96, 64, 192, str(reg), 0.2
    report = build_report(data, ReportOptions.for_run(cfg))
    plan = plan_run(cfg)
    assert len(plan.buckets) == 3 and plan.reg and plan.validation       # the case is the one meant
    counter = CountSteps()
    result = train(cfg, tiny_model, [counter], plan=plan)
    assert result.stopped_reason == ""
    assert counter.steps == list(range(1, report.total_steps + 1)) and result.steps == report.total_steps
    assert report.steps_per_epoch == plan.steps_per_epoch and report.total_steps == 2 * report.steps_per_epoch
