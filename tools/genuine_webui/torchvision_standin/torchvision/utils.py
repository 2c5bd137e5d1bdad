"""make_grid is imported by ldm's ddpm.py (only its image logging calls it)."""
import torch

from torchvision._missing import module_getattr

__getattr__ = module_getattr(__name__)


def make_grid(tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0, **_ignored) -> torch.Tensor:
    if isinstance(tensor, (list, tuple)):
        tensor = torch.stack(list(tensor))
    n, c, h, w = tensor.shape
    cols = min(nrow, n)
    rows = (n + cols - 1) // cols
    step_y, step_x = h + padding, w + padding
    grid = tensor.new_full((c, rows * step_y + padding, cols * step_x + padding), pad_value)
    for i in range(n):
        y, x = divmod(i, cols)
        grid[:, y * step_y + padding:(y + 1) * step_y, x * step_x + padding:(x + 1) * step_x] = tensor[i]
    return grid
