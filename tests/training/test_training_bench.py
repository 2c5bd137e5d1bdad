"""`python -m lib_lora bench`: the reference work's plan, and one short real run printing every figure.

No timing is asserted here (the machine is shared); the figures are checked for
presence and sense, the speed goals by running the command itself.
"""
from __future__ import annotations

import argparse

from lib_lora.bench import add_bench_args, make_bench_dataset, run_bench, write_bench_config
from lib_lora.bench.options import options_from_args
from lib_lora.config import load_train_config
from lib_lora.training import train


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_args(parser)
    return parser.parse_args(argv)


def test_default_bench_is_the_reference_work_of_perf_md(tmp_path):
    opts = options_from_args(_args(["--workdir", str(tmp_path)]))
    assert opts.model == "tiny" and opts.px() == 256
    data = make_bench_dataset(tmp_path / "data", opts.images, opts.px(), opts.repeats)
    cfg = load_train_config(write_bench_config(opts, data, tmp_path))
    plan = train(cfg, None, dry_run=True).plan
    assert (plan.n_images, plan.total_steps, plan.buckets) == (20, 200, {"256x256": 20})  # 20 x 10 x 2 / 2
    t, n = cfg.training, cfg.network
    assert (n.dim, n.alpha, n.train_unet, n.train_text_encoder) == (8, 4.0, True, True)
    assert (t.optimizer, t.lr_scheduler, t.mixed_precision, t.sdpa, t.seed) == ("AdamW", "constant", "no", True, 42)
    assert (t.unet_lr, t.text_encoder_lr, cfg.dataset.cache_latents) == (1e-4, 5e-5, "memory")
    again = make_bench_dataset(tmp_path / "data", opts.images, opts.px(), opts.repeats)
    assert again == data and len(list((data / "10_bench").glob("*.png"))) == 20  # made once, reused


def test_short_bench_run_prints_every_figure(tmp_path, capsys):
    argv = ["--workdir", str(tmp_path), "--images", "2", "--resolution", "64", "--repeats", "2", "--epochs", "1",
            "--batch", "1", "--threads", "1"]
    assert run_bench(_args(argv)) == 0
    out = capsys.readouterr().out
    run_line = next(line for line in out.splitlines() if line.startswith("run 1: "))
    for figure in ("steps/s", "samples/s", "peak RSS", "first step", "4 steps in", "cpu, 1 threads"):
        assert figure in run_line, figure
    assert "start-up: " in out and "model built at" in out
    rss = float(run_line.split("peak RSS ")[1].split(" MiB")[0])
    assert 100 < rss < 4000
