"""Run by test_training_ddp.py under `torchrun --nproc_per_node 2`: train, then save this rank's LoRA weights.

Usage: ddp_worker.py CONFIG.toml OUT_DIR. Writes OUT_DIR/rank<r>.pt with the trained
network's tensors (captured as the trainer creates the network) and the losses.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch


def main(config: str, out_dir: str) -> int:
    from lib_lora.config import load_train_config
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1
    from lib_lora.training import distributed as dist
    from lib_lora.training import train, trainer

    assert dist.init_from_env(), "not launched by torchrun"
    networks = []
    create = trainer.create_network
    trainer.create_network = lambda *args: networks.append(create(*args)) or networks[-1]
    result = train(load_train_config(config), DiffusersModel(build_tiny_sd1(seed=0), name="tiny"))
    torch.save({"weights": networks[0].trainable_state(), "losses": result.losses, "steps": result.steps,
                "world": dist.world_size()}, Path(out_dir) / f"rank{dist.rank()}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
