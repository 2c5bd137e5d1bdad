"""Data parallel: two gloo processes (torchrun) end with identical weights that match one process.

reference/deps.md item 9: `accelerate launch --cpu` silently runs ONE process, so
the test uses torchrun, as a multi-GPU user would (`accelerate launch --multi_gpu`
sets the same environment).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib_lora.config import dumps_train_config
from lib_lora.training import train

from training_fixtures import fast_config, write_dataset

HERE = Path(__file__).parent


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    if shutil.which("torchrun"):
        return ["torchrun"]
    pytest.skip("torchrun is not installed")


def test_two_processes_match_one_process_at_the_same_global_batch(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "data", n_images=4, seed=3)
    cfg = fast_config(data, tmp_path / "ddp", epochs=2, batch_size=4)  # global batch 4: 2 rows per rank
    cfg.dataset.shuffle_caption, cfg.dataset.flip_aug = True, True
    (tmp_path / "run.toml").write_text(dumps_train_config(cfg), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    command = _torchrun() + ["--standalone", "--nproc_per_node", "2", str(HERE / "ddp_worker.py"),
                             str(tmp_path / "run.toml"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["world"] == 2 and rank0["steps"] == rank1["steps"] == 4
    for key, value in rank0["weights"].items():
        assert torch.equal(value, rank1["weights"][key]), key  # identical optimizer steps on both ranks

    single_cfg = fast_config(data, tmp_path / "single", epochs=2, batch_size=4)
    single_cfg.dataset.shuffle_caption, single_cfg.dataset.flip_aug = True, True
    from lib_lora.training import trainer

    networks = []
    create = trainer.create_network
    try:
        trainer.create_network = lambda *args: networks.append(create(*args)) or networks[-1]
        single = train(single_cfg, tiny_model)
    finally:
        trainer.create_network = create
    assert single.steps == 4
    assert rank0["losses"] == pytest.approx(single.losses, rel=1e-4)  # mean over ranks = the global-batch loss
    # Adam divides by the gradient's running size, so an element whose gradient is rounding noise
    # can move by a fraction of the LR (1e-3) either way: allow a tenth of one step per element,
    # and require the weights as a whole to agree far more closely.
    moved, total_diff, total = 0, 0.0, 0
    for key, value in networks[0].trainable_state().items():
        torch.testing.assert_close(rank0["weights"][key], value, rtol=1e-3, atol=1e-4, msg=key)
        total_diff += float((rank0["weights"][key] - value).abs().sum())
        total += value.numel()
        moved += key.endswith("lora_up.weight") and float(value.abs().max()) > 0
    assert moved > 10 and total_diff / total < 1e-7
