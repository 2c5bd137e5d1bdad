"""Import-only torchvision stand-in (see pyproject.toml for why)."""
from torchvision._missing import module_getattr

__version__ = "0.28.0"
__getattr__ = module_getattr(__name__)

from torchvision import datasets, io, models, ops, transforms, utils  # noqa: E402,F401
