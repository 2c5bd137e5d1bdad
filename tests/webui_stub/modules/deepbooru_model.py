"""Stand-in of modules/deepbooru_model.py: `DeepDanbooruModel` (a torch module with a `tags` list).

The real one is a ResNet over 512x512 NHWC images in [0, 1]. This one scores a
few tags from the image's colours, so captions depend on the picture, and it
remembers where it was last asked to live (`placed_on`), so tests can see the
model go to the GPU for a run and back to the CPU afterwards.
"""
from __future__ import annotations

import torch


class PlacedModule(torch.nn.Module):
    """A module that records the device of its last `.to(device, ...)` call (stand-in only)."""

    placed_on = torch.device("cpu")

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (str, torch.device)):
            self.placed_on = torch.device(target)
        return super().to(*args, **kwargs)


class DeepDanbooruModel(PlacedModule):
    def __init__(self):
        super().__init__()
        self.tags = ["rating:safe", "1girl", "red_theme", "green_theme", "blue_theme", "smile_(happy)",
                     "absurdres", "simple_background"]
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls_on: list[torch.device] = []

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return super().load_state_dict(state_dict, strict=strict)

    def forward(self, x):
        self.calls_on.append(self.placed_on)
        mean = x.mean(dim=(1, 2)) * self.scale                      # (N, 3) channel means in [0, 1]
        spread = x.std(dim=(1, 2)).mean(dim=1, keepdim=True)
        fixed = torch.tensor([[0.95, 0.9]]).expand(x.shape[0], 2)
        extra = torch.tensor([[0.6, 0.8]]).expand(x.shape[0], 2)
        return torch.cat([fixed, mean, extra, 1 - spread], dim=1)
