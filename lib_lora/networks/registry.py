"""ALGORITHMS: the algorithm name a config or file uses -> the module class that trains it.

Its own module so that network.py (which builds networks from it) and the package's
public surface (networks/__init__.py, which re-exports it) both import it from below.
"""
from __future__ import annotations

from .base import NetworkModule
from .lokr import LokrModule
from .loha import LohaModule
from .lora import LoraModule

# One line per algorithm. 'locon' is the same module type as 'lora' (sd-scripts writes both as
# networks.lora); it differs only in also selecting the ResNet/sampler convs (network.py).
ALGORITHMS: dict[str, type[NetworkModule]] = {
    "lora": LoraModule,
    "locon": LoraModule,
    "loha": LohaModule,
    "lokr": LokrModule,
}
