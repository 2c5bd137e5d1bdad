"""Networks: LoRA/LoCon/LoHa/LoKr (+ DoRA) modules, attach/detach, sd-scripts keys, file IO.

Public surface used by the trainer, ops and the CLI:
    create_network(targets, cfg) -> LoraNetwork
    save_network_file(path, tensors, metadata, precision) / load_network_file(path)
    build_metadata(...)
    ALGORITHMS: algo name -> module class (locon is LoRA on the conv layers too; registry.py)
Key-name functions live in networks.keys (e.g. checkpoint_param_to_lora_key).
Nothing here imports the WebUI.
"""
from __future__ import annotations

from .base import NetworkModule
from .lokr import LokrModule
from .loha import LohaModule
from .lora import LoraModule
from .metadata import build_metadata
from .network import LoraNetwork, create_network
from .network_file import load_network_file, save_network_file
from .registry import ALGORITHMS

__all__ = ["ALGORITHMS", "NetworkModule", "LoraModule", "LohaModule", "LokrModule", "LoraNetwork",
           "create_network", "save_network_file", "load_network_file", "build_metadata"]
